"""A shipped model directory: what is in it, and its parsed model.json (ModelCard).

    model.json      id, 16-bit tag, kind, version, face size, qualities, classes, metrics, and how the server
                    reports probabilities (temperature, prior_correction: ModelCard.served)
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
import re
from dataclasses import dataclass, field
from pathlib import Path

import fermodels
import numpy as np

MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # one directory name: a pulled model's folder in the client's cache


def valid_model_id(model_id: str) -> bool:
    """A model id usable as one directory name (what ferexport writes: name-tag, e.g. fercodec-v1-aa8f); ferexport refuses
    a --name that would make another (it exported "bad/name x-2def", which ferserver served and no client could pull)."""
    return bool(MODEL_ID.fullmatch(model_id)) and model_id not in (".", "..")


# The bundled models are package data of fermodels.weights (models/weights in the checkout); fermodels'
# __init__ is import-light, so finding it costs no torch, editable install or not.
WEIGHTS = Path(fermodels.__file__).resolve().parent / "weights"
DEFAULT_MODEL_DIR = WEIGHTS / "fercodec-v1"
EXPRESSION_MODEL_DIR = WEIGHTS / "fercodec-v1-expr"
FILES = {
    "image": ("model.json", "codec.pt", "classifier.pt", "encoder.onnx", "tables.npz"),
    "expression": ("model.json", "expression.pt", "encoder.onnx", "tables.npz"),
}


def model_path(model_dir: str | Path) -> Path:
    """The directory a model argument names: a path as given, or the name of a bundled model (fercodec-v1, ...)."""
    path = Path(model_dir)
    if not path.exists() and len(path.parts) == 1 and (WEIGHTS / path).is_dir():
        path = WEIGHTS / path
    return path


def bundled_names() -> list[str]:
    """The models shipped inside the package, by name."""
    return sorted(p.name for p in WEIGHTS.iterdir() if (p / "model.json").is_file())


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
    temperature: float = 1.0  # the server reports tempered(p, T, log_bias); both fitted on val by fermodels.evaluation.calibration
    prior_correction: float = 0.0  # strength s: the server adds -s * log(train_prior) to log p (logit adjustment; 0 = off)
    train_prior: tuple[float, ...] = ()  # the training labels' class shares, in class_names order

    @classmethod
    def load(cls, model_dir: str | Path | None = None) -> "ModelCard":
        """From a directory, or the name of a bundled one (fercodec-v1, fercodec-v1-expr); default $FERCODEC_MODEL_DIR or fercodec-v1."""
        path = model_path(model_dir or os.environ.get("FERCODEC_MODEL_DIR") or DEFAULT_MODEL_DIR)
        meta = path / "model.json"
        if not meta.is_file():
            named = "" if path.exists() else f" (no such directory; the bundled models: {', '.join(bundled_names())})"
            raise FileNotFoundError(f"no model.json in {path}: not a fercodec model directory{named}")
        try:
            d = json.loads(meta.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{meta} is not JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{meta} is not a model card: a JSON {type(d).__name__}, not an object")
        try:
            return cls._from_dict(path, meta, d)
        except KeyError as e:
            raise ValueError(f"{meta} is not a valid model card: it lacks {e}") from None
        except (TypeError, ValueError) as e:
            if str(e).startswith(str(meta)):  # a message of ours, naming the file already
                raise
            raise ValueError(f"{meta} is not a valid model card: {e}") from None

    @classmethod
    def _from_dict(cls, path: Path, meta: Path, d: dict) -> "ModelCard":
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
            **_prior_correction(meta, d),
        )

    @property
    def log_bias(self) -> np.ndarray | None:
        """What the prior correction adds to log p: -s * log(train prior), or None when it is off."""
        if not self.prior_correction:
            return None
        return -self.prior_correction * np.log(np.asarray(self.train_prior, np.float64))

    def served(self, p: np.ndarray) -> np.ndarray:
        """The model's (mirror-averaged) probabilities as the server reports them: prior-corrected, then tempered."""
        return tempered(p, self.temperature, self.log_bias)

    def file(self, name: str) -> Path:
        p = self.path / name
        if not p.is_file():
            raise FileNotFoundError(f"model directory {self.path} lacks {name}")
        return p

    @property
    def num_qualities(self) -> int:
        return len(self.lambdas)


def _prior_correction(meta: Path, d: dict) -> dict:
    """model.json's optional {"prior_correction": {"strength": s, "train_prior": [...]}} as ModelCard fields."""
    pc = d.get("prior_correction")
    if not pc:
        return {}
    prior = tuple(float(v) for v in pc.get("train_prior", ()))
    if len(prior) != len(d["class_names"]) or min(prior) <= 0:
        raise ValueError(f"{meta}: prior_correction.train_prior needs one positive share per class ({len(d['class_names'])})")
    return {"prior_correction": float(pc["strength"]), "train_prior": prior}


def tempered(p: np.ndarray, temperature: float, log_bias: np.ndarray | None = None) -> np.ndarray:
    """softmax((log p + log_bias) / T) of the model's (mirror-averaged) probabilities.

    T alone (temperature scaling) keeps every label and calibrates the confidence. log_bias = -s * log(train prior)
    is logit adjustment (Menon et al., ICLR 2021): it takes back part of the training set's class balance (FER2013:
    a quarter happy, 1.4 % disgust), so a face's label depends less on how common its class was in training.
    """
    if temperature == 1.0 and log_bias is None:
        return p
    z = np.log(np.clip(p.astype(np.float64), 1e-12, None))
    if log_bias is not None:
        z = z + log_bias
    z = z / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)
