"""ferserver: the gRPC service that decodes, reconstructs and classifies faces."""
