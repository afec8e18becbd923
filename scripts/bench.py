"""make bench: the speed figures README quotes, measured on this machine.

1. `ferclient send` from cold start: wall time and peak RSS (GNU time -v), median
   of --runs runs, against a bare `python -c pass` baseline: a 48x48 face with
   --no-detect, and with face detection and alignment the astronaut photo
   (512x512 PNG) and the same photo blown up to a 12-megapixel JPEG (4032x3024).
2. Server throughput with --clients concurrent clients on loopback (one channel
   each, one face per request, pre-encoded FER2013 PrivateTest faces), with the
   default dynamic batching and with --max-batch 1 as the baseline, in one run;
   then with the expression layer's bitstreams (fercodec-v1-expr), batched.
3. Edge encoding, one face per call on one ONNX Runtime thread (what a small
   device does): the image codec at its default quality against the expression
   layer, whose encoder runs the classifier's front twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def _timed(cmd: list[str]) -> tuple[float, float]:
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    h, m, s = wall.groups()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return (int(h or 0) * 3600 + int(m) * 60 + float(s)), rss / 1024


def cold_start(server: str, inputs: dict[str, list[str]], runs: int) -> dict:
    """Median wall time and worst peak RSS of `ferclient send ARGS` for each named input, and of a bare python."""
    base = [_timed([sys.executable, "-c", "pass"]) for _ in range(runs)]
    out = {"runs": runs, "python_wall_s": statistics.median(w for w, _ in base), "python_peak_rss_mb": max(r for _, r in base), "client": {}}
    for name, args in inputs.items():
        meas = [_timed([str(BIN / "ferclient"), "send", *args, "--server", server]) for _ in range(runs)]
        out["client"][name] = {"wall_s": statistics.median(w for w, _ in meas), "peak_rss_mb": max(r for _, r in meas)}
    return out


async def _load(address: str, streams: list[bytes], clients: int, seconds: float) -> dict:
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def one(k: int) -> None:
        async with grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.FerCodecStub(ch)
            i = k
            while time.perf_counter() < stop:
                t = time.perf_counter()
                await stub.Recognize(pb.RecognizeRequest(faces=[streams[i % len(streams)]]), timeout=30)
                latencies.append(time.perf_counter() - t)
                i += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(clients)))
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"faces": len(lat), "faces_per_s": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def throughput(streams: list[bytes], clients: int, seconds: float, extra: list[str]) -> dict:
    from ferserver.process import ServerProcess

    with ServerProcess(*extra) as s:
        asyncio.run(_load(s.address, streams[:64], clients, 1.0))  # warm-up
        return asyncio.run(_load(s.address, streams, clients, seconds))


def edge_encode_ms(faces: np.ndarray, model: str | None) -> float:
    """Median milliseconds to encode one face into a bitstream (ONNX Runtime, 1 thread), over `faces`."""
    from ferclient.encoder import FaceEncoder

    enc = FaceEncoder(model, threads=1)
    enc.encode(faces[:8])  # warm-up
    times = []
    for f in faces:
        t0 = time.perf_counter()
        enc.encode(f[None])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def encoder_macs(model: str | None) -> int:
    """Multiply-adds of a model's edge encoder (its convolutions) for one 48x48 face."""
    import torch
    from torch import nn

    from fermodels.bundle import load_expression, load_torch_models
    from ferwire.card import ModelCard

    card = ModelCard.load(model)
    encoder = load_expression(card).encoder if card.kind == "expression" else load_torch_models(card)[0].g_a
    total = 0

    def count(m, _, out):
        nonlocal total
        total += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        encoder(torch.rand(1, 1, 48, 48))
    for h in hooks:
        h.remove()
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=5, help="cold-start runs")
    p.add_argument("--quality", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    from PIL import Image

    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split
    from ferserver.process import ServerProcess

    faces, _ = load_split("test", limit=512)
    enc = FaceEncoder()
    streams = enc.encode(faces, args.quality)
    out = {"machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs", "command": " ".join(sys.argv), "model": enc.card.model_id}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as s:
        import skimage.data

        face, photo, big = Path(tmp) / "face.png", Path(tmp) / "astronaut.png", Path(tmp) / "astronaut_12mp.jpg"
        Image.fromarray(faces[0]).save(face)
        Image.fromarray(skimage.data.astronaut()).save(photo)
        Image.fromarray(skimage.data.astronaut()).resize((4032, 4032), Image.Resampling.BICUBIC).crop((0, 504, 4032, 3528)).save(big, quality=90)
        inputs = {"face.png --no-detect": [str(face), "--no-detect"], "astronaut.png (512x512), detect + align": [str(photo)],
                  "astronaut_12mp.jpg (4032x3024), detect + align": [str(big)]}
        out["cold_start"] = cold_start(s.address, inputs, args.runs)
    out["batched"] = throughput(streams, args.clients, args.seconds, [])
    out["unbatched"] = throughput(streams, args.clients, args.seconds, ["--max-batch", "1"])
    out["speedup"] = out["batched"]["faces_per_s"] / out["unbatched"]["faces_per_s"]
    out["expression_batched"] = throughput(FaceEncoder("fercodec-v1-expr").encode(faces), args.clients, args.seconds, [])
    out["edge_encode_ms"] = {"image": edge_encode_ms(faces[:200], None), "expression": edge_encode_ms(faces[:200], "fercodec-v1-expr")}
    out["edge_encoder_macs"] = {"image": encoder_macs(None), "expression": encoder_macs("fercodec-v1-expr")}

    c = out["cold_start"]
    print(f"machine: {out['machine']}; model {out['model']}")
    for name, r in c["client"].items():
        print(f"ferclient send {name}, cold: {r['wall_s']:.2f} s wall, {r['peak_rss_mb']:.0f} MB peak RSS (median of {c['runs']})")
    print(f"bare python -c pass: {c['python_wall_s']:.2f} s, {c['python_peak_rss_mb']:.0f} MB")
    labels = {"batched": "dynamic batching (default)", "unbatched": "baseline --max-batch 1", "expression_batched": "expression layer, dynamic batching"}
    for name, label in labels.items():
        r = out[name]
        print(f"{args.clients} clients, {label}: {r['faces_per_s']:.0f} faces/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms ({r['faces']} faces)")
    print(f"batching speed-up: {out['speedup']:.2f}x")
    e = out["edge_encode_ms"]
    print(f"edge encode, one face, 1 thread: image codec {e['image']:.2f} ms, expression layer {e['expression']:.2f} ms ({e['expression'] / e['image']:.1f}x)")
    m = out["edge_encoder_macs"]
    print(f"edge encoder multiply-adds per face: image codec {m['image'] / 1e6:.1f} M, expression layer {m['expression'] / 1e6:.1f} M ({m['expression'] / m['image']:.1f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
