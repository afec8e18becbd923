"""What a user would run instead of fercodec, as real gRPC servers, for `make bench` (issue 18).

Both speak the fercodec.v1 proto, so the wire cost compares face for face:
RecognizeRequest.faces carries each baseline's own bytes.

- naive: what a CompressAI user writes. The client runs `model.compress` (the
  image codec's networks at its default quality as a CompressAI model, entropy
  tables from CompressAI's `update()`), and sends the one string with the
  latent's shape (2 bytes: height, width). The server runs `model.decompress`
  then the classifier, one face at a time on one worker thread, no batching.
- jpeg: a JPEG-upload service. The client sends the JPEG file (Pillow,
  optimize=True, as fereval's baseline writes it); the server decodes it with
  Pillow and runs the same classifier, batched by ferserver.batcher.Batcher
  with ferserver's max batch and wait.

The classifier is the one the image codec's server uses (models/weights/
fercodec-v1/classifier.pt), fed [0,1] pixels and mirror-averaged, its
probabilities prior-corrected and tempered as the model card says, as ferserver's engine does.
jpeg runs it as the engine does on a CPU (the model's int8 classifier,
fermodels.quantize, where it has one; else fermodels.bundle.for_inference:
BatchNorm folded, channels-last; one torch thread for a small batch after
a pause, ferserver.engine.Threads), so the two compare transport and decoding,
not the runtime; naive runs it as loaded, as a CompressAI user would. Both
load their networks on a passing thread and take ferserver's OpenMP settings
(ferserver.engine.on_passing_thread, ferserver.config.runtime_defaults): a
trap in the runtime is not what either baseline stands for.

    python scripts/bench_baselines.py naive|jpeg --port P [--threads N] [--max-batch B] [--max-wait-ms W]

prints "bench baseline KIND ready on HOST:PORT" once it serves, and drains on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fermodels import argtypes
from ferserver.process import ServerProcess

KINDS = ("naive", "jpeg")
JPEG_OPTIONS = {"optimize": True}  # fermodels.evaluation.baselines' JPEG, bar the quality
# docs/results measured q70 at 1.6 points under uncompressed faces and q90 at 0.2: the search looks between, in steps of 5.
JPEG_CANDIDATES, JPEG_POINTS = (75, 80, 85, 90, 95), 1.0


def image_card():
    """The image codec's model card: the bundled directory ferserver serves first, whatever $FERCODEC_MODEL_DIR says."""
    from ferwire.card import DEFAULT_MODEL_DIR, ModelCard

    return ModelCard.load(DEFAULT_MODEL_DIR)


def compressai_model(card=None, quality: int | None = None):
    """The image codec's networks at one quality, written as a CompressAI user writes a model.

    Why build it: FaceCodec codes with fercodec's own tables and bitstream. The
    naive baseline is the same networks through CompressAI's API instead:
    g_a, an EntropyBottleneck, g_s, compress/decompress as CompressAI's
    FactorizedPrior has them, and `update()` to build the CDF tables.
    """
    from compressai.models import CompressionModel

    from fermodels.bundle import load_torch_models

    card = card or image_card()
    q = card.default_quality if quality is None else quality
    codec, _ = load_torch_models(card)

    class FaceFactorizedPrior(CompressionModel):
        def __init__(self):
            super().__init__()
            self.g_a, self.g_s, self.entropy_bottleneck = codec.g_a, codec.g_s, codec.entropy[q]
            self.register_buffer("gain", codec.log_gain[q].detach().exp().view(1, -1, 1, 1))
            self.register_buffer("inv_gain", codec.log_inv_gain[q].detach().exp().view(1, -1, 1, 1))

        def compress(self, x):
            y = self.g_a(x) * self.gain
            return {"strings": [self.entropy_bottleneck.compress(y)], "shape": y.size()[-2:]}

        def decompress(self, strings, shape):
            y_hat = self.entropy_bottleneck.decompress(strings[0], shape)
            return {"x_hat": self.g_s(y_hat * self.inv_gain).clamp_(0, 1)}

    model = FaceFactorizedPrior().eval()
    model.update(force=True)
    model.quality = q
    return model


def pack(string: bytes, shape) -> bytes:
    """One face's compress() output on the wire: latent height and width (1 byte each), then its one string."""
    h, w = (int(v) for v in shape)
    if not (0 < h < 256 and 0 < w < 256):
        raise ValueError(f"latent shape {h}x{w} does not fit the 2-byte header")
    return bytes((h, w)) + string


