"""The GPU check (issue 18, part 5): CUDA against the CPU on real PrivateTest bitstreams, and a throughput sweep.

    python scripts/gpu_check.py                        # on a CUDA machine: all 3,589 PrivateTest faces
    python scripts/gpu_check.py --device cpu --faces 200 --seconds 0.5   # the same path on a CPU, quickly

For both bundled models (fercodec-v1, the image codec at its default quality;
fercodec-v1-expr, the expression layer):

1. Encode the faces as the edge client does (ferclient.encoder.FaceEncoder).
2. Agreement: decode and classify every bitstream with a CPU Engine and with an
   Engine on --device. Checks that both decode exactly the symbols the encoder
   quantized (entropy decoding is ferwire's, on the CPU, in both engines: this
   proves the device changes nothing upstream of the networks), that labels agree
   on >= --min-agreement of faces, and reports the largest probability gap (and,
   for the image codec, the largest reconstructed-pixel gap).
3. Sweep: Engine.run on --device for each batch size: faces/s, p50/p99 per batch,
   and the mean time per stage (entropy_decode on the CPU; synthesis, classify on
   the device), which says what bounds the throughput.

Writes gpu_check.json and gpu_check.md to --out; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from fermodels import argtypes

ROOT = Path(__file__).resolve().parent.parent


class StageClock:
    """Collects Engine's per-stage timings (it calls metrics.stage_seconds.labels(stage).observe(s))."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.stage_seconds = self

    def labels(self, stage: str):
        return _Observer(self.seconds[stage])


