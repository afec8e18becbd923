"""A shipped model directory: what is in it, and its parsed model.json (ModelCard).

    model.json      id, 16-bit tag, kind, version, face size, qualities, classes, metrics
    codec.pt        FaceCodec config + weights (server: synthesis)             kind "image"
    classifier.pt   FERClassifier config + weights (server: classification)   kind "image"
    expression.pt   ExpressionCodec config + weights (server: its decoder)    kind "expression"
    encoder.onnx    the edge half: analysis transform or expression encoder (edge client, ONNX Runtime)
    tables.npz      gains, medians and context-adaptive integer pmfs (both ends; ferwire.entropy.EntropyTables)

Two kinds share the bitstream and the client: "image" (fercodec-v1: faces
reconstructed, then classified) and "expression" (fercodec-v1-expr: a feature
codec, classified without pixels; fermodels.expression). A server serves
several model directories and picks one by the tag in each bitstream's header.
Loading the torch networks of a directory is fermodels.bundle's job.

Import-light: reading model.json needs neither torch nor CompressAI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import fermodels
import numpy as np

# The bundled models are package data of fermodels.weights (models/weights in the checkout); fermodels'
# __init__ is import-light, so finding it costs no torch, editable install or not.
WEIGHTS = Path(fermodels.__file__).resolve().parent / "weights"
DEFAULT_MODEL_DIR = WEIGHTS / "fercodec-v1"
EXPRESSION_MODEL_DIR = WEIGHTS / "fercodec-v1-expr"
FILES = {
    "image": ("model.json", "codec.pt", "classifier.pt", "encoder.onnx", "tables.npz"),
    "expression": ("model.json", "expression.pt", "encoder.onnx", "tables.npz"),
}


@dataclass(frozen=True)
class ModelCard:
    """The parsed model.json."""

    path: Path
    model_id: str
    model_tag: int
    version: str
    face_size: tuple[int, int]
    class_names: tuple[str, ...]
    lambdas: tuple[float, ...]
    default_quality: int
    metrics: dict = field(default_factory=dict)
    kind: str = "image"
    temperature: float = 1.0  # the server reports tempered(p, T); fitted on val by fermodels.evaluation.calibration

    @classmethod
    def load(cls, model_dir: str | Path | None = None) -> "ModelCard":
        """From a directory, or the name of a bundled one (fercodec-v1, fercodec-v1-expr); default $FERCODEC_MODEL_DIR or fercodec-v1."""
        path = Path(model_dir or os.environ.get("FERCODEC_MODEL_DIR") or DEFAULT_MODEL_DIR)
        if not path.exists() and len(path.parts) == 1 and (WEIGHTS / path).is_dir():
            path = WEIGHTS / path
        meta = path / "model.json"
        if not meta.is_file():
            raise FileNotFoundError(f"no model.json in {path}: not a fercodec model directory")
        d = json.loads(meta.read_text())
        if d.get("kind", "image") not in FILES:
            raise ValueError(f"{meta}: unknown model kind {d['kind']!r} (this version knows {', '.join(FILES)})")
        return cls(
            path=path,
            model_id=d["model_id"],
            model_tag=int(d["model_tag"]),
            version=str(d["version"]),
            face_size=tuple(d["face_size"]),
            class_names=tuple(d["class_names"]),
            lambdas=tuple(d["lambdas"]),
            default_quality=int(d["default_quality"]),
            metrics=d.get("metrics", {}),
            kind=d.get("kind", "image"),
            temperature=float(d.get("temperature", 1.0)),
        )

    def file(self, name: str) -> Path:
        p = self.path / name
        if not p.is_file():
            raise FileNotFoundError(f"model directory {self.path} lacks {name}")
        return p

    @property
    def num_qualities(self) -> int:
        return len(self.lambdas)


def tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of the model's (mirror-averaged) probabilities: softmax(log p / T). Same argmax, calibrated confidence."""
    if temperature == 1.0:
        return p
    z = np.log(np.clip(p.astype(np.float64), 1e-12, None)) / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)
