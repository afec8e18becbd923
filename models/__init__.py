"""fermodels: the learned face codec, the expression classifier, the bitstream.

Kept import-light on purpose: the edge client imports `fermodels.bitstream`
and `fermodels.assets` without paying for torch or CompressAI.
"""

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FACE_SIZE = 48
