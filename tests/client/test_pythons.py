"""The edge client on the oldest and newest Pythons that pyproject.toml admits, installed alone as an edge device installs
it (`pip install '.[video]'`: no torch, no CompressAI), against a real server: the same faces, bits and answers as this
environment's client, for a photo and for a video. Where this machine has no such Python (pyenv's or on PATH), the case skips and says so.

Why: the package says requires-python >= 3.10 and the suite runs on one Python only. On 3.13 numpy < 2 has no wheel,
so the base install pinned to it built numpy from source (6 minutes here); the client runs on numpy 2 (the server's
CompressAI still pins numpy < 2, so the server extra keeps the pin). With numpy free, pip takes the newest OpenCV, in
which `ferclient watch` failed at once: cv2.setLogLevel had moved."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fermodels.evaluation.video import make_video

from ..conftest import ROOT, run_client

pytestmark = pytest.mark.slow
PYTHONS = ("3.10", "3.13")  # the oldest admitted; the newest on these machines
SOURCE_SKIP = (".git", ".venv", "runs", "build", "docs", "tests", ".pytest_cache", "*.egg-info", ".gpudata", ".whl*")


def _python(version: str) -> str | None:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(root.glob(f"versions/{version}.*/bin/python"), key=lambda p: [int(v) for v in p.parent.parent.name.split(".") if v.isdigit()])
    return str(found[-1]) if found else shutil.which(f"python{version}")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """This checkout without what a wheel leaves out: pip builds in the source tree, so not in this one."""
    dst = tmp_path_factory.mktemp("src") / "fercodec"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(*SOURCE_SKIP))
    return dst


def _answers(out: str) -> list[dict]:
    rows = [json.loads(line) for line in out.splitlines()]
    for r in rows:
        r.pop("latency_ms", None)
        r.pop("file", None)
    return rows


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "two_faces.mp4", frames=40)


@pytest.mark.parametrize("version", PYTHONS)
def test_the_edge_client_installed_alone_on_another_python_sends_the_same_bits(version, sources, server, astronaut, video, tmp_path):
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (pyenv's or python{version} on PATH)")
    env = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(env)], check=True, timeout=120)
    pip = subprocess.run([str(env / "bin/pip"), "install", "-q", "--disable-pip-version-check", f"{sources}[video]"],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    has_torch = subprocess.run([str(env / "bin/python"), "-c", "import torch"], capture_output=True, timeout=60)
    assert has_torch.returncode != 0, "the edge install pulled in torch"
    for command, extras in ((["ferserver"], "server"), (["fertrain", "classifier", "--out", str(tmp_path / "run")], "server,train"),
                            (["fereval", "--help"], "server,train")):  # on PATH, their packages not installed: one line each
        r = subprocess.run([str(env / "bin" / command[0]), *command[1:]], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"pip install 'fercodec[{extras}]'" in r.stderr, r.stderr
    for args in (["send", str(astronaut), "--json", "--model", "fercodec-v1"], ["send", str(astronaut), "--json", "--model", "fercodec-v1-expr"],
                 ["watch", str(video), "--json"]):
        args += ["--server", server.address]
        theirs = subprocess.run([str(env / "bin/ferclient"), *args], capture_output=True, text=True, timeout=120)
        assert theirs.returncode == 0, theirs.stderr
        ours = run_client(*args)
        assert ours.returncode == 0, ours.stderr
        assert _answers(theirs.stdout) == _answers(ours.stdout)  # box, score, bytes, label and probabilities: the same bits
