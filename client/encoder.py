"""Face crops (48x48 uint8) -> bitstreams, with a model directory's ONNX edge half (analysis transform or expression encoder)."""

from __future__ import annotations

import numpy as np

from ferwire.bitstream import encode
from ferwire.card import ModelCard
from ferwire.entropy import EntropyTables


class FaceEncoder:
    def __init__(self, model_dir: str | None = None, threads: int = 1):
        import onnxruntime as ort

        self.card = ModelCard.load(model_dir)
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