class _Observer:
    def __init__(self, sink: list[float]):
        self.observe = sink.append


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "cpu_count": os.cpu_count(), "device": device}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env |= {"gpu": p.name, "capability": f"{p.major}.{p.minor}", "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return env


def encode_all(faces: np.ndarray, model_dir, batch: int = 512) -> tuple[list[bytes], np.ndarray, int]:
    """(bitstreams, the symbols the encoder quantized, quality): the client's path, batched."""
    from ferclient.encoder import FaceEncoder

    enc = FaceEncoder(str(model_dir), threads=os.cpu_count() or 1)
    q = enc.check_quality(None)
    streams, symbols = [], []
    for i in range(0, len(faces), batch):
        y = enc.latents(faces[i:i + batch])
        symbols.append(enc.tables.symbols(y, q))
        streams += enc.encode(faces[i:i + batch], q)
    return streams, np.concatenate(symbols), q


def run_engine(engine, streams: list[bytes], batch: int, want_pixels: bool):
    """Labels, probabilities and (image models) reconstructed pixels of every stream, `batch` faces per Engine.run."""
    from PIL import Image
    import io

    from ferserver.engine import FaceJob

    labels, probs, pixels = [], [], []
    for i in range(0, len(streams), batch):
        for out in engine.run([FaceJob(s, want_pixels) for s in streams[i:i + batch]]):
            if isinstance(out, Exception):
                raise out
            labels.append(out.label)
            probs.append(out.probabilities)
            if want_pixels:
                pixels.append(np.asarray(Image.open(io.BytesIO(out.reconstruction_png))))
    return np.array(labels), np.array(probs), (np.stack(pixels) if want_pixels else None)


def agreement(card, streams, symbols, ref, dut, batch: int) -> dict:
    """CPU engine `ref` against device engine `dut` on the same bitstreams."""
    image = card.kind == "image"
    # Through each engine's own decoding path (the device engine's decode workers, where it has them).
    decoded = {name: np.stack([d[1] for d in e._decode_all([(card.model_tag, s) for s in streams])]) for name, e in (("cpu", ref), ("device", dut))}
    t = time.perf_counter()
    l_ref, p_ref, x_ref = run_engine(ref, streams, batch, image)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    l_dut, p_dut, x_dut = run_engine(dut, streams, batch, image)
    t_dut = time.perf_counter() - t
    out = {
        "faces": len(streams),
        "symbols_equal_encoder": bool(np.array_equal(decoded["cpu"], symbols)),
        "symbols_equal_cpu": bool(np.array_equal(decoded["device"], decoded["cpu"])),
        "label_agreement": float((l_ref == l_dut).mean()),
        "label_disagreements": int((l_ref != l_dut).sum()),
        "max_probability_gap": float(np.abs(p_ref - p_dut).max()),
        "cpu_seconds": round(t_ref, 2), "device_seconds": round(t_dut, 2),
        "labels": l_dut,
    }
    if image:
        gap = np.abs(x_ref.astype(np.int16) - x_dut.astype(np.int16))
        out |= {"max_pixel_gap": int(gap.max()), "pixels_differing": float((gap > 0).mean())}
    return out


def sweep(engine, streams: list[bytes], batches: list[int], seconds: float, sync) -> list[dict]:
    """Engine.run on `b` faces at a time, repeated for `seconds` (at least 5 times) after 2 warm-up calls."""
    from ferserver.engine import FaceJob

    rows = []
    for b in batches:
        jobs = [FaceJob(streams[i % len(streams)]) for i in range(b)]
        for _ in range(2):
            engine.run(jobs)
        clock = StageClock()
        engine.metrics = clock
        times = []
        start = time.perf_counter()
        while len(times) < 5 or time.perf_counter() - start < seconds:
            t = time.perf_counter()
            engine.run(jobs)  # ends with .cpu(): the device's work is finished when it returns
            sync()
            times.append(time.perf_counter() - t)
        engine.metrics = None
        total = sum(times)
        rows.append({"batch": b, "calls": len(times), "faces_per_s": round(b * len(times) / total, 1),
                     "p50_ms": round(1000 * statistics.median(times), 3),
                     "p99_ms": round(1000 * float(np.percentile(times, 99)), 3),
                     "stage_ms": {k: round(1000 * statistics.fmean(v), 3) for k, v in clock.seconds.items()}})
        print(f"  batch {b:4d}: {rows[-1]['faces_per_s']:10.1f} faces/s  p99 {rows[-1]['p99_ms']:8.2f} ms  stages {rows[-1]['stage_ms']}", flush=True)
    return rows


def server_footprint(device: str, streams: list[bytes], calls: int = 20) -> dict:
    """A real ferserver on `device`: time to ready, and its peak RSS after `calls` Recognize calls of 64 faces
    (what deploy/k8s sizes memory requests from)."""
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
    from ferserver.process import ServerProcess

    t = time.perf_counter()
    with ServerProcess("--device", device) as s:
        ready = time.perf_counter() - t
        with grpc.insecure_channel(s.address) as ch:
            stub = pb_grpc.FerCodecStub(ch)
            for i in range(calls):
                stub.Recognize(pb.RecognizeRequest(faces=[streams[(64 * i + k) % len(streams)] for k in range(64)]), timeout=60)
        kb = _rss_kb(s.proc.pid)
        workers = s.children()
        workers_kb = sum(_rss_kb(w)["VmRSS"] for w in workers)
        code = s.stop()
    return {"device": device, "ready_s": round(ready, 1), "rss_mb": round(kb["VmRSS"] / 1024), "peak_rss_mb": round(kb["VmHWM"] / 1024),
            "child_processes": len(workers), "children_rss_mb": round(workers_kb / 1024), "exit": code}


def _rss_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check ({report['date']})", "",
             f"{env.get('gpu', 'no GPU')} (capability {env.get('capability', '-')}, CUDA {env.get('cuda', '-')}), torch {env['torch']}, "
             f"Python {env['python']}, {env['cpu_count']} CPU cores; device under test: **{env['device']}**; "
             f"{report['faces']} PrivateTest faces; this script's peak RSS {report['peak_rss_mb']} MB (both engines)"
             + (f", peak GPU memory {report['peak_gpu_mib']} MiB" if report.get("peak_gpu_mib") is not None else "") + ".", ""]
    lines += ["## Agreement with the CPU", "",
              "| model | faces | symbols = encoder's | symbols = CPU's | labels agree | max prob. gap | max pixel gap | verdict |",
              "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for m, a in report["agreement"].items():
        lines.append(f"| {m} | {a['faces']} | {a['symbols_equal_encoder']} | {a['symbols_equal_cpu']} | {100 * a['label_agreement']:.2f} % "
                     f"({a['label_disagreements']} differ) | {a['max_probability_gap']:.2e} | {a.get('max_pixel_gap', '-')} | {'PASS' if a['ok'] else 'FAIL'} |")
    lines += ["", "## Throughput (Engine.run, one batch at a time; entropy decoding in the engine's thread, then in its decode worker processes)", ""]
    for m, rows in report["sweep"].items():
        stages = sorted({s for r in rows for s in r["stage_ms"]})
        lines += [f"### {m}", "", "| batch | faces/s | p50 ms | p99 ms | " + " | ".join(f"{s} ms" for s in stages) + " |",
                  "| ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in stages) + " |"]
        for r in rows:
            lines.append(f"| {r['batch']} | {r['faces_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                         + " | ".join(f"{r['stage_ms'].get(s, 0):.2f}" for s in stages) + " |")
        lines.append("")
    sf = report.get("server")
    if sf:
        lines += [f"ferserver --device {sf['device']}: ready in {sf['ready_s']} s; RSS {sf['rss_mb']} MB, peak {sf['peak_rss_mb']} MB after 20 calls of 64 faces; "
                  f"{sf['child_processes']} child processes (decode workers and multiprocessing's resource tracker), {sf['children_rss_mb']} MB RSS together." if "error" not in sf
                  else f"ferserver --device {sf['device']}: {sf['error']}", ""]
    lines.append(f"Checks: {'PASS' if report['ok'] else 'FAIL'}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="device under test: cuda (default), cpu or auto")
    p.add_argument("--faces", type=argtypes.count, default=None, help="PrivateTest faces (default: all 3,589)")
    p.add_argument("--batches", type=argtypes.comma_separated(argtypes.count), default="1,8,32,64,128,256", help="batch sizes of the sweep")
    p.add_argument("--seconds", type=argtypes.positive("seconds"), default=2.0, help="time per batch size in the sweep")
    p.add_argument("--decode-workers", type=argtypes.checked(int, lambda v: v >= -1, "-1 (auto), 0 or more"), default=-1,
                   help="the device engine's decode worker processes (-1: ferserver's auto; with any, the sweep also runs in-thread as the baseline)")
    p.add_argument("--min-agreement", type=argtypes.checked(float, lambda v: 0 <= v <= 1, "a share between 0 and 1"), default=0.999,
                   help="least share of labels equal to the CPU's")
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "docs" / "gpu"), help="folder for gpu_check.json/.md (default $OUT, else docs/gpu)")
    args = p.parse_args(argv)

    import torch

    from fermodels.bundle import pick_device
    from fermodels.data import load_split
    from ferserver.engine import Engine
    from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR, ModelCard

    device = pick_device(args.device)
    env = environment(device)
    print(json.dumps(env), flush=True)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    faces, _ = load_split("test", limit=args.faces)
    batches = args.batches
    report = {"date": time.strftime("%Y-%m-%d"), "environment": env, "faces": len(faces), "agreement": {}, "sweep": {}}
    ok = True
    for model_dir in (DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR):
        card = ModelCard.load(model_dir)
        t = time.perf_counter()
        streams, symbols, q = encode_all(faces, model_dir)
        print(f"{card.model_id}: encoded {len(streams)} faces at quality {q} in {time.perf_counter() - t:.1f} s, "
              f"{statistics.fmean(map(len, streams)):.1f} bytes/face", flush=True)
        ref = Engine(card, "cpu", decode_workers=0)
        dut = Engine(card, device, decode_workers=args.decode_workers)
        a = agreement(card, streams, symbols, ref, dut, batch=256)
        a.pop("labels")
        a["ok"] = a["symbols_equal_encoder"] and a["symbols_equal_cpu"] and a["label_agreement"] >= args.min_agreement
        ok &= a["ok"]
        report["agreement"][card.model_id] = a
        print(f"  agreement: {json.dumps(a)}", flush=True)
        del ref
        if dut.decode_workers:  # the baseline first: the same engine decoding in its own thread
            print("  decoding in the engine's thread:", flush=True)
            report["sweep"][f"{card.model_id}, decoding in-thread"] = sweep(Engine(card, device, decode_workers=0), streams, batches, args.seconds, sync)
            print(f"  decoding in {dut.decode_workers} worker processes:", flush=True)
        report["sweep"][f"{card.model_id}, {dut.decode_workers} decode workers"] = sweep(dut, streams, batches, args.seconds, sync)
        dut.close()
        del dut
    try:
        report["server"] = server_footprint(device, streams)
    except Exception as e:  # a missing console script or port: report it, the checks above still stand
        report["server"] = {"device": device, "error": f"{type(e).__name__}: {str(e)[-500:]}"}
    print(f"server: {report['server']}", flush=True)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    report["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None
    report["ok"] = ok
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
