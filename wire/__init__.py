"""ferwire: what the edge client and the server share on the wire, torch-free.

    bitstream   the bitstream format (encode, decode, header, BitstreamError)
    entropy     the context-adaptive entropy tables (tables.npz) and their fitting
    card        a model directory's model.json (ModelCard) and the bundled models' location
    edge_bundle the encoder bundle servers hand to edge devices: its files and their SHA-256s
    credentials TLS's PEM files and bearer-token files, read and checked the same way on both sides
    rangecoder  constriction's range encoder in Python, for the client where constriction has no wheel (ARM Linux)

Numpy, zlib and constriction only: importing ferwire never pulls torch or CompressAI.
"""

# Trailing metadata on a Recognize refused for carrying more faces than the server takes in one request (its --max-faces):
# the limit, so a client can split the request and send the parts (protos/fercodec/v1/fercodec.proto, Recognize).
MAX_FACES_METADATA = "fercodec-max-faces"
