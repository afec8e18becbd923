"""EncoderRepository.GetEncoder: the manifest, the chunks, NOT_FOUND, DATA_LOSS when a served file changed; a real ferserver registers it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from pathlib import Path

import grpc
import pytest

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
from ferserver.repository import CHUNK_BYTES, SERVICE, EncoderRepositoryServicer, add_to_server
from ferwire.edge_bundle import bundle_sha256
from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR, ModelCard

from ..conftest import ServerProcess

EDGE = ["MODEL_CARD.md", "encoder.onnx", "model.json", "tables.npz"]


def model_copy(dst: Path, weights: bool = False, tag_xor: int = 0x0100) -> ModelCard:
    """fercodec-v1 copied to dst under a model id and tag no bundled model has (so the client has no local copy of it).

    The tag is only a name for the model (export derives it from the tables and analysis weights; nothing
    re-derives it on load), so the copy decodes its own bitstreams exactly like the original.
    """
    dst.mkdir(parents=True)
    for f in DEFAULT_MODEL_DIR.iterdir():
        if f.suffix != ".pt" or weights:
            shutil.copy2(f, dst / f.name)
    meta = json.loads((dst / "model.json").read_text())
    meta["model_tag"] ^= tag_xor
    meta["model_id"] = f"fercodec-test-{meta['model_tag']:04x}"
    (dst / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return ModelCard.load(dst)


class InProcess:
    """EncoderRepository alone on a grpc.aio server in a background thread (no torch, no ferserver process)."""

    def __init__(self, cards, servicer: type = EncoderRepositoryServicer):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            server = grpc.aio.server()
            self.servicer = servicer(list(cards))
            pb_grpc.add_EncoderRepositoryServicer_to_server(self.servicer, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server, port

        self.server, port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(20)
        self.address = f"127.0.0.1:{port}"

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(20)
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _get(address: str, model_id: str = "") -> list[pb.EncoderChunk]:
    with grpc.insecure_channel(address) as ch:
        return list(pb_grpc.EncoderRepositoryStub(ch).GetEncoder(pb.GetEncoderRequest(model_id=model_id), timeout=30))


@pytest.fixture(scope="module")
def bundled():
    with InProcess([ModelCard.load(DEFAULT_MODEL_DIR), ModelCard.load(EXPRESSION_MODEL_DIR)]) as s:
        yield s


def test_manifest_lists_the_edge_files_with_their_sha256_never_weights(card, expression_card):
    s = EncoderRepositoryServicer([card, expression_card])
    assert list(s.bundles) == [card.model_id, expression_card.model_id] and s.default == card.model_id
    for c in (card, expression_card):
        m = s.bundles[c.model_id].manifest
        assert (m.model_id, m.model_tag, m.version, m.kind) == (c.model_id, c.model_tag, c.version, c.kind)
        assert [f.name for f in m.files] == EDGE  # no codec.pt / classifier.pt / expression.pt
        for f in m.files:
            data = (c.path / f.name).read_bytes()
            assert f.size == len(data) and f.sha256 == hashlib.sha256(data).hexdigest()
        listing = "".join(f"{f.sha256}  {f.name}\n" for f in m.files)  # what `sha256sum` prints
        assert m.bundle_sha256 == hashlib.sha256(listing.encode()).hexdigest() == bundle_sha256((f.name, f.sha256) for f in m.files)
        assert m.total_bytes == sum(f.size for f in m.files)


def test_stream_is_the_manifest_then_every_file_in_order(bundled, card, expression_card):
    for asked, c in (("", card), (card.model_id, card), (expression_card.model_id, expression_card), ("fercodec-v1-expr", expression_card)):
        msgs = _get(bundled.address, asked)
        assert msgs[0].WhichOneof("part") == "manifest" and msgs[0].manifest.model_id == c.model_id
        got: dict[str, bytearray] = {}
        for m in msgs[1:]:
            assert m.WhichOneof("part") == "chunk" and 0 < len(m.chunk.data) <= CHUNK_BYTES
            buf = got.setdefault(m.chunk.name, bytearray())
            assert m.chunk.offset == len(buf)
            buf += m.chunk.data
        assert list(got) == [f.name for f in msgs[0].manifest.files] == EDGE
        assert all(bytes(got[n]) == (c.path / n).read_bytes() for n in got)


def test_unknown_model_is_not_found_and_names_the_served_ones(bundled, card, expression_card):
    with pytest.raises(grpc.RpcError) as e:
        _get(bundled.address, "fercodec-v9-0000")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "fercodec-v9-0000" in e.value.details() and card.model_id in e.value.details() and expression_card.model_id in e.value.details()


def test_a_file_changed_after_start_is_data_loss(tmp_path):
    copy = model_copy(tmp_path / "m")
    with InProcess([copy]) as s:
        onnx = copy.path / "encoder.onnx"
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the hash tells
        onnx.write_bytes(bytes(data))
        with pytest.raises(grpc.RpcError) as e:
            _get(s.address)
        assert e.value.code() == grpc.StatusCode.DATA_LOSS and "encoder.onnx" in e.value.details() and "restart" in e.value.details()
        onnx.write_bytes(onnx.read_bytes() + b"x")  # longer
        with pytest.raises(grpc.RpcError) as e:
            _get(s.address)
        assert e.value.code() == grpc.StatusCode.DATA_LOSS


def test_a_model_without_an_encoder_is_left_out(tmp_path, card):
    copy = model_copy(tmp_path / "m")
    (copy.path / "encoder.onnx").unlink()
    s = EncoderRepositoryServicer([copy, card])
    assert list(s.bundles) == [card.model_id] and s.default is None  # the first model has nothing to pull: "" is NOT_FOUND


def test_add_to_server_returns_the_service_name(card):
    async def go():
        server = grpc.aio.server()
        return add_to_server(server, [card])

    assert asyncio.run(go()) == SERVICE == "fercodec.v1.EncoderRepository"


@pytest.mark.slow
def test_ferserver_serves_encoders_and_lists_them_in_reflection(tmp_path, card):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    copy = model_copy(tmp_path / "m", weights=True)
    with ServerProcess("--model-dir", f"{copy.path},{DEFAULT_MODEL_DIR}") as server:
        with grpc.insecure_channel(server.address) as ch:
            refl = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            assert SERVICE in {s.name for s in next(refl).list_services_response.service}
        msgs = _get(server.address)  # the first --model-dir
        assert msgs[0].manifest.model_id == copy.model_id and msgs[0].manifest.model_tag == copy.model_tag
        assert _get(server.address, card.model_id)[0].manifest.model_id == card.model_id
        with pytest.raises(grpc.RpcError) as e:
            _get(server.address, "nope")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        metrics = server.metrics()
        assert 'fercodec_requests_total{code="OK",method="GetEncoder"} 2.0' in metrics
        assert 'fercodec_requests_total{code="NOT_FOUND",method="GetEncoder"} 1.0' in metrics
