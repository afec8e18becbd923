"""Engine with decode worker processes answers exactly as with in-thread decoding, refusals included."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ferwire.bitstream import BitstreamError


@pytest.fixture(scope="module")
def bitstreams(fer_test):
    from ferclient.encoder import FaceEncoder
    from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR

    faces = fer_test[0][:40]
    image = FaceEncoder(str(DEFAULT_MODEL_DIR)).encode(faces)
    expr = FaceEncoder(str(EXPRESSION_MODEL_DIR)).encode(faces[:10])
    good = image + expr
    corrupt = good[3][:6] + bytes(b ^ 0x5A for b in good[3][6:])
    unknown_tag = good[5][:1] + b"\x00\x01" + good[5][3:]
    return good + [corrupt, b"\x01", unknown_tag]


def _engine(workers):
    from ferserver.config import Config, model_cards
    from ferserver.engine import Engine

    return Engine(model_cards(Config()), "cpu", decode_workers=workers)


def test_decode_workers_give_the_in_thread_answers(bitstreams):
    from ferserver.engine import FaceJob

    jobs = [FaceJob(b) for b in bitstreams]
    inline, pooled = _engine(0), _engine(2)
    try:
        assert pooled.decode_workers == 2 and inline.decode_workers == 0
        a, b = inline.run(jobs), pooled.run(jobs)
    finally:
        pooled.close()
    assert len(a) == len(b) == len(jobs)
    refused = 0
    for x, y in zip(a, b):
        assert type(x) is type(y)
        if isinstance(x, BitstreamError):
            refused += 1
            assert (str(x), x.kind) == (str(y), y.kind)
        else:
            assert (x.label, x.quality, x.model_id, x.bitstream_bytes) == (y.label, y.quality, y.model_id, y.bitstream_bytes)
            np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-6)
    assert refused >= 2  # the 1-byte and the unknown-tag bitstreams at least; the corrupt one may decode to other symbols
    assert any(isinstance(x, BitstreamError) and x.kind == "precondition" for x in b)  # the unknown tag keeps its kind


def test_auto_decode_workers_by_device():
    from ferserver.decoding import auto_workers

    assert auto_workers("cpu", -1) == 0
    assert auto_workers("cpu", 3) == 3
    assert 0 <= auto_workers("cuda", -1) <= 16


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_a_server_with_decode_workers_answers_and_stops_them(bitstreams):
    """The real ferserver with --decode-workers 2: a 40-face call goes through the workers, every answer matches the
    in-thread server's, and SIGTERM leaves no worker behind."""
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
    from ferserver.process import ServerProcess

    faces = bitstreams[:40]
    answers = {}
    for workers in ("0", "2"):
        with ServerProcess("--device", "cpu", "--decode-workers", workers, "--max-batch", "64", "--max-wait-ms", "50") as s:
            kids = s.children()
            with grpc.insecure_channel(s.address) as ch:
                reply = pb_grpc.FerCodecStub(ch).Recognize(pb.RecognizeRequest(faces=faces), timeout=30)
            answers[workers] = [(r.label, round(r.confidence, 5)) for r in reply.results]
            assert s.stop() == 0
        assert len(kids) >= int(workers)
        # The workers are joined before the server exits; multiprocessing's resource tracker exits when it reads EOF
        # on its pipe, which is only after the server has gone, so give orphans a moment instead of racing them.
        deadline = time.monotonic() + 10
        while (alive := [k for k in kids if _running(k)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive, [Path(f"/proc/{k}/cmdline").read_bytes() for k in alive]
    assert answers["0"] == answers["2"] and len(answers["0"]) == 40


def test_a_killed_decode_worker_is_replaced_and_the_batch_answered(bitstreams):
    import os
    import signal

    from ferserver.engine import FaceJob

    jobs = [FaceJob(b) for b in bitstreams[:40]]
    inline, pooled = _engine(0), _engine(2)
    try:
        want = [o.label for o in inline.run(jobs)]
        victim = next(iter(pooled._pool._pool._processes))
        os.kill(victim, signal.SIGKILL)
        got = pooled.run(jobs)
        assert [o.label for o in got] == want
        assert victim not in pooled._pool._pool._processes
    finally:
        pooled.close()


def test_classifier_precision_picks_int8_on_cpu_and_refuses_int8_without_a_file(tmp_path, fer_test):
    """auto serves the model's int8 classifier on a CPU; fp32 the float one; int8 on a model without it does not start."""
    import json
    import shutil

    from ferserver.engine import Engine
    from ferwire.card import DEFAULT_MODEL_DIR, ModelCard

    card = ModelCard.load(DEFAULT_MODEL_DIR)
    auto, fp32 = Engine(card, "cpu", decode_workers=0, classifier_precision="auto"), Engine(card, "cpu", decode_workers=0, classifier_precision="fp32")
    assert next(iter(auto.models.values())).classifier_precision == "int8" and next(iter(fp32.models.values())).classifier_precision == "fp32"
    bare = tmp_path / "no-int8"
    shutil.copytree(card.path, bare)
    meta = json.loads((bare / "model.json").read_text())
    del meta["int8"]
    (bare / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no usable int8 classifier"):
        Engine(ModelCard.load(bare), "cpu", decode_workers=0, classifier_precision="int8")
    assert next(iter(Engine(ModelCard.load(bare), "cpu", decode_workers=0, classifier_precision="auto").models.values())).classifier_precision == "fp32"


def test_bf16_synthesis_answers_as_float32_on_real_faces(fer_test):
    """bfloat16 synthesis (auto's pick on a CPU with it in hardware) reconstructs 256 PrivateTest faces within a few grey
    levels of float32, and the classifier labels them the same nearly always; auto follows the CPU; cuda refuses bf16."""
    import io

    from PIL import Image

    from fermodels.bundle import bf16_native
    from ferserver.engine import Engine, FaceJob, _synthesis
    from ferwire.card import DEFAULT_MODEL_DIR, ModelCard

    from ..conftest import encode_faces

    card = ModelCard.load(DEFAULT_MODEL_DIR)
    jobs = [FaceJob(s, want_reconstruction=True) for s in encode_faces(fer_test[0][:256], card.default_quality)]
    runs = {}
    for precision in ("bf16", "fp32"):
        engine = Engine(card, "cpu", decode_workers=0, classifier_precision="fp32", synthesis_precision=precision)
        assert next(iter(engine.models.values())).synthesis_precision == precision
        runs[precision] = engine.run(jobs)
    pixels = {k: np.stack([np.asarray(Image.open(io.BytesIO(o.reconstruction_png)), np.int16) for o in v]) for k, v in runs.items()}
    assert 0 < np.abs(pixels["bf16"] - pixels["fp32"]).max() <= 4  # bfloat16 rounds: not bit-exact, a few levels of 255 at most
    same = np.mean([a.label == b.label for a, b in zip(runs["bf16"], runs["fp32"])])
    assert same >= 0.95, same
    auto = Engine(card, "cpu", decode_workers=0, classifier_precision="fp32", synthesis_precision="auto")
    assert next(iter(auto.models.values())).precisions() == {"classifier_precision": "fp32", "synthesis_precision": "bf16" if bf16_native() else "fp32"}
    with pytest.raises(ValueError, match="CPU only"):
        _synthesis("cuda", "bf16")
    # float32 synthesis on a CPU: the sub-pixel last layer, in the loaded layout; the loaded codec's pixels to the grey level
    import torch

    from fermodels.bundle import load_torch_models
    from fermodels.codec import SubPixelConv
    from ferserver.decoding import decode_batch

    served = next(iter(engine.models.values())).codec
    assert isinstance(served.g_s[-1], SubPixelConv) and served.g_s[0].weight.is_contiguous()
    loaded, _ = load_torch_models(card)
    symbols = [z for _, z in decode_batch([(card.model_tag, j.bitstream) for j in jobs[:64]], engine._tables)]
    with torch.inference_mode():
        want = loaded.reconstruct(np.stack(symbols), engine._tables[card.model_tag], card.default_quality)
    assert np.abs((want[:, 0] * 255).round().numpy() - pixels["fp32"][:64]).max() <= 1


def test_the_expression_layer_on_onnx_runtime_answers_as_pytorch(fer_test):
    """On a CPU the expression layer's decoder runs on ONNX Runtime, exported at load from the loaded weights: 256 real
    PrivateTest faces, in one batch and a few alone (the one-thread session), get PyTorch's probabilities within float
    rounding and its labels. Without the exporter's onnx package, PyTorch serves, with a warning."""
    import sys

    import torch

    from fermodels.bundle import for_inference, load_expression
    from fermodels.expression import OnnxExpressionDecoder
    from ferserver.decoding import decode_batch
    from ferclient.encoder import FaceEncoder
    from ferserver.engine import Engine, FaceJob
    from ferwire.card import EXPRESSION_MODEL_DIR, ModelCard

    card = ModelCard.load(EXPRESSION_MODEL_DIR)
    engine = Engine(card, "cpu", decode_workers=0)
    model = next(iter(engine.models.values()))
    assert model.runtime == "onnxruntime" and isinstance(model.expression, OnnxExpressionDecoder)
    assert model.describe() == "decoder on onnxruntime"
    jobs = [FaceJob(b) for b in FaceEncoder(str(EXPRESSION_MODEL_DIR)).encode(fer_test[0][:256])]
    served = engine.run(jobs)
    alone = [engine.run([j])[0] for j in jobs[:4]]
    symbols = np.stack([z for _, z in decode_batch([(card.model_tag, j.bitstream) for j in jobs], engine._tables)])
    with torch.inference_mode():
        want = card.served(for_inference(load_expression(card)).probabilities(symbols, model.tables).numpy())
    got = np.array([o.probabilities for o in served])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert [o.label for o in served] == [card.class_names[k] for k in want.argmax(1)]
    np.testing.assert_allclose([o.probabilities for o in alone], got[:4], atol=1e-5)
    saved = sys.modules.get("onnx")
    sys.modules["onnx"] = None  # as an install without it: the exporter fails, PyTorch serves
    try:
        fallback = next(iter(Engine(card, "cpu", decode_workers=0).models.values()))
    finally:
        sys.modules.pop("onnx")
        if saved is not None:
            sys.modules["onnx"] = saved
    assert fallback.runtime == "torch" and not isinstance(fallback.expression, OnnxExpressionDecoder)


def test_a_small_batch_after_a_pause_runs_on_one_thread_and_is_answered_as_in_a_batch(bitstreams):
    """Threads in the engine: a lone face after a pause runs on one torch thread, a batch of 8 on the configured count,
    and a lone face right after it on every thread too; the answers do not depend on it."""
    import torch

    from ferserver.engine import WARM_S, Engine, FaceJob, on_passing_thread
    from ferwire.card import DEFAULT_MODEL_DIR, ModelCard

    before = torch.get_num_threads()
    try:
        engine = on_passing_thread(lambda: Engine(ModelCard.load(DEFAULT_MODEL_DIR), "cpu", threads=2, decode_workers=0))
        jobs = [FaceJob(b) for b in bitstreams[:8]]
        alone = []
        for job in jobs:
            time.sleep(2 * WARM_S)
            alone.append(engine.run([job])[0])
            assert torch.get_num_threads() == 1
        together = engine.run(jobs)
        assert torch.get_num_threads() == 2
        engine.run(jobs[:1])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    # up to the rounding that on some CPUs depends on the batch (tests/server/test_fuzz.py)
    np.testing.assert_allclose([o.probabilities for o in alone], [o.probabilities for o in together], atol=0.02)


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class _Torch:
    """torch's two thread calls, counted: enough for Threads."""

    def __init__(self, n: int = 2):
        self.n = n

    def get_num_threads(self) -> int:
        return self.n

    def set_num_threads(self, n: int) -> None:
        self.n = n


def test_threads_split_a_small_batch_only_when_the_server_is_busy():
    """Threads.batch: one thread for a small batch after a pause; two for the batch after BUSY_STREAK back-to-back ones
    and within WARM_S of the last batch run on several threads; every thread for a large batch."""
    from ferserver.engine import BUSY_STREAK, SMALL_BATCH, WARM_S, Threads

    clock, torch = _Clock(), _Torch(2)
    threads = Threads(torch, clock=clock)

    def run(n: int, pause: float) -> int:
        clock.t += pause
        with threads.batch(n):
            return torch.get_num_threads()

    assert run(1, 1.0) == 1
    assert run(SMALL_BATCH, 1.0) == 1
    assert run(SMALL_BATCH + 1, 1.0) == 2  # enough work to be worth waking the second thread
    assert run(1, WARM_S / 2) == 2  # it is still awake
    assert run(1, 2 * WARM_S) == 1  # asleep again
    seen = [run(1, WARM_S / 2) for _ in range(BUSY_STREAK)]
    assert seen == [1] * (BUSY_STREAK - 1) + [2]  # a busy server: back-to-back batches
    assert run(1, 2 * WARM_S) == 1

    clock, torch = _Clock(), _Torch(8)  # more cores: a small batch gets two of them at most
    threads = Threads(torch, clock=clock)
    assert [run(n, WARM_S / 2) for n in (8, 1, SMALL_BATCH, SMALL_BATCH + 1)] == [8, 2, 2, 8]
    assert run(1, 2 * WARM_S) == 1


def test_on_passing_thread_returns_or_raises_what_make_did():
    import threading

    from ferserver.engine import on_passing_thread

    names = []
    assert on_passing_thread(lambda: names.append(threading.current_thread().name) or 7) == 7
    assert names == ["fercodec-load"]
    with pytest.raises(ValueError, match="no such model"):
        on_passing_thread(lambda: (_ for _ in ()).throw(ValueError("no such model")))
