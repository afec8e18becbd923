"""EncoderRepository: the edge half of every model the server runs, streamed to devices with SHA-256s.

A device whose encoder is not the server's (a server upgrade, a fresh install)
pulls the matching one (`ferclient models pull`, or automatically on a
refused face) instead of reinstalling the package. Only edge files are
served (EDGE_FILES), never the torch weights. Hashes are computed once, when
the server starts, from the files it loaded; a file changed on disk since then
is refused with DATA_LOSS rather than handed out as the server's encoder,
because the server keeps decoding with what it loaded.

Torch-free: the servicer needs the ModelCards only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
from ferwire.edge_bundle import EDGE_FILES, REQUIRED, bundle_sha256, sha256_file

from .rpc import RequestError, accounted, decoded

log = logging.getLogger("ferserver")
SERVICE = pb.DESCRIPTOR.services_by_name["EncoderRepository"].full_name
CHUNK_BYTES = 64 << 10


@dataclass(frozen=True)
class Bundle:
    card: object  # ferwire.card.ModelCard
    manifest: pb.EncoderManifest

    def path(self, name: str) -> Path:
        return Path(self.card.path) / name


def bundle(card) -> Bundle:
    """The manifest of one model directory's edge files; raises FileNotFoundError when a required one is missing."""
    d = Path(card.path)
    missing = [n for n in REQUIRED if not (d / n).is_file()]
    if missing:
        raise FileNotFoundError(f"model directory {d} lacks {', '.join(missing)}: no encoder to serve for {card.model_id}")
    _check_loads(d / "encoder.onnx")
    files = [pb.EncoderFile(name=n, size=(d / n).stat().st_size, sha256=sha256_file(d / n)) for n in EDGE_FILES if (d / n).is_file()]
    return Bundle(card, pb.EncoderManifest(
        model_id=card.model_id, model_tag=card.model_tag, version=card.version, kind=card.kind, files=files,
        bundle_sha256=bundle_sha256((f.name, f.sha256) for f in files), total_bytes=sum(f.size for f in files),
    ))


def _check_loads(path: Path) -> None:
    """ValueError when the edge encoder does not load in ONNX Runtime with a `face` input. The server never runs it, so a
    copy cut short started without a word and was handed to devices as verified: its hashes are of what is on disk."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # the error comes back as the exception
    try:
        inputs = [i.name for i in ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).get_inputs()]
    except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path} does not load in ONNX Runtime ({first}): no encoder to serve") from None
    if inputs != ["face"]:
        raise ValueError(f"{path} takes {inputs}, not the one input `face` an edge encoder takes")


class EncoderRepositoryServicer(pb_grpc.EncoderRepositoryServicer):
    def __init__(self, cards, metrics=None, chunk_bytes: int = CHUNK_BYTES):
        self.bundles: dict[str, Bundle] = {}
        self.aliases: dict[str, str] = {}  # model directory name -> model id
        self.default: str | None = None
        self.metrics, self.chunk_bytes = metrics, chunk_bytes
        for card in cards:
            try:
                b = bundle(card)
            except FileNotFoundError as e:
                log.warning("%s", e)
                continue
            self.bundles[card.model_id] = b
            self.aliases.setdefault(Path(card.path).name, card.model_id)
            if self.default is None and card is cards[0]:
                self.default = card.model_id
            log.info("encoder for %s: %d files, %d bytes, bundle sha256 %s", card.model_id, len(b.manifest.files), b.manifest.total_bytes, b.manifest.bundle_sha256)

    def find(self, model_id: str) -> Bundle:
        if not model_id:
            if self.default is None:
                raise RequestError(grpc.StatusCode.NOT_FOUND, "the server's first model has no encoder to serve"
                               + (f"; ask for one of: {', '.join(self.bundles)}" if self.bundles else ""))
            return self.bundles[self.default]
        found = self.bundles.get(model_id) or self.bundles.get(self.aliases.get(model_id, ""))
        if found is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no model {model_id!r} on this server; it serves encoders for: {', '.join(self.bundles) or 'none'}")
        return found

    def _read(self, path: Path, offset: int, size: int) -> bytes:
        """One chunk off the disk (runs in a worker thread). Tests override it to play a corrupting transport."""
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    async def _chunks(self, b: Bundle):
        yield pb.EncoderChunk(manifest=b.manifest)
        for entry in b.manifest.files:
            path, h, offset = b.path(entry.name), hashlib.sha256(), 0
            while offset < entry.size:
                try:
                    data = await asyncio.to_thread(self._read, path, offset, min(self.chunk_bytes, entry.size - offset))
                except OSError as e:
                    raise RequestError(grpc.StatusCode.DATA_LOSS, f"{entry.name} of {b.card.model_id} unreadable on the server ({e.strerror or e})") from None
                if not data:
                    break
                h.update(data)
                yield pb.EncoderChunk(chunk=pb.FileChunk(name=entry.name, offset=offset, data=data))
                offset += len(data)
            # The file must still be the one the server loaded; else the device would get an encoder the server does not decode.
            if offset != entry.size or h.hexdigest() != entry.sha256 or path.stat().st_size != entry.size:
                log.error("GetEncoder: %s changed on disk since the server loaded %s", path, b.card.model_id)
                raise RequestError(grpc.StatusCode.DATA_LOSS, f"{entry.name} of {b.card.model_id} changed on the server since it started; "
                                                          "the server must be restarted before it hands out this encoder")

    async def GetEncoder(self, request, context):
        async with accounted("GetEncoder", context, self.metrics):
            b = self.find(decoded(request).model_id)
            async for msg in self._chunks(b):
                yield msg


def add_to_server(server, cards, metrics=None) -> str:
    """Register EncoderRepository on a grpc.aio server for these ModelCards; returns the service's full name (for reflection)."""
    pb_grpc.add_EncoderRepositoryServicer_to_server(EncoderRepositoryServicer(list(cards), metrics), server)
    return SERVICE
