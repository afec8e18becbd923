"""Model work: entropy-decode a batch of bitstreams, synthesise, classify.

Runs only on the batcher's worker thread, never on the event loop.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

import numpy as np

from fermodels.bitstream import BitstreamError, decode
from fermodels.entropy import EntropyTables
from fermodels.bundle import ModelCard, keep_freed_memory, load_torch_models, pick_device


@dataclass
class FaceOutput:
    label: str
    confidence: float
    probabilities: list[float]
    quality: int
    bitstream_bytes: int
    bits_per_pixel: float
    reconstruction_png: bytes = b""


@dataclass(frozen=True)
class FaceJob:
    bitstream: bytes
    want_reconstruction: bool = False


class Engine:
    """Loads the model directory once; `run` turns FaceJobs into FaceOutputs or BitstreamErrors."""

    def __init__(self, card: ModelCard, device: str = "auto", threads: int = 0, metrics=None):
        import torch

        self.device = pick_device(device)
        keep_freed_memory()
        if threads:
            torch.set_num_threads(threads)
        if self.device == "cuda":
            # Decoded symbols are exact whatever the device; these keep the
            # reconstruction and the label repeatable too.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.card = card
        self.tables = EntropyTables.load(card.file("tables.npz"))
        self.codec, self.classifier = load_torch_models(card, self.device)
        self.metrics = metrics
        self._torch = torch
        for q in range(self.tables.num_qualities):
            self.tables.plan(q)  # build the coding plans now, not on the first request

    def _observe(self, stage: str, t0: float) -> float:
        t1 = time.perf_counter()
        if self.metrics:
            self.metrics.stage_seconds.labels(stage).observe(t1 - t0)
        return t1

    def run(self, jobs: list[FaceJob]) -> list[FaceOutput | BitstreamError]:
        torch = self._torch
        out: list[FaceOutput | BitstreamError | None] = [None] * len(jobs)
        t = time.perf_counter()
        by_quality: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i, job in enumerate(jobs):
            try:
                header, z = decode(job.bitstream, self.tables, self.card.model_tag)
            except BitstreamError as e:
                out[i] = e
                continue
            by_quality.setdefault(header.quality, []).append((i, z))
        t = self._observe("entropy_decode", t)
        if not by_quality:
            return out
        order, recon = [], []
        with torch.inference_mode():
            for q, items in sorted(by_quality.items()):
                recon.append(self.codec.reconstruct(np.stack([z for _, z in items]), self.tables, q))
                order += [(i, q) for i, _ in items]
            x_hat = torch.cat(recon)
            t = self._observe("synthesis", t)
            probs = self.classifier.probabilities(x_hat).cpu().numpy()
            t = self._observe("classify", t)
            pixels = (x_hat[:, 0] * 255.0).round_().to(torch.uint8).cpu().numpy() if any(jobs[i].want_reconstruction for i, _ in order) else None
        names = self.card.class_names
        h, w = self.card.face_size
        for k, (i, q) in enumerate(order):
            p = probs[k]
            best = int(p.argmax())
            n = len(jobs[i].bitstream)
            out[i] = FaceOutput(names[best], float(p[best]), p.tolist(), q, n, 8.0 * n / (h * w), _png(pixels[k]) if jobs[i].want_reconstruction else b"")
        return out


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()
