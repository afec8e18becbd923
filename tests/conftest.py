"""Shared fixtures: the shipped model, real photos, FER2013 subsets and a real ferserver process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def card():
    from fermodels.bundle import ModelCard

    return ModelCard.load()


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


class Server:
    def __init__(self, *extra: str):
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [str(BIN / "ferserver"), "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", str(self.metrics_port), *extra]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ferserver-{self.port}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            self.log.seek(0)
            text = self.log.read()
            if re.search(r"ferserver ready on", text):
                self.ready_line = next(line for line in text.splitlines() if "ready on" in line)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferserver exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError("ferserver did not become ready within 120 s")

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    if s.proc.poll() is None:
        s.stop()


def run_client(*args: str, env_extra: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([str(BIN / "ferclient"), *args], capture_output=True, text=True, timeout=timeout, env=env)


def encode_faces(faces: np.ndarray, quality: int) -> list[bytes]:
    from ferclient.encoder import FaceEncoder

    return FaceEncoder().encode(faces, quality)
