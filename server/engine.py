"""Model work: entropy-decode a batch of bitstreams, synthesise, classify.

Runs only on the batcher's worker thread, never on the event loop. One engine
serves several model directories; each bitstream's header tag picks its model.
Entropy decoding runs in this thread or, with decode workers (server/decoding.py;
the default on a GPU), in worker processes.
Image models reconstruct the face and classify it; the expression layer
classifies its latent directly (fermodels.expression) and has no image to return.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from fermodels.bundle import bf16_native, for_inference, keep_freed_memory, load_expression, load_torch_models, pick_device
from ferwire.bitstream import BitstreamError, parse_header
from ferwire.card import ModelCard
from ferwire.entropy import EntropyTables

from .decoding import DecodePool, auto_workers, decode_batch

WARM_S = 0.002  # a batch ending less than this before the next one leaves OpenMP's threads awake for it (Threads)
SMALL_BATCH = 4  # faces; a batch this small runs on one thread after a pause (Threads)
BUSY_STREAK = 3  # batches back to back that make a busy server (Threads)
POOL_MIN_FACES = 8  # smaller batches decode in-thread: a round trip to the workers costs about what 1-2 faces do

log = logging.getLogger("ferserver")
T = TypeVar("T")


def on_passing_thread(make: Callable[[], T]) -> T:
    """make() run on a thread of its own that ends when make returns; its result, or its exception re-raised.

    Why: libgomp, torch's OpenMP runtime on Linux, keeps a pool of threads for every thread that ran a parallel region,
    until that thread ends, and once the pools hold more threads than there are cores its threads stop spinning between
    regions and sleep instead, so each of a network's regions pays a wake-up. Loading the models runs such regions;
    done on the event loop's thread, that pool stayed beside the model worker's. One face on two threads took 3.5 ms
    on the worker then, 1.4 ms with the loading thread gone, 2.0 on one thread (`python scripts/openmp_threads.py`,
    2-core VM). Build whatever runs torch here (Engine, the baselines' networks), then run it on one worker thread."""
    box: list = []

    def target() -> None:
        try:
            box.append((True, make()))
        except BaseException as e:  # re-raised on the caller's thread, where it means something
            box.append((False, e))

    t = threading.Thread(target=target, name="fercodec-load")
    t.start()
    t.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value


class Threads:
    """torch's CPU threads for each batch: `threads` (0: torch's default, one per core) for more than SMALL_BATCH faces;
    for fewer, two while batches are coming back to back (BUSY_STREAK in a row, each within WARM_S of the last one's
    end) or within WARM_S of the last batch run on several threads, else one.

    Why: on both cores of the 2-core VM one face took 1.4 ms against 2.0 on one, a batch of 8 faces 6.2 against 10.0,
    while OpenMP's second thread is awake. libgomp spins for it between parallel regions (GOMP_SPINCOUNT,
    ferserver.config.runtime_defaults), then puts it to sleep, and waking it after 5 ms or more of sleep cost about
    5 ms on this VM: one face after a 5 ms pause took 7.0 ms on two threads (`python scripts/openmp_threads.py`).
    A small batch after a pause has too little work to be worth that; a larger one or a busy server is. Two, not
    every core, for a small batch: a lone face has little to split, and more cores than two were never measured.
    Use `with threads.batch(n):` around the model work, on the thread that runs it."""

    def __init__(self, torch, threads: int = 0, clock: Callable[[], float] = time.monotonic):
        if threads:
            torch.set_num_threads(threads)
        self._torch, self.threads, self._clock = torch, torch.get_num_threads(), clock
        self._ended = self._ended_parallel = float("-inf")  # when the last batch, and the last one on several threads, ended
        self._streak = 0  # batches in a row that began within WARM_S of the last one's end

    def use(self, n: int) -> None:
        """n threads from now on this thread."""
        if self._torch.get_num_threads() != n:
            self._torch.set_num_threads(n)

    @contextmanager
    def batch(self, n: int):
        """n faces' model work on the threads they should get."""
        now = self._clock()
        self._streak = self._streak + 1 if now - self._ended < WARM_S else 0
        if n > SMALL_BATCH:
            parallel, want = True, self.threads
        else:
            parallel = self._streak >= BUSY_STREAK or now - self._ended_parallel < WARM_S
            want = min(self.threads, 2) if parallel else 1
        self.use(want)
        try:
            yield
        finally:
            self._ended = self._clock()
            if parallel:
                self._ended_parallel = self._ended


@dataclass
class FaceOutput:
    label: str
    confidence: float
    probabilities: list[float]
    quality: int
    bitstream_bytes: int
    bits_per_pixel: float
    reconstruction_png: bytes = b""
    model_id: str = ""


@dataclass(frozen=True)
class FaceJob:
    bitstream: bytes
    want_reconstruction: bool = False


class _Model:
    """One loaded model directory: its tables and networks."""

    def __init__(self, card: ModelCard, device: str, threads: Threads, classifier_precision: str = "fp32", synthesis_precision: str = "fp32"):
        self.card = card
        # Image models: "int8" or "fp32" (the classifier), "bf16" or "fp32" (synthesis); None for the expression layer.
        self.classifier_precision = self.synthesis_precision = None
        self.tables = EntropyTables.load(card.file("tables.npz"))
        # for_inference: BatchNorm folded, channels-last (about 1.3x faster on a CPU)
        self.runtime = "torch"  # what runs the expression layer's decoder: "onnxruntime" on a CPU where it loads
        if card.kind == "expression":
            self.expression, self.codec, self.classifier = for_inference(load_expression(card, device)), None, None
            onnx = _onnx_decoder(self.expression, self.tables, threads) if device == "cpu" else None
            if onnx is not None:
                self.expression, self.runtime = onnx, "onnxruntime"
        else:
            self.expression = None
            codec, classifier = load_torch_models(card, device)
            self.classifier = _int8(card, device, classifier_precision) or for_inference(classifier)
            self.classifier_precision = getattr(self.classifier, "precision", "fp32")
            self.synthesis_precision = _synthesis(device, synthesis_precision)
            # On a CPU the synthesis' last layer runs as a sub-pixel convolution (fermodels.codec.SubPixelConv), channels-last
            # for bfloat16 (the layout oneDNN's bfloat16 kernels want), contiguous for float32 (channels-last float32 GDN was
            # several times slower); on CUDA the network as loaded.
            bf16 = self.synthesis_precision == "bf16"
            self.codec = codec if device != "cpu" else for_inference(codec, channels_last=bf16, bf16=bf16)
            if bf16:
                import torch

                with torch.inference_mode():  # oneDNN builds its bfloat16 kernels per batch shape and thread count: the common ones now
                    for n in (1, 8):
                        for k in sorted({1, min(threads.threads, 2), threads.threads}):  # the counts Threads.batch uses
                            threads.use(k)
                            self.codec.reconstruct(np.zeros((n, *self.tables.latent_shape), np.int32), self.tables, 0)
        self.tables.prepare()  # the coding plans now, not on the first request

    def precisions(self) -> dict[str, str]:
        """What GetModelInfo and fercodec_model_info report of an image model (nothing of the expression layer)."""
        if self.expression is not None:
            return {}
        return {"classifier_precision": self.classifier_precision, "synthesis_precision": self.synthesis_precision}

    def describe(self) -> str:
        """How this model runs, for the ready line: the image model's precisions, the expression layer's runtime."""
        if self.expression is not None:
            return f"decoder on {self.runtime}"
        return f"classifier {self.classifier_precision}, synthesis {self.synthesis_precision}"


def _onnx_decoder(codec, tables: EntropyTables, threads: Threads):
    """The expression layer's decoder on ONNX Runtime (fermodels.expression.OnnxExpressionDecoder), or None, with a
    warning, where it cannot be built: then PyTorch serves it, slower for small batches, with the same answers."""
    from fermodels.expression import OnnxExpressionDecoder

    try:
        return OnnxExpressionDecoder(codec, tables.latent_shape, threads.threads)
    except Exception as e:  # no onnx package (the exporter needs it), an ONNX Runtime that refuses the graph
        log.warning("expression layer served by PyTorch, not ONNX Runtime: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def _synthesis(device: str, precision: str) -> str:
    """--synthesis-precision resolved for the device: bf16 where asked, or (auto) on a CPU with bfloat16 in hardware."""
    native = device == "cpu" and bf16_native()
    if precision == "bf16":
        if device != "cpu":
            raise ValueError(f"--synthesis-precision bf16 runs on a CPU only, and the device is {device}")
        if not native:
            log.warning("--synthesis-precision bf16 on a CPU without bfloat16 in hardware: slower than fp32 here")
        return "bf16"
    return "bf16" if precision == "auto" and native else "fp32"


def _int8(card: ModelCard, device: str, precision: str):
    """The model's int8 classifier where --classifier-precision and the device ask for it, else None (float)."""
    from fermodels import quantize

    if precision == "fp32" or (precision == "auto" and device != "cpu"):
        return None
    if device != "cpu":
        raise ValueError(f"--classifier-precision int8 runs on a CPU only, and the device is {device}")
    found = quantize.load(card, log.warning if precision == "auto" else None)
    if found is None and precision == "int8":
        raise ValueError(f"{card.model_id} has no usable int8 classifier (python -m fermodels.quantize {card.path}); "
                         "serve it with --classifier-precision fp32 or auto")
    return found


class Engine:
    """Loads the model directories once; `run` turns FaceJobs into FaceOutputs or BitstreamErrors."""

    def __init__(self, cards: ModelCard | list[ModelCard], device: str = "auto", threads: int = 0, metrics=None, decode_workers: int = -1,
                 classifier_precision: str = "fp32", synthesis_precision: str = "fp32"):
        import torch

        self.device = pick_device(device)
        keep_freed_memory()
        self.threads = Threads(torch, threads)
        if self.device == "cuda":
            # Decoded symbols are exact whatever the device; these keep the
            # reconstruction and the label repeatable too.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        cards = [cards] if isinstance(cards, ModelCard) else list(cards)
        self.models: dict[int, _Model] = {}
        for card in cards:
            if card.model_tag in self.models:
                raise ValueError(f"models {self.models[card.model_tag].card.model_id} and {card.model_id} share tag {card.model_tag:#06x}: serve one of them")
            self.models[card.model_tag] = _Model(card, self.device, self.threads, classifier_precision, synthesis_precision)
        self.card = cards[0]  # what GetModelInfo leads with
        self._tables = {tag: m.tables for tag, m in self.models.items()}
        self.metrics = metrics
        self._torch = torch
        self.decode_workers = auto_workers(self.device, decode_workers)
        self._pool = DecodePool({t: str(m.card.file("tables.npz")) for t, m in self.models.items()}, self.decode_workers) if self.decode_workers else None

    def close(self) -> None:
        """Stop the decode workers (the server calls this once the batcher has drained)."""
        if self._pool:
            self._pool.close()
            self._pool = None

    def _model(self, data: bytes) -> _Model:
        tag = parse_header(data).model_tag
        model = self.models.get(tag)
        if model is None:
            serving = ", ".join(f"{m.card.model_id} ({t:#06x})" for t, m in self.models.items())
            raise BitstreamError(f"face encoded for model tag {tag:#06x}; this server runs {serving}; update the client's model", "precondition")
        return model

    def _decode_all(self, items: list[tuple[int, bytes]]) -> list[tuple[int, np.ndarray] | BitstreamError]:
        """(model tag, bitstream) -> (quality, symbols) or the decoder's refusal, in order."""
        if self._pool and len(items) >= POOL_MIN_FACES:
            return self._pool.decode(items)
        return decode_batch(items, self._tables)

    def _observe(self, stage: str, t0: float) -> float:
        t1 = time.perf_counter()
        if self.metrics:
            self.metrics.stage_seconds.labels(stage).observe(t1 - t0)
        return t1

    def run(self, jobs: list[FaceJob]) -> list[FaceOutput | BitstreamError]:
        with self.threads.batch(len(jobs)):
            return self._run(jobs)

    def _run(self, jobs: list[FaceJob]) -> list[FaceOutput | BitstreamError]:
        torch = self._torch
        out: list[FaceOutput | BitstreamError | None] = [None] * len(jobs)
        t = time.perf_counter()
        groups: dict[int, dict[int, list[tuple[int, np.ndarray]]]] = {}  # model tag -> quality -> (job, symbols)
        pending: list[tuple[int, int]] = []  # (job, model tag) of the bitstreams to decode
        for i, job in enumerate(jobs):
            try:
                model = self._model(job.bitstream)
                if job.want_reconstruction and model.expression is not None:
                    raise BitstreamError(f"model {model.card.model_id} is the expression layer: it codes no image, so there is no reconstruction to return; "
                                         "ask without one, or encode with an image model", "precondition")
            except BitstreamError as e:
                out[i] = e
                continue
            pending.append((i, model.card.model_tag))
        for (i, tag), d in zip(pending, self._decode_all([(tag, jobs[i].bitstream) for i, tag in pending])):
            if isinstance(d, BitstreamError):
                out[i] = d
            else:
                groups.setdefault(tag, {}).setdefault(d[0], []).append((i, d[1]))
        t = self._observe("entropy_decode", t)
        results: list[tuple[int, int, _Model, np.ndarray, np.ndarray | None]] = []  # (job, quality, model, probabilities, pixels)
        with torch.inference_mode():
            for tag, by_quality in groups.items():
                model = self.models[tag]
                mine = sorted(by_quality.items())
                if model.expression is not None:
                    for q, items in mine:
                        probs = model.card.served(model.expression.probabilities(np.stack([z for _, z in items]), model.tables).cpu().numpy())
                        results += [(i, q, model, probs[k], None) for k, (i, _) in enumerate(items)]
                    t = self._observe("classify", t)
                    continue
                recon, order = [], []
                for q, items in mine:  # one synthesis call per quality, one classifier batch for all
                    recon.append(model.codec.reconstruct(np.stack([z for _, z in items]), model.tables, q))
                    order += [(i, q) for i, _ in items]
                x_hat = torch.cat(recon)
                t = self._observe("synthesis", t)
                probs = model.card.served(model.classifier.probabilities(x_hat).cpu().numpy())  # the whole batch at once
                t = self._observe("classify", t)
                pixels = (x_hat[:, 0] * 255.0).round_().to(torch.uint8).cpu().numpy() if any(jobs[i].want_reconstruction for i, _ in order) else None
                results += [(i, q, model, probs[k], pixels[k] if pixels is not None else None) for k, (i, q) in enumerate(order)]
        for i, q, model, p, pix in results:
            names = model.card.class_names
            h, w = model.card.face_size
            best = int(p.argmax())
            n = len(jobs[i].bitstream)
            png = _png(pix) if jobs[i].want_reconstruction else b""
            out[i] = FaceOutput(names[best], float(p[best]), p.tolist(), q, n, 8.0 * n / (h * w), png, model.card.model_id)
        return out


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()
