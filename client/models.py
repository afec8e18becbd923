"""Encoders pulled from a server (EncoderRepository.GetEncoder), cached per user and verified before every use.

    <cache>/<model_id>/     encoder.onnx, tables.npz, model.json (MODEL_CARD.md), manifest.json
    <cache>                 $FERCODEC_CACHE_DIR, else $XDG_CACHE_HOME/fercodec/models, else ~/.cache/fercodec/models

A download goes to a hidden temporary directory beside the cache entries, is
checked file by file against the server's manifest (size, SHA-256, the
bundle's SHA-256, model.json naming the manifest's model and tag), and only
then renamed into place: a refused or interrupted pull leaves nothing behind.
manifest.json keeps the hashes, and `cached` checks them again each time an
encoder is loaded from the cache, so a file altered on disk is refused too.

The SHA-256s come from the server itself: they catch corruption in transit and
on disk, not a server one should not trust (TLS and `--sha256` pinning do).

Import-light: grpc and the stubs are imported only when talking to a server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ferwire.card import valid_model_id
from ferwire.edge_bundle import REQUIRED, bundle_sha256, sha256_file

PULL_TIMEOUT_S = 120.0  # a whole bundle (up to ~7 MB here), not one request

MANIFEST = "manifest.json"
MAX_BUNDLE_BYTES = 1 << 30  # refuse a manifest announcing more than this
_HEX64 = re.compile(r"[0-9a-f]{64}")
# What the server says when a bitstream's tag names a model it does not run (ferserver.engine, ferwire.bitstream).
UNKNOWN_MODEL = "face encoded for model tag"


class BundleError(ValueError):
    """A pulled or cached encoder that fails verification, or one that cannot be had; the message says which file and why."""


def cache_dir() -> Path:
    if os.environ.get("FERCODEC_CACHE_DIR"):
        return Path(os.environ["FERCODEC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fercodec" / "models"


def _check_manifest(m: dict) -> None:
    """The manifest itself is sane: safe names, hex hashes, the edge files present, bundle hash consistent."""
    if not isinstance(m.get("model_id"), str) or not valid_model_id(m["model_id"]):
        raise BundleError(f"manifest names no usable model id ({m.get('model_id')!r})")
    names = [f["name"] for f in m["files"]]
    for f in m["files"]:
        n = f["name"]
        if not valid_model_id(n) or n == MANIFEST or n != Path(n).name:  # a file name of the same safe alphabet
            raise BundleError(f"manifest of {m['model_id']} lists a file named {n!r}: refused")
        if not _HEX64.fullmatch(f["sha256"]) or int(f["size"]) < 0:
            raise BundleError(f"manifest of {m['model_id']}: {n} has no valid size and SHA-256")
    if len(set(names)) != len(names):
        raise BundleError(f"manifest of {m['model_id']} lists a file twice")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise BundleError(f"manifest of {m['model_id']} lacks {', '.join(missing)}: not an encoder bundle")
    if sum(int(f["size"]) for f in m["files"]) > MAX_BUNDLE_BYTES:
        raise BundleError(f"manifest of {m['model_id']} announces more than {MAX_BUNDLE_BYTES >> 20} MiB: refused")
    if bundle_sha256((f["name"], f["sha256"]) for f in m["files"]) != m["bundle_sha256"]:
        raise BundleError(f"manifest of {m['model_id']}: bundle SHA-256 does not match its files' hashes")


def _check_card(path: Path, m: dict) -> None:
    from ferwire.card import ModelCard

    try:
        card = ModelCard.load(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{m['model_id']}: unusable model.json ({e})") from None
    if (card.model_id, card.model_tag, card.kind) != (m["model_id"], int(m["model_tag"]), m["kind"]):
        raise BundleError(f"{m['model_id']}: model.json names {card.model_id} (tag {card.model_tag:#06x}, {card.kind}), "
                          f"the manifest {m['model_id']} (tag {int(m['model_tag']):#06x}, {m['kind']})")


def verify(path: str | Path) -> dict:
    """Check a cache entry against its manifest.json (every file's size and SHA-256, the bundle, model.json); returns the manifest."""
    path = Path(path)
    try:
        m = json.loads((path / MANIFEST).read_text())
        _check_manifest(m)
    except BundleError as e:
        raise BundleError(f"cached model {path.name} is damaged: {e}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"cached model {path.name} has no readable {MANIFEST} ({e})") from None
    for f in m["files"]:
        p = path / f["name"]
        if not p.is_file():
            raise BundleError(f"cached model {path.name} lacks {f['name']}")
        if p.stat().st_size != int(f["size"]) or sha256_file(p) != f["sha256"]:
            raise BundleError(f"cached model {path.name}: {f['name']} does not match its SHA-256 (altered or corrupted on disk); "
                              f"run `ferclient models pull {m['model_id']}` to fetch it again")
    _check_card(path, m)
    return m


def cached(model_id: str, cache: Path | None = None) -> Path | None:
    """The verified cache entry for model_id, None when there is none; raises BundleError when there is one that fails verification."""
    if not valid_model_id(model_id):
        return None
    path = (cache or cache_dir()) / model_id
    if not (path / MANIFEST).is_file():
        return None
    verify(path)
    return path


def list_models(cache: Path | None = None) -> list[dict]:
    """Every cache entry: its manifest fields, path, and `ok` (verified) or the reason it is not."""
    root = cache or cache_dir()
    rows = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir():
            continue
        row = {"model_id": path.name, "path": str(path)}
        try:
            m = verify(path)
            row.update(model_id=m["model_id"], model_tag=int(m["model_tag"]), kind=m["kind"], version=m["version"],
                       bytes=int(m["total_bytes"]), bundle_sha256=m["bundle_sha256"], pulled_from=m.get("pulled_from", ""), status="ok")
        except BundleError as e:
            row["status"] = str(e)
        rows.append(row)
    return rows


def remove(model_id: str, cache: Path | None = None) -> bool:
    """Delete a cache entry; False when there was none."""
    path = (cache or cache_dir()) / model_id
    if not valid_model_id(model_id) or not path.is_dir():
        return False
    shutil.rmtree(path)
    return True


def _manifest_dict(msg) -> dict:
    return {
        "model_id": msg.model_id, "model_tag": msg.model_tag, "version": msg.version, "kind": msg.kind,
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in msg.files],
        "bundle_sha256": msg.bundle_sha256, "total_bytes": msg.total_bytes,
    }


def _receive(stream, m: dict, into: Path) -> None:
    """Write the chunks after the manifest into `into`, checking order, offsets, sizes and each file's SHA-256."""
    files = list(m["files"])
    k, written, h, out = 0, 0, hashlib.sha256(), None

    def finish():
        nonlocal k, written, h, out
        f = files[k]
        out.close()
        out = None
        if h.hexdigest() != f["sha256"]:
            raise BundleError(f"download of {m['model_id']} refused: {f['name']} does not match the SHA-256 in the server's manifest "
                              f"(got {h.hexdigest()[:16]}…, expected {f['sha256'][:16]}…); nothing was cached")
        k, written, h = k + 1, 0, hashlib.sha256()

    try:
        while k < len(files) and files[k]["size"] == 0:  # empty files get no chunk
            out = open(into / files[k]["name"], "wb")
            finish()
        for msg in stream:
            if msg.WhichOneof("part") != "chunk":
                raise BundleError(f"download of {m['model_id']} refused: a second manifest in the stream")
            c = msg.chunk
            if k >= len(files) or c.name != files[k]["name"] or c.offset != written:
                raise BundleError(f"download of {m['model_id']} refused: unexpected chunk {c.name}@{c.offset} "
                                  f"(expected {files[k]['name'] + '@' + str(written) if k < len(files) else 'the end'})")
            if written + len(c.data) > files[k]["size"]:
                raise BundleError(f"download of {m['model_id']} refused: {c.name} is longer than the manifest's {files[k]['size']} bytes")
            if out is None:
                out = open(into / c.name, "wb")
            out.write(c.data)
            h.update(c.data)
            written += len(c.data)
            if written == files[k]["size"]:
                finish()
                while k < len(files) and files[k]["size"] == 0:
                    out = open(into / files[k]["name"], "wb")
                    finish()
        if k < len(files):
            raise BundleError(f"download of {m['model_id']} refused: the stream ended inside {files[k]['name']} ({written} of {files[k]['size']} bytes)")
    finally:
        if out is not None:
            out.close()


def pull(channel, model_id: str = "", timeout: float | None = PULL_TIMEOUT_S, expect_sha256: str | None = None,
         cache: Path | None = None, source: str = "") -> Path:
    """Download model_id's encoder (empty: the server's first model) into the cache; returns its directory.

    Raises BundleError when the download fails verification (nothing is left in the cache) and
    grpc.RpcError when the server refuses (NOT_FOUND: no such model; DATA_LOSS: its files changed).
    When the cache already holds this exact bundle, the download stops after the manifest.
    """
    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    root = cache or cache_dir()
    call = pb_grpc.EncoderRepositoryStub(channel).GetEncoder(pb.GetEncoderRequest(model_id=model_id), timeout=timeout)
    try:
        first = next(call, None)
        if first is None or first.WhichOneof("part") != "manifest":
            raise BundleError(f"server sent no manifest for {model_id or 'its first model'}")
        m = _manifest_dict(first.manifest)
        try:
            _check_manifest(m)
        except BundleError as e:
            raise BundleError(f"download refused: {e}") from None
        if expect_sha256 and m["bundle_sha256"] != expect_sha256.lower():
            raise BundleError(f"download of {m['model_id']} refused: bundle SHA-256 {m['bundle_sha256']} is not the pinned {expect_sha256}")
        target = root / m["model_id"]
        if _same_bundle(target, m):
            return target
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".pull-{m['model_id']}-", dir=root))
        except OSError as e:  # FERCODEC_CACHE_DIR naming a file, a read-only home
            what = "is a file, not a folder" if root.is_file() else (e.strerror or str(e))
            raise OSError(f"cannot keep models in {root}: {what} (set FERCODEC_CACHE_DIR to a folder you can write)") from None
        try:
            _receive(call, m, tmp)
            _check_card(tmp, m)
            (tmp / MANIFEST).write_text(json.dumps({**m, "pulled_from": source, "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
            _install(tmp, target, m)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target
    finally:
        call.cancel()  # a no-op once the stream ended; stops the server when we returned early or failed


def _same_bundle(target: Path, m: dict) -> bool:
    try:
        return verify(target)["bundle_sha256"] == m["bundle_sha256"]
    except BundleError:
        return False


def _install(tmp: Path, target: Path, m: dict) -> None:
    """Rename the verified download into place; an older or damaged entry of the same id is moved aside first, then deleted."""
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".old-{m['model_id']}-", dir=target.parent))
        os.replace(target, aside / "entry")
    try:
        os.replace(tmp, target)
    except OSError:
        if not _same_bundle(target, m):  # another process installed a different bundle in between: keep ours out, say so
            raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def ensure(channel, model_id: str, timeout: float | None = PULL_TIMEOUT_S, source: str = "") -> tuple[Path, bool]:
    """(the cache entry for model_id, whether it was pulled now): the cached one when it verifies, else a fresh pull."""
    try:
        found = cached(model_id)
    except BundleError:
        found = None  # damaged: pull replaces it
    if found is not None:
        return found, False
    return pull(channel, model_id, timeout, source=source), True


def unknown_model(error) -> bool:
    """Whether a grpc.RpcError is the server refusing a face encoded for a model it does not run."""
    import grpc

    return error.code() == grpc.StatusCode.FAILED_PRECONDITION and UNKNOWN_MODEL in (error.details() or "")


def server_info(channel, timeout: float | None = 10.0):
    """The server's GetModelInfo reply: its first model, the rest in other_models."""
    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    from .channel import unary

    return unary(pb_grpc.FerCodecStub(channel).GetModelInfo, pb.GetModelInfoRequest(), timeout)


def server_model(channel, kind: str, timeout: float | None = 10.0, info=None) -> str:
    """The id of the first model of this kind ("image" / "expression") the server runs (info: its GetModelInfo reply,
    asked for here when not given)."""
    info = info if info is not None else server_info(channel, timeout)
    for model in [info, *info.other_models]:
        if (model.kind or "image") == kind:
            return model.model_id
    runs = ", ".join(f"{x.model_id} ({x.kind or 'image'})" for x in [info, *info.other_models])
    raise BundleError(f"the server runs no {kind} model (it runs {runs}); choose one with --model")