def unpack(data: bytes) -> tuple[bytes, tuple[int, int]]:
    if len(data) < 3:
        raise ValueError(f"{len(data)} bytes: too short for a shape and a string")
    return data[2:], (data[0], data[1])


def naive_encode(faces: np.ndarray, model=None) -> list[bytes]:
    """The naive client: `model.compress` on uint8 faces [N,48,48], one packed payload per face."""
    import torch

    from fermodels.data import to_tensor

    model = model or compressai_model()
    out = []
    with torch.inference_mode():
        for i in range(0, len(faces), 256):
            c = model.compress(to_tensor(faces[i : i + 256]))
            out += [pack(s, c["shape"]) for s in c["strings"][0]]
    return out


def jpeg_encode(faces: np.ndarray, quality: int) -> list[bytes]:
    """The JPEG client: each face as the JPEG file Pillow writes (what fereval's JPEG baseline measures)."""
    from PIL import Image

    out = []
    for face in faces:
        buf = io.BytesIO()
        Image.fromarray(face, "L").save(buf, "JPEG", quality=quality, **JPEG_OPTIONS)
        out.append(buf.getvalue())
    return out


def jpeg_decode(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The JPEG server's read: Pillow decode to 8-bit grayscale; ValueError unless it is a face of `size`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise ValueError(f"not a JPEG file ({im.format})")
            face = np.asarray(im.convert("L"))
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"not a readable JPEG: {e}") from None
    if face.shape != tuple(size):
        raise ValueError(f"face is {face.shape[1]}x{face.shape[0]}, expected {size[1]}x{size[0]}")
    return face


