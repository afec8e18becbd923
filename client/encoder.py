"""Face crops (48x48 uint8) -> bitstreams, with a model directory's ONNX edge half (analysis transform or expression encoder).

The model is a directory, the name of a bundled one (fercodec-v1, fercodec-v1-expr), or the id of one
pulled from a server into the cache (ferclient.models; verified again before it is loaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferwire.bitstream import encode
from ferwire.card import DEFAULT_MODEL_DIR, WEIGHTS, ModelCard, bundled_names, valid_model_id
from ferwire.entropy import EntropyTables


def resolve(model: str | Path | None) -> str | Path:
    """A directory for ModelCard.load: model (default fercodec-v1) as it is, unless it is the id of a bundled or pulled model.

    Not $FERCODEC_MODEL_DIR, as ModelCard.load's default: that is ferserver's setting (a list of directories), and a
    host that exported it for its server broke every send or switched the client's codec without a word. ferclient's
    own variable is FERCODEC_MODEL, read by its --model flag."""
    from . import models

    if not model:
        return DEFAULT_MODEL_DIR
    p = Path(model)
    if p.exists() or len(p.parts) != 1 or (WEIGHTS / p).is_dir() or not valid_model_id(str(model)):
        return model
    for name in bundled_names():  # a bundled model by its id (fercodec-v1-aa8f: what --json and `ferclient info` show)
        if ModelCard.load(name).model_id == model:
            return WEIGHTS / name
    found = models.cached(str(model))  # BundleError (a ValueError) when the cached copy fails verification
    if found is None:
        bundled = ", ".join(bundled_names())
        raise FileNotFoundError(f"no model {model!r}: not a model directory, a bundled model ({bundled}) or a model pulled into "
                                f"{models.cache_dir()}; `ferclient models pull {model}` fetches it from the server")
    return found


class FaceEncoder:
    def __init__(self, model_dir: str | None = None, threads: int = 1):
        import onnxruntime as ort

        self.card = ModelCard.load(resolve(model_dir))
        self.tables = EntropyTables.load(self.card.file("tables.npz"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.card.file("encoder.onnx")), opts, providers=["CPUExecutionProvider"])

    def check_quality(self, quality: int | None) -> int:
        q = self.card.default_quality if quality is None else quality
        if not 0 <= q < self.card.num_qualities:
            raise ValueError(f"quality {q} out of range: model {self.card.model_id} has qualities 0..{self.card.num_qualities - 1}")
        return q

    def latents(self, faces: np.ndarray) -> np.ndarray:
        """uint8 [N,48,48] -> latent [N,M,6,6] float32."""
        x = (faces.astype(np.float32) / 255.0)[:, None]
        return self.session.run(None, {"face": x})[0]

    def encode(self, faces: np.ndarray, quality: int | None = None) -> list[bytes]:
        q = self.check_quality(quality)
        h, w = self.card.face_size
        if faces.shape[1:] != (h, w):
            raise ValueError(f"faces must be {h}x{w}, got {faces.shape[1:]}")
        return [encode(y, q, self.tables, self.card.model_tag) for y in self.latents(faces)]
