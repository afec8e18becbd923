"""fermodels: the learned face codec, the expression classifier, training, export, evaluation; the bundled weights.

Kept import-light on purpose: ferwire.card imports it to find the bundled
weights (package data of fermodels.weights), and the edge client must not pay
for torch or CompressAI. The bitstream and its tables are ferwire's.
"""

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FACE_SIZE = 48
