"""ferserver: the gRPC service that decodes, reconstructs and classifies faces."""

import os

# grpc's C core logs each failed TLS handshake (a port scanner, a client without TLS) in lines of its own, in its own
# format, at its default verbosity; read once, when grpc is imported, so set here, before any module of ours imports it.
# An operator's GRPC_VERBOSITY (DEBUG for a bug report) wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def cli() -> int:
    """The ferserver command (fermodels.launch: one line, not a traceback, where the server extra is missing)."""
    from fermodels import launch

    return launch("ferserver.main", "ferserver", "server")
