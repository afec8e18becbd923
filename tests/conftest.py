"""Shared fixtures: the shipped model, real photos, FER2013 subsets and a real ferserver process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferserver.process import ServerProcess, free_port  # noqa: F401 (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def card():
    from ferwire.card import ModelCard

    return ModelCard.load()


@pytest.fixture(scope="session")
def expression_card():
    from ferwire.card import EXPRESSION_MODEL_DIR, ModelCard

    return ModelCard.load(EXPRESSION_MODEL_DIR)


@pytest.fixture(scope="session")
def astronaut(tmp_path_factory) -> Path:
    """skimage.data.astronaut(): a public-domain photo of a smiling face, shipped inside scikit-image."""
    import skimage.data
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def fer_test():
    """A fixed, class-interleaved subset of FER2013 PrivateTest from ../shared."""
    from fermodels.data import DEFAULT_DATA, load_split

    if not DEFAULT_DATA.is_file():
        pytest.fail(f"FER2013 archive missing at {DEFAULT_DATA}; CI must have ../shared beside the checkout")
    return load_split("test", limit=int(os.environ.get("FERCODEC_TEST_FACES", "600")))


@pytest.fixture(scope="session")
def server():
    with ServerProcess() as s:
        yield s


def run_client(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ferclient"), *args], capture_output=True, text=True, timeout=timeout)


def encode_faces(faces: np.ndarray, quality: int) -> list[bytes]:
    from ferclient.encoder import FaceEncoder

    return FaceEncoder().encode(faces, quality)