def classifier_accuracy(clf, faces: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Share of faces the classifier gets right (mirror-averaged, as served)."""
    import torch

    from fermodels.data import to_tensor

    right = 0
    with torch.inference_mode():
        for i in range(0, len(faces), batch_size):
            right += int((clf.probabilities(to_tensor(faces[i : i + batch_size])).argmax(1).numpy() == labels[i : i + batch_size]).sum())
    return right / len(faces)


def pick_jpeg_quality(faces: np.ndarray, labels: np.ndarray, candidates=JPEG_CANDIDATES, points: float = JPEG_POINTS, progress=None) -> dict:
    """The lowest JPEG quality of `candidates` whose accuracy is within `points` of the uncompressed faces', same classifier.

    Measured (not read from docs/results, whose grid jumps from q70 to q90) so the
    choice follows the shipped classifier and this Pillow; candidates are tried in
    increasing order and the search stops at the first that qualifies (the last
    one if none does).
    """
    from fermodels.bundle import load_classifier

    from fermodels.evaluation.baselines import pillow_roundtrip

    clf = load_classifier(image_card().file("classifier.pt"))
    t0 = time.perf_counter()
    base = classifier_accuracy(clf, faces, labels)
    out = {"faces": len(faces), "points": points, "uncompressed_accuracy": base, "tried": []}
    if progress:
        progress(f"JPEG quality: uncompressed {100 * base:.2f} % on {len(faces)} faces")
    for q in sorted(candidates):
        rt = [pillow_roundtrip("jpeg", f, q) for f in faces]
        acc = classifier_accuracy(clf, np.stack([d for _, d in rt]), labels)
        out["tried"].append({"quality": q, "bytes": float(np.mean([s for s, _ in rt])), "accuracy": acc})
        if progress:
            progress(f"JPEG quality: q{q} {100 * acc:.2f} % ({100 * (acc - base):+.2f} points), {out['tried'][-1]['bytes']:.0f} bytes")
        if 100 * (base - acc) <= points + 1e-9:  # a whole point of difference in floats can come out as 1.0000000000000009
            break
    out["quality"] = out["tried"][-1]["quality"]
    out["within"] = 100 * (base - out["tried"][-1]["accuracy"]) <= points + 1e-9
    out["seconds"] = time.perf_counter() - t0
    return out


# ----- the servers -----


class _Classify:
    """The image codec's classifier as ferserver's engine applies it: [0,1] pixels, mirror average, the card's prior correction and temperature;
    with `serving`, run as the engine runs it on a CPU (int8 where the model has it, else folded and channels-last)."""

    def __init__(self, card, threads: int, serving: bool):
        import torch

        from fermodels import quantize
        from fermodels.bundle import for_inference, keep_freed_memory, load_classifier
        from ferserver.engine import Threads

        keep_freed_memory()
        self.threads = Threads(torch, threads)  # jpeg runs each batch in threads.batch(), as the engine does; naive does not
        self.card, self.torch = card, torch
        self.clf = load_classifier(card.file("classifier.pt"))
        if serving:
            self.clf = quantize.load(card) or for_inference(self.clf)

    def __call__(self, x) -> np.ndarray:
        return self.card.served(self.clf.probabilities(x).cpu().numpy())


def _reply(pb, request, card, results: list[tuple[np.ndarray, int]]):
    h, w = card.face_size
    reply = pb.RecognizeResponse(request_id=request.request_id, model_id=card.model_id)
    for p, n in results:
        best = int(p.argmax())
        reply.results.add(label=card.class_names[best], confidence=float(p[best]), probabilities=p.tolist(), bitstream_bytes=n, bits_per_pixel=8.0 * n / (h * w),
                          model_id=card.model_id)
    return reply


async def serve(kind: str, args) -> None:
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
    from fermodels.data import to_tensor

    from ferserver.engine import on_passing_thread

    card = image_card()
    classify = on_passing_thread(lambda: _Classify(card, args.threads, serving=kind == "jpeg"))
    torch = classify.torch

    if kind == "naive":
        model = on_passing_thread(lambda: compressai_model(card))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="naive-model")  # one face at a time

        def work(data: bytes) -> np.ndarray:
            string, shape = unpack(data)
            with torch.inference_mode():
                return classify(model.decompress([[string]], shape)["x_hat"])[0]

        async def recognize(request) -> list:
            loop = asyncio.get_running_loop()
            return [await loop.run_in_executor(pool, work, bytes(d)) for d in request.faces]

        close = pool.shutdown
    else:
        from ferserver.batcher import Batcher

        size = tuple(card.face_size)

        def run(batch: list[bytes]) -> list:
            out: list = [None] * len(batch)
            ok, faces = [], []
            for i, data in enumerate(batch):
                try:
                    faces.append(jpeg_decode(data, size))
                    ok.append(i)
                except ValueError as e:
                    out[i] = e
            if faces:
                with classify.threads.batch(len(faces)), torch.inference_mode():
                    probs = classify(to_tensor(np.stack(faces)))
                for k, i in enumerate(ok):
                    out[i] = probs[k]
            return out

        batcher = Batcher(run, max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1000.0)

        async def recognize(request) -> list:
            return await batcher.submit([bytes(d) for d in request.faces])

        close = batcher.close

    class Servicer(pb_grpc.FerCodecServicer):
        async def Recognize(self, request, context):
            if not request.faces:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request has no faces")
            try:
                probs = await recognize(request)
            except ValueError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            for i, p in enumerate(probs):
                if isinstance(p, Exception):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"face {i}: {p}")
            return _reply(pb, request, card, [(p, len(d)) for p, d in zip(probs, request.faces)])

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 20), ("grpc.so_reuseport", 0)])
    pb_grpc.add_FerCodecServicer_to_server(Servicer(), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    gc.collect()  # as ferserver does: what is loaded by now stays out of the collector's sight (server/main.py)
    gc.freeze()
    print(f"bench baseline {kind} ready on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(5)
    close()


class BaselineProcess(ServerProcess):
    """A baseline server as a child process on a free loopback port, started and stopped as ferserver's ServerProcess is."""

    metrics = None  # the baselines serve no /metrics page (bench.py reads ferserver's stage times only)

    def __init__(self, kind: str, *extra: str, timeout: float = 180.0):
        if kind not in KINDS:
            raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = self.name = kind
        super().__init__(*extra, timeout=timeout)

    def command(self, extra) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), self.kind, "--port", str(self.port), *extra]

    def is_ready(self, line: str) -> bool:
        return f"ready on 127.0.0.1:{self.port}" in line


def main(argv=None) -> int:
    from ferserver.config import Config, max_batch, runtime_defaults

    runtime_defaults()  # as ferserver: before torch loads
    d = Config()
    auto_batch = max_batch(d, "cpu")  # the baselines run on the CPU; ferserver's 0 means auto
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=argtypes.checked(int, lambda v: 0 <= v <= 65535, "0 (any free port) to 65535"), default=0)
    p.add_argument("--threads", type=argtypes.threads, default=d.threads,
                   help=f"torch CPU threads, as ferserver's --threads (default {d.threads}: torch's default)")
    p.add_argument("--max-batch", type=argtypes.count, default=auto_batch, help=f"jpeg: the batcher's max batch (ferserver's default on a CPU, {auto_batch})")
    p.add_argument("--max-wait-ms", type=argtypes.checked(float, lambda v: 0 <= v < float("inf"), "0 or more ms"), default=d.max_wait_ms,
                   help=f"jpeg: the batcher's wait (ferserver's default, {d.max_wait_ms})")
    args = p.parse_args(argv)
    asyncio.run(serve(args.kind, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
