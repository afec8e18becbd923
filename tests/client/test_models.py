"""Pulled encoders (ferclient.models, `ferclient models`, auto-pull in `ferclient send`): verified on the way in and before each use."""

from __future__ import annotations

import json
import threading
import time

import grpc
import numpy as np
import pytest

from ferclient import models
from ferclient.encoder import FaceEncoder
from ferserver.repository import EncoderRepositoryServicer
from ferwire.bitstream import decode, parse_header
from ferwire.card import DEFAULT_MODEL_DIR

from ..conftest import ServerProcess, run_client
from ..server.test_repository import InProcess, model_copy


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty per-test cache (FERCODEC_CACHE_DIR; ferclient subprocesses inherit it)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("FERCODEC_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model the client has no copy of, served by EncoderRepository alone (in process)."""
    copy = model_copy(tmp_path_factory.mktemp("served") / "fercodec-test")
    with InProcess([copy]) as s:
        yield copy, s


def _left(cache) -> list[str]:
    """Everything in the cache, hidden temporary directories included."""
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _faces(n=2):
    return np.random.default_rng(0).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FERCODEC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_dir() == tmp_path / "home" / ".cache" / "fercodec" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "fercodec" / "models"
    monkeypatch.setenv("FERCODEC_CACHE_DIR", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"


def test_pull_verifies_caches_and_encodes(served, cache):
    copy, server = served
    assert models.cached(copy.model_id) is None
    with pytest.raises(FileNotFoundError, match="ferclient models pull"):
        FaceEncoder(copy.model_id)
    with grpc.insecure_channel(server.address) as ch:
        where = models.pull(ch, "", source=server.address)  # "": the server's first model
    assert where == cache / copy.model_id and _left(cache) == [copy.model_id]
    assert sorted(p.name for p in where.iterdir()) == ["MODEL_CARD.md", "encoder.onnx", "manifest.json", "model.json", "tables.npz"]
    m = models.verify(where)
    assert (m["model_id"], m["model_tag"], m["pulled_from"]) == (copy.model_id, copy.model_tag, server.address)
    assert models.cached(copy.model_id) == where
    enc = FaceEncoder(copy.model_id)
    assert enc.card.model_id == copy.model_id
    streams = enc.encode(_faces())
    assert [parse_header(s).model_tag for s in streams] == [copy.model_tag] * 2
    # Same weights as fercodec-v1 under another tag: the same symbols.
    original = FaceEncoder(DEFAULT_MODEL_DIR)
    for ours, theirs in zip(streams, original.encode(_faces())):
        np.testing.assert_array_equal(decode(ours, enc.tables, copy.model_tag)[1], decode(theirs, original.tables, original.card.model_tag)[1])
    rows = models.list_models()
    assert [(r["model_id"], r["status"]) for r in rows] == [(copy.model_id, "ok")]
    assert models.remove(copy.model_id) and not models.remove(copy.model_id) and _left(cache) == []


def test_pulling_a_cached_bundle_again_stops_after_the_manifest(cache, tmp_path):
    """The second pull reads the manifest, sees its cache hold the same bundle and cancels: the server stops reading.

    No timing: while the second pull runs, the server's file reads wait at a gate, so none can finish before the
    client cancels; the gate opens only once the server's handler has ended."""
    reads, gate, ended = [], threading.Event(), threading.Event()
    gate.set()

    class Counting(EncoderRepositoryServicer):
        def _read(self, path, offset, size):
            assert gate.wait(30), "the test never opened the gate"
            reads.append(path.name)
            return super()._read(path, offset, size)

        async def GetEncoder(self, request, context):
            try:
                async for msg in super().GetEncoder(request, context):
                    yield msg
            finally:
                ended.set()

    copy = model_copy(tmp_path / "m")
    with InProcess([copy], Counting) as s, grpc.insecure_channel(s.address) as ch:
        first = models.pull(ch, copy.model_id)
        n, stamp = len(reads), (first / "encoder.onnx").stat().st_mtime_ns
        assert n > 0
        gate.clear()
        ended.clear()
        assert models.pull(ch, copy.model_id) == first and (first / "encoder.onnx").stat().st_mtime_ns == stamp
        assert ended.wait(30), "the server kept streaming after the client cancelled"
        gate.set()
    assert len(reads) - n <= 1  # at most the read that was waiting at the gate when the client cancelled


def test_a_download_corrupted_in_transit_is_refused_and_leaves_nothing(cache, tmp_path):
    class Flipping(EncoderRepositoryServicer):
        def _read(self, path, offset, size):
            data = super()._read(path, offset, size)
            if path.name == "encoder.onnx" and offset == 0:
                data = bytes([data[0] ^ 1]) + data[1:]
            return data

    copy = model_copy(tmp_path / "m")
    with InProcess([copy], Flipping) as s, grpc.insecure_channel(s.address) as ch:
        with pytest.raises(models.BundleError, match=r"refused: encoder\.onnx does not match the SHA-256 .*nothing was cached"):
            models.pull(ch, copy.model_id)
    assert _left(cache) == []  # no entry, no hidden temporary directory
    assert models.cached(copy.model_id) is None


def test_a_server_file_changed_since_start_is_refused_and_leaves_nothing(cache, tmp_path):
    copy = model_copy(tmp_path / "m")
    with InProcess([copy]) as s, grpc.insecure_channel(s.address) as ch:
        (copy.path / "tables.npz").write_bytes(b"not the tables the server loaded")
        with pytest.raises(grpc.RpcError) as e:
            models.pull(ch, copy.model_id)
    assert e.value.code() == grpc.StatusCode.DATA_LOSS
    assert _left(cache) == []


def test_a_pinned_bundle_hash_must_match(served, cache):
    copy, server = served
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(models.BundleError, match="is not the pinned"):
            models.pull(ch, copy.model_id, expect_sha256="0" * 64)
        assert _left(cache) == []
        right = server.servicer.bundles[copy.model_id].manifest.bundle_sha256
        assert models.pull(ch, copy.model_id, expect_sha256=right.upper()) == cache / copy.model_id


def test_a_tampered_cache_is_refused_then_repaired_by_pulling(served, cache):
    copy, server = served
    with grpc.insecure_channel(server.address) as ch:
        where = models.pull(ch, copy.model_id)
        onnx = where / "encoder.onnx"
        data = bytearray(onnx.read_bytes())
        data[100] ^= 0x40
        onnx.write_bytes(bytes(data))
        with pytest.raises(models.BundleError, match=r"encoder\.onnx does not match its SHA-256.*ferclient models pull"):
            models.cached(copy.model_id)
        with pytest.raises(ValueError, match="does not match its SHA-256"):
            FaceEncoder(copy.model_id)
        assert models.list_models()[0]["status"].startswith(f"cached model {copy.model_id}: encoder.onnx")
        assert models.ensure(ch, copy.model_id) == (where, True)  # damaged entry replaced
        assert models.cached(copy.model_id) == where and _left(cache) == [copy.model_id]
        (where / "manifest.json").write_text(json.dumps({**json.loads((where / "manifest.json").read_text()), "model_tag": 1}))
        with pytest.raises(models.BundleError, match="model.json names"):
            models.cached(copy.model_id)


def test_unknown_model_id_is_not_found(served, cache):
    copy, server = served
    with grpc.insecure_channel(server.address) as ch, pytest.raises(grpc.RpcError) as e:
        models.pull(ch, "fercodec-v9-0000")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and copy.model_id in e.value.details()
    assert _left(cache) == []


@pytest.mark.parametrize("name", ["../evil", "manifest.json", ".hidden", "a/b", ""])
def test_a_manifest_with_unsafe_file_names_is_refused(name):
    files = [{"name": n, "size": 1, "sha256": "0" * 64} for n in ("encoder.onnx", "model.json", "tables.npz", name)]
    m = {"model_id": "fercodec-x-0001", "files": files, "bundle_sha256": models.bundle_sha256((f["name"], f["sha256"]) for f in files)}
    with pytest.raises(models.BundleError, match="refused"):
        models._check_manifest(m)
    for bad_id in ("../x", "", ".."):
        with pytest.raises(models.BundleError, match="no usable model id"):
            models._check_manifest({**m, "model_id": bad_id})


# --- the real server and the real CLI --------------------------------------------------------

@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    """A ferserver that runs only a model this client does not ship: what a client meets after a server upgrade."""
    copy = model_copy(tmp_path_factory.mktemp("upgraded") / "fercodec-test", weights=True)
    with ServerProcess("--model-dir", str(copy.path)) as s:
        yield copy, s


@pytest.mark.slow
def test_cli_pull_then_send_with_the_pulled_model(upgraded, cache, astronaut):
    copy, server = upgraded
    t0 = time.perf_counter()
    r = run_client("models", "pull", "--server", server.address)
    pull_s = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert copy.model_id in r.stdout and "verified" in r.stdout and _left(cache) == [copy.model_id]
    listed = run_client("models", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["model_id"] == copy.model_id
    r = run_client("send", str(astronaut), "--server", server.address, "--model", copy.model_id, "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["model"] == copy.model_id and row["label"] == "happy" and "note" not in r.stderr
    print(f"ferclient models pull: {pull_s:.2f} s wall (process start included) for {models.verify(cache / copy.model_id)['total_bytes']} bytes")


@pytest.mark.slow
def test_send_pulls_the_servers_encoder_when_the_server_refuses_its_own(upgraded, cache, astronaut):
    copy, server = upgraded
    r = run_client("send", str(astronaut), "--server", server.address, "--no-pull")  # the bundled fercodec-v1: a model this server does not run
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr and "face encoded for model tag" in r.stderr and _left(cache) == []
    r = run_client("send", str(astronaut), "--server", server.address, "--json")
    assert r.returncode == 0, r.stderr
    notes = r.stderr.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("ferclient: note: the server does not run model fercodec-v1-") and f"pulled {copy.model_id}" in notes[0]
    row = json.loads(r.stdout)
    assert row["model"] == copy.model_id and row["label"] == "happy"
    assert _left(cache) == [copy.model_id]
    r = run_client("send", str(astronaut), "--server", server.address, "--json")  # next run: the cached one, no download
    assert r.returncode == 0 and "using the cached" in r.stderr


@pytest.mark.slow
def test_the_library_pulls_the_servers_encoder_as_send_does(upgraded, cache, astronaut, caplog):
    """ferclient.Client: refused as encoded for a model the server does not run, it pulls the server's, re-encodes and
    sends again (the note goes to the "ferclient" logger); with pull=False the refusal is the FerError."""
    from ferclient import Client, FerError

    copy, server = upgraded
    with Client(server.address, pull=False) as c, pytest.raises(FerError) as e:
        c.recognize(astronaut)
    assert e.value.code == "FAILED_PRECONDITION" and "face encoded for model tag" in str(e.value) and _left(cache) == []
    with caplog.at_level("INFO", logger="ferclient"), Client(server.address) as c:
        (face,) = c.recognize(astronaut)
        assert face.model == c.model == copy.model_id and face.label == "happy"
        (again,) = c.recognize(astronaut)  # the pulled encoder from now on
    assert again.bytes == face.bytes and _left(cache) == [copy.model_id]
    assert [r.message for r in caplog.records if "does not run model" in r.message][0].endswith("re-encoding and sending again")


@pytest.mark.slow
def test_send_with_an_uncached_model_id_pulls_it_first(upgraded, cache, astronaut):
    copy, server = upgraded
    r = run_client("send", str(astronaut), "--server", server.address, "--model", copy.model_id, "--json")
    assert r.returncode == 0, r.stderr
    assert f"pulled model {copy.model_id}" in r.stderr and json.loads(r.stdout)["model"] == copy.model_id
    r = run_client("send", str(astronaut), "--server", server.address, "--model", "fercodec-v9-0000")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and copy.model_id in r.stderr


@pytest.mark.slow
def test_cli_refuses_unknown_ids_and_a_changed_server_file(upgraded, cache):
    copy, server = upgraded
    r = run_client("models", "pull", "fercodec-v9-0000", "--server", server.address)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and copy.model_id in r.stderr
    onnx = copy.path / "encoder.onnx"
    original = onnx.read_bytes()
    try:
        onnx.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        r = run_client("models", "pull", "--server", server.address)
    finally:
        onnx.write_bytes(original)
    # The client checks encoder.onnx's hash on its last chunk, before the server's DATA_LOSS for the same file arrives.
    assert r.returncode == 1 and "refused: encoder.onnx does not match the SHA-256" in r.stderr and "Traceback" not in r.stderr
    assert _left(cache) == []
    r = run_client("models", "pull", "--server", server.address, "--sha256", "0" * 64)
    assert r.returncode == 1 and "is not the pinned" in r.stderr and _left(cache) == []


def test_a_cache_that_is_a_file_is_one_line(upgraded, tmp_path, monkeypatch):
    """FERCODEC_CACHE_DIR naming a file printed Python's "[Errno 17] File exists: '...'"."""
    _, server = upgraded
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("FERCODEC_CACHE_DIR", str(tmp_path / "cache"))
    r = run_client("models", "pull", "--server", server.address)
    assert r.returncode == 1 and r.stderr == (f"ferclient: cannot keep models in {tmp_path / 'cache'}: is a file, not a folder "
                                              "(set FERCODEC_CACHE_DIR to a folder you can write)\n"), r.stderr
    r = run_client("models", "list")  # said "no models pulled yet"
    assert r.returncode == 1 and r.stderr == f"ferclient: the model cache {tmp_path / 'cache'} is not a folder (FERCODEC_CACHE_DIR?)\n", r.stderr
    r = run_client("models", "pull", "--server", server.address, "--sha256", "xyz")  # downloaded, then "is not the pinned xyz"
    assert r.returncode == 2 and "must be 64 hex digits" in r.stderr, r.stderr


@pytest.mark.slow
def test_watch_takes_the_servers_encoder_before_the_first_frame(upgraded, cache, tmp_path):
    """watch against a server that runs another model was refused at its first frame ("update the client's model"), the
    summary counting the refused faces as sent; it now asks the server first and pulls its model, as send does."""
    from fermodels.evaluation.video import make_video

    copy, server = upgraded
    video = make_video(tmp_path / "v.mp4", frames=20)
    r = run_client("watch", str(video), "--server", server.address, "--no-pull", timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "the server does not run model fercodec-v1-" in r.stderr
    assert f"it runs {copy.model_id}" in r.stderr and _left(cache) == []
    r = run_client("watch", str(video), "--server", server.address, "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ferclient: note: the server does not run model fercodec-v1-" in r.stderr and f"pulled {copy.model_id}" in r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows and all(row["label"] == "happy" for row in rows if row["track"] == 1)
    assert _left(cache) == [copy.model_id]
