"""ferclient: the edge side. Detect faces, encode them with the exported encoder, send.

Never imports torch or CompressAI: ONNX Runtime runs the analysis transform and
ferwire.bitstream (numpy + constriction) entropy-codes it.
"""
