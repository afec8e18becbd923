"""ferclient: the edge side. Detect faces, encode them with the exported encoder, send.

Never imports torch or CompressAI: ONNX Runtime runs the analysis transform and
ferwire.bitstream (numpy + constriction, or ferwire.rangecoder where constriction has no wheel) entropy-codes it.
"""
