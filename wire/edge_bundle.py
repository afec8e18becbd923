"""The encoder bundle a server hands to edge devices (EncoderRepository.GetEncoder): which files, and how they are hashed.

Server and client compute the same digests from this one place, so a bundle
pinned by `ferclient models list` is the value the server logs at start.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

EDGE_FILES = ("MODEL_CARD.md", "encoder.onnx", "model.json", "tables.npz")  # sorted; MODEL_CARD.md is optional; never the .pt weights
REQUIRED = ("encoder.onnx", "model.json", "tables.npz")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def bundle_sha256(files) -> str:
    """SHA-256 of the `sha256sum` listing "<sha256>  <name>\\n" of (name, sha256) pairs, in order: one value for the whole bundle."""
    return hashlib.sha256("".join(f"{sha}  {name}\n" for name, sha in files).encode()).hexdigest()
