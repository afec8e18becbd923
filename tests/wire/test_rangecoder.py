"""ferwire.rangecoder, the encoder for machines without constriction: the very words constriction writes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ferwire import bitstream as bs
from ferwire.rangecoder import RangeEncoder

from .test_bitstream import PINNED, pinned_hash


@pytest.fixture
def without_constriction(monkeypatch):
    monkeypatch.setattr(bs, "_encoder", RangeEncoder)
    monkeypatch.setattr(bs, "has_constriction", lambda: False)


def test_random_models_give_constrictions_words():
    import constriction

    rng = np.random.default_rng(0)
    for t in range(120):
        n, bins = int(rng.integers(1, 300)), int(rng.integers(2, 200))
        rows = rng.integers(0, 3000, size=(n, bins)).astype(np.float64)
        rows[:, 0] += 1 + 60000 * (t % 2)  # every other model as peaked as the shipped tables
        symbols = np.array([rng.choice(bins, p=r / r.sum()) for r in rows], np.int32)
        theirs, ours = constriction.stream.queue.RangeEncoder(), RangeEncoder()
        theirs.encode(symbols, constriction.stream.model.Categorical(perfect=False), rows)
        ours.encode_categorical(symbols, rows)
        for _ in range(int(rng.integers(0, 4))):
            size = int(rng.integers(2, 1 << 12))
            s = int(rng.integers(0, size))
            theirs.encode(np.array([s], np.int32), constriction.stream.model.Uniform(size))
            ours.encode_uniform(s, size)
        np.testing.assert_array_equal(ours.get_compressed(), theirs.get_compressed())


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_pinned_bytes_come_out_of_it_too(name, without_constriction):
    """Every quality of both models, escapes in constant runs included: the hash the constriction path is pinned to."""
    assert pinned_hash(name) == PINNED[name]


def test_its_bitstreams_decode_to_the_coded_symbols(card, fer_test, without_constriction):
    """Untrimmed (no decoder to check a cut with): whole words, 0 to 3 bytes longer than constriction's trimmed ones."""
    from ferclient.encoder import FaceEncoder

    enc = FaceEncoder()
    y = enc.latents(fer_test[0][:24])
    for q in (0, card.default_quality, card.num_qualities - 1):
        ours = [bs.encode(v, q, enc.tables, card.model_tag) for v in y]
        assert all((len(s) - 6) % 4 == 0 for s in ours)
        for v, s in zip(y, ours):
            np.testing.assert_array_equal(bs.decode(s, enc.tables, card.model_tag)[1], enc.tables.symbols(v, q))


def test_the_client_without_constriction_gets_the_same_answers(server, astronaut):
    """`ferclient send` where constriction cannot be imported (as on ARM Linux): the same labels and probabilities."""
    run = "from ferclient.cli import main; sys.exit(main(sys.argv[1:]))"
    out = {}
    for name, code in (("without", "import sys; sys.modules['constriction'] = None; " + run), ("with", "import sys; " + run)):
        cmd = [sys.executable, "-c", code]
        for model in ("fercodec-v1", "fercodec-v1-expr"):
            r = subprocess.run([*cmd, "send", str(astronaut), "--json", "--model", model, "--server", server.address],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            out[name, model] = r.stdout
    for model in ("fercodec-v1", "fercodec-v1-expr"):
        a, b = json.loads(out["without", model]), json.loads(out["with", model])
        assert a["probabilities"] == b["probabilities"] and a["label"] == b["label"] and a["box"] == b["box"]
        assert 0 <= a["bytes"] - b["bytes"] <= 3


def test_constriction_is_required_only_where_it_has_wheels():
    """pyproject.toml: the base install asks for constriction on x86-64 Linux, 64-bit Windows and macOS, its wheels'
    platforms (it publishes no source); elsewhere the client encodes with ferwire.rangecoder. The server extra always
    asks for it."""
    import tomllib

    from packaging.requirements import Requirement

    from ..conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (base,) = [Requirement(r) for r in project["dependencies"] if r.startswith("constriction")]
    wants = {(plat, machine): base.marker.evaluate({"sys_platform": plat, "platform_machine": machine})
             for plat, machine in [("linux", "x86_64"), ("win32", "AMD64"), ("darwin", "arm64"), ("darwin", "x86_64"),
                                   ("linux", "aarch64"), ("linux", "armv7l"), ("win32", "ARM64")]}
    assert wants == {("linux", "x86_64"): True, ("win32", "AMD64"): True, ("darwin", "arm64"): True, ("darwin", "x86_64"): True,
                     ("linux", "aarch64"): False, ("linux", "armv7l"): False, ("win32", "ARM64"): False}
    assert any(Requirement(r).name == "constriction" and Requirement(r).marker is None for r in project["optional-dependencies"]["server"])
