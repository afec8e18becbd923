"""make bench: the speed figures README quotes, measured on this machine in one run.

1. `ferclient send` from cold start: wall time and peak RSS (GNU time -v), median
   of --runs runs, against a bare `python -c pass` baseline: a 48x48 face with
   --no-detect, and with face detection and alignment the astronaut photo
   (512x512 PNG) and the same photo blown up to a 12-megapixel JPEG (4032x3024).
2. Serving against what users would run instead (issue 18), on the same
   PrivateTest faces, each path's server a child process on loopback, at
   --levels calls in flight (one face per call, one grpc channel per caller, all
   sharing one TCP connection, as grpc shares it between channels to one address):
   faces/s, p50/p99 latency, bytes per face on the wire and server CPU seconds
   per face, for
   - fercodec (ferserver, default flags, both bundled models): the image codec
     at its default quality, and the expression layer; and the image codec with
     --max-batch 1, which separates what batching buys from the rest;
   - (b) naive: a CompressAI user's server, `model.decompress` then the same
     classifier, one face at a time (scripts/bench_baselines.py);
   - (c) jpeg: JPEG upload at the lowest quality whose accuracy is within one
     point of uncompressed faces (measured on all PrivateTest faces and recorded
     in --out/jpeg_quality.json, reused while the classifier and Pillow stay the same),
     Pillow decode, the same classifier, batched as ferserver batches.
   Faces are encoded by each path's client before the load starts. Each level
   runs --warmup seconds unmeasured, then --seconds measured: faces/s counts the
   calls that ended in that window, latency the calls that started in it, and
   server CPU is utime+stime (+ waited-for children) from /proc/<pid>/stat over
   it. The load generator shares the machine's cores with the server.
   Writes docs/bench/serving.md and serving.json (--out), and draws serving.png from them
   (with matplotlib; --replot draws it again from serving.json, measuring nothing).
   Then, since the table's paths run minutes apart and a shared VM's speed drifts
   by more than the gaps being measured, each fercodec path and (c) take turns:
   --rounds pairs of short windows per level, (c) first in odd rounds; each pair
   gives a ratio, and the median of those is the head-to-head figure. The same
   alternation under open-loop load (--rates: one-face calls arriving at random,
   as from many devices, answered or not) gives each path's and (c)'s latency.
3. Edge encoding, one face per call on one ONNX Runtime thread (what a small
   device does): the image codec at its default quality against the expression
   layer, whose encoder runs the classifier's front twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fermodels import argtypes, source_commit

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_baselines beside this script
_T0 = time.perf_counter()


def say(msg: str) -> None:
    """Progress on stderr: a full run takes minutes."""
    print(f"bench [{time.perf_counter() - _T0:5.0f} s] {msg}", file=sys.stderr, flush=True)


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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children (/proc/<pid>/stat fields 14-17), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stage_totals(metrics_text: str) -> dict[str, float]:
    """ferserver's /metrics: seconds spent per model stage, batches and faces batched, as running totals."""
    out = {}
    for m in re.finditer(r'^fercodec_stage_duration_seconds_sum\{stage="(\w+)"\} (\S+)$', metrics_text, re.M):
        out[m.group(1)] = float(m.group(2))
    for name, key in (("fercodec_batch_size_faces_count", "batches"), ("fercodec_batch_size_faces_sum", "batched_faces")):
        m = re.search(rf"^{name} (\S+)$", metrics_text, re.M)
        out[key] = float(m.group(1)) if m else 0.0
    return out


async def _level(address: str, payloads: list[bytes], in_flight: int, seconds: float, warmup: float, pid: int, answers: dict, metrics=None) -> dict:
    """Drive one server with `in_flight` callers for warmup + seconds; figures over the measured window only.

    metrics: ferserver's /metrics reader, for where its time went (the baselines have none).
    """
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    calls: list[tuple[float, float, int, int]] = []  # start, end, payload bytes, request bytes
    errors: list[str] = []
    n = len(payloads)
    requests = [pb.RecognizeRequest(faces=[p]) for p in payloads]
    sizes = [r.ByteSize() for r in requests]
    w0 = time.perf_counter() + warmup
    w1 = w0 + seconds
    window = {}
    channels = [grpc.aio.insecure_channel(address) for _ in range(in_flight)]

    async def caller(k: int) -> None:
        stub = pb_grpc.FerCodecStub(channels[k])
        i = k
        while time.perf_counter() < w1:
            j = i % n
            t = time.perf_counter()
            try:
                r = await stub.Recognize(requests[j], timeout=60)
            except grpc.aio.AioRpcError as e:
                errors.append(f"{e.code().name}: {e.details()}")
                return  # a broken path shows as errors and fewer calls, not as a hot loop
            calls.append((t, time.perf_counter(), len(payloads[j]), sizes[j]))
            answers[j] = r.results[0].label
            i += in_flight

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, w0 - time.perf_counter()))
        window["a"] = (time.perf_counter(), cpu_seconds(pid), _self_cpu())
        if metrics:
            window["ma"] = stage_totals(await asyncio.to_thread(metrics))
        await asyncio.sleep(max(0.0, w1 - time.perf_counter()))
        window["b"] = (time.perf_counter(), cpu_seconds(pid), _self_cpu())
        if metrics:
            window["mb"] = stage_totals(await asyncio.to_thread(metrics))

    try:
        await asyncio.gather(sampler(), *(caller(k) for k in range(in_flight)))
    finally:
        for ch in channels:
            await ch.close()
    (ta, ca, sa), (tb, cb, sb) = window["a"], window["b"]
    done = [c for c in calls if ta <= c[1] <= tb]
    started = [c for c in calls if ta <= c[0] <= tb]
    faces = len(done)
    lat = np.array([c[1] - c[0] for c in started]) * 1000 if started else np.array([np.nan])
    stages = None
    if metrics:  # batches straddling the window's edges make these approximate
        d = {k: window["mb"].get(k, 0.0) - window["ma"].get(k, 0.0) for k in window["mb"]}
        batched = d.pop("batched_faces")
        stages = {"mean_batch": batched / d.pop("batches") if d.get("batches") else float("nan"),
                  "ms_per_face": {k: 1000 * v / batched for k, v in d.items() if batched and v > 0}}
    return {
        "in_flight": in_flight, "seconds": tb - ta, "faces": faces, "faces_per_s": faces / (tb - ta),
        "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(np.max(lat)),
        "bytes_per_face": float(np.mean([c[3] for c in done])) if done else float("nan"),
        "payload_bytes_per_face": float(np.mean([c[2] for c in done])) if done else float("nan"),
        "server_cpu_s": cb - ca, "server_cpu_s_per_face": (cb - ca) / faces if faces else float("nan"),
        "server_cores_busy": (cb - ca) / (tb - ta), "client_cpu_s_per_face": (sb - sa) / faces if faces else float("nan"),
        "errors": len(errors), "first_error": errors[0] if errors else None, "stages": stages,
    }


async def _arrivals(address: str, payloads: list[bytes], rate: float, seconds: float, warmup: float, channels: int = 16, seed: int = 0) -> dict:
    """Open-loop load: one-face calls arriving at `rate` per second at random (Poisson) for warmup + seconds, whether or
    not earlier ones were answered, as from many edge devices at once; over `channels` channels. Latency of the calls
    started in the measured window.

    Why beside _level: there every caller waits for its answer before its next call (a closed loop), so the callers
    answered together come back together; devices that each send now and then do not, and a batcher's wait for
    company shows in their latency instead."""
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    rng = np.random.default_rng(seed)
    requests = [pb.RecognizeRequest(faces=[p]) for p in payloads]
    chans = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [pb_grpc.FerCodecStub(ch) for ch in chans]
    lat: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    w0, w1 = t0 + warmup, t0 + warmup + seconds

    async def call(k: int, start: float) -> None:
        try:
            await stubs[k % channels].Recognize(requests[k % len(requests)], timeout=60)
        except grpc.aio.AioRpcError as e:
            errors.append(f"{e.code().name}: {e.details()}")
            return
        if w0 <= start <= w1:
            lat.append(time.perf_counter() - start)

    tasks, k, due = [], 0, t0
    try:
        while due < w1:
            due += rng.exponential(1.0 / rate)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.ensure_future(call(k, time.perf_counter())))
            k += 1
        await asyncio.gather(*tasks)
    finally:
        for ch in chans:
            await ch.close()
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"rate": rate, "calls": len(lat), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(np.max(ms)), "errors": len(errors), "first_error": errors[0] if errors else None}


def drive(server, payloads: list[bytes], levels: list[int], seconds: float, warmup: float, label: str) -> tuple[list[dict], dict]:
    """Every level in turn against one server (after one warm-up), and each pool face's last answer."""
    answers: dict[int, str] = {}
    address, pid, metrics = server.address, server.proc.pid, getattr(server, "metrics", None)
    asyncio.run(_level(address, payloads, min(32, len(payloads)), warmup, 0.0, pid, answers))  # first batches, lazy init
    out = []
    for level in levels:
        r = asyncio.run(_level(address, payloads, level, seconds, warmup, pid, answers, metrics))
        say(f"{label}, {level} in flight: {r['faces_per_s']:.0f} faces/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"{1000 * r['server_cpu_s_per_face']:.2f} ms server CPU/face" + (f", {r['errors']} errors ({r['first_error']})" if r["errors"] else ""))
        out.append(r)
    return out, answers


# The paths in the table: key, server, payload set, what it is.
PATHS = [
    ("fercodec", "fercodec", "image", "fercodec, image codec q{q}"),
    ("fercodec_expr", "fercodec", "expression", "fercodec, expression layer"),
    ("fercodec_unbatched", "fercodec_unbatched", "image", "fercodec, image codec q{q}, --max-batch 1"),
    ("fercodec_fp32", "fercodec_fp32", "image", "fercodec, image codec q{q}, float networks (--classifier-precision fp32 --synthesis-precision fp32)"),
    ("naive", "naive", "naive", "(b) naive CompressAI, q{q}, 1 face at a time"),
    ("jpeg", "jpeg", "jpeg", "(c) JPEG q{jq} upload, batched"),
]
GOAL_NAIVE, GOAL_JPEG, GOAL_P99_MS, GOAL_P99_AT = 5.0, 0.8, 50.0, 32


def goals(rows: dict, levels: list[int]) -> dict:
    """Issue 18's goals for each fercodec path, level by level, against (b) and (c) of this run."""
    out = {}
    for key in ("fercodec", "fercodec_expr"):
        g = {"vs_naive": {}, "vs_jpeg": {}, "p99_at_32": None}
        for i, level in enumerate(levels):
            r, b, c = rows[key]["levels"][i], rows["naive"]["levels"][i], rows["jpeg"]["levels"][i]
            g["vs_naive"][level] = r["faces_per_s"] >= GOAL_NAIVE * b["faces_per_s"]
            g["vs_jpeg"][level] = r["faces_per_s"] >= GOAL_JPEG * c["faces_per_s"] and r["bytes_per_face"] < c["bytes_per_face"]
            if level == GOAL_P99_AT:
                g["p99_at_32"] = r["p99_ms"] <= GOAL_P99_MS
        out[key] = g
    return out


def _met(d: dict) -> str:
    yes = [str(k) for k, v in d.items() if v]
    no = [str(k) for k, v in d.items() if not v]
    if not no:
        return "met at every level"
    return ("met at " + ", ".join(yes) + "; " if yes else "") + "not met at " + ", ".join(no) + " in flight"


def serving_markdown(s: dict) -> str:
    rows = s["rows"]
    jq = s["jpeg_quality"]
    lines = [
        "# Serving benchmark: fercodec against what users would run instead",
        "",
        f"- Date: {s['date']}; commit {s['commit']}{' (with uncommitted changes)' if s['dirty'] else ''}",
        f"- Command: `{s['command']}`",
        f"- Machine: {s['machine']}; load average {s['loadavg_start'][0]:.2f} at the start, {s['loadavg_end'][0]:.2f} at the end",
        f"- Faces: {s['faces']} FER2013 PrivateTest faces (evenly spaced), each path's own client encoding done before the load; "
        f"{s['seconds']:g} s measured per level after {s['warmup']:g} s warm-up; one face per call, one grpc channel per caller (grpc carries all of them over one TCP connection), loopback",
        "- bytes/face: the serialized RecognizeRequest per face (the face's bytes plus 2-3 bytes of protobuf); gRPC and HTTP/2 framing, "
        "the same for every path, not counted. Server CPU: utime+stime of the server process from /proc over the measured window.",
        "- (b) naive: the image codec's networks as a CompressAI model (`model.compress` on the client, sent as 2 bytes of latent shape + "
        "CompressAI's string; `model.decompress` then the classifier on the server, one face at a time on one worker thread).",
        f"- (c) JPEG quality {jq['quality']}: " + _jpeg_choice(jq),
        "",
        "| path | in flight | faces/s | p50 ms | p99 ms | bytes/face | server CPU ms/face | faces/s vs (b) | faces/s vs (c) | bytes vs (c) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        for i, r in enumerate(row["levels"]):
            b, c = rows["naive"]["levels"][i], rows["jpeg"]["levels"][i]
            err = f" ({r['errors']} errors)" if r["errors"] else ""
            lines.append(f"| {row['what']} | {r['in_flight']} | {r['faces_per_s']:.0f}{err} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['bytes_per_face']:.1f} | "
                         f"{1000 * r['server_cpu_s_per_face']:.2f} | {r['faces_per_s'] / b['faces_per_s']:.2f}x | {r['faces_per_s'] / c['faces_per_s']:.2f}x | "
                         f"{r['bytes_per_face'] / c['bytes_per_face']:.3f} |")
    lines += ["", "Accuracy of each path's answers on these faces (a check that every server reads its faces right; "
              f"on {s['faces']} faces the 95 % interval is about ±{196 * (0.7 * 0.3 / max(1, s['faces'])) ** 0.5:.0f} points):", "",
              "| path | accuracy |", "|---|---|"]
    lines += [f"| {row['what']} | {100 * row['accuracy']:.1f} % |" for row in rows.values()]
    staged = [(row["what"], r) for row in rows.values() for r in row["levels"] if r.get("stages")]
    if staged:
        names = sorted({k for _, r in staged for k in r["stages"]["ms_per_face"]})
        lines += ["", "Where ferserver's model worker spent its time (its /metrics stage histograms over each window: wall ms per face; "
                  "the rest of its CPU is gRPC, the event loop and the batcher):", "",
                  "| path | in flight | mean batch | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
        for what, r in staged:
            st = r["stages"]
            lines.append(f"| {what} | {r['in_flight']} | {st['mean_batch']:.1f} | " + " | ".join(f"{st['ms_per_face'][k]:.2f}" if k in st["ms_per_face"] else "–" for k in names) + " |")
    lines += ["", f"Goals (issue 18), this run: faces/s ≥ {GOAL_NAIVE:g}x (b); faces/s ≥ {GOAL_JPEG:g}x (c) with fewer bytes; p99 ≤ {GOAL_P99_MS:g} ms at {GOAL_P99_AT} in flight.", ""]
    for key, g in s["goals"].items():
        p99 = "not measured (no 32 in flight level)" if g["p99_at_32"] is None else ("met" if g["p99_at_32"] else "not met")
        lines.append(f"- {rows[key]['what']}: ≥ {GOAL_NAIVE:g}x (b) {_met(g['vs_naive'])}; ≥ {GOAL_JPEG:g}x (c) at fewer bytes {_met(g['vs_jpeg'])}; p99 ≤ {GOAL_P99_MS:g} ms at {GOAL_P99_AT}: {p99}")
    if "head_to_head" in s:
        h = s["head_to_head"]
        levels = list(next(iter(h["ratios"].values())))
        lines += ["", f"Head to head against (c): each path and (c) in alternating {h['seconds']:g} s windows, {h['rounds']} pairs per level "
                  "((c) first in every other pair), so the VM's drift over minutes cancels; faces/s ratio, median of the pairs (lowest-highest):", "",
                  "| path | " + " | ".join(f"{lv} in flight" for lv in levels) + " |", "|---|" + "---|" * len(levels)]
        for key, by_level in h["ratios"].items():
            cells = [f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})" for r in by_level.values()]
            lines.append(f"| {rows[key]['what']} | " + " | ".join(cells) + " |")
        for key, by_level in h["ratios"].items():
            verdict = {lv: statistics.median(r) >= GOAL_JPEG for lv, r in by_level.items()}
            lines.append(f"- {rows[key]['what']}: ≥ {GOAL_JPEG:g}x (c) head to head {_met(verdict)}")
    if s.get("open_loop"):
        o = s["open_loop"]
        lines += ["", f"Open loop: one-face calls arriving at random (Poisson) at a fixed rate over 16 grpc channels (one TCP connection), as from many devices, "
                  f"whether or not earlier calls were answered (the tables above are closed loops: each caller waits for its answer). "
                  f"Each path and (c) in alternating {o['seconds']:g} s windows, {o['rounds']} pairs per rate; latency ms, median "
                  "over the windows (`scripts/bench_ab.py --rates` compares two revisions of ferserver the same way):", "",
                  "| path | arrivals/s | p50 ms | p99 ms | (c) p50 ms | (c) p99 ms | errors |", "|---|---|---|---|---|---|---|"]
        for key, by_rate in o["windows"].items():
            for rate, got in by_rate.items():
                med = {side: {q: statistics.median(w[q] for w in ws) for q in ("p50_ms", "p99_ms")} for side, ws in got.items()}
                errors = sum(w["errors"] for ws in got.values() for w in ws)
                lines.append(f"| {rows[key]['what']} | {float(rate):g} | {med['ours']['p50_ms']:.1f} | {med['ours']['p99_ms']:.1f} | "
                             f"{med['jpeg']['p50_ms']:.1f} | {med['jpeg']['p99_ms']:.1f} | {errors} |")
    return "\n".join(lines) + "\n"


def _jpeg_choice(jq: dict) -> str:
    if "tried" not in jq:
        return "given with --jpeg-quality (not measured)"
    tried = "; ".join(f"q{t['quality']} {100 * t['accuracy']:.2f} % at {t['bytes']:.0f} bytes" for t in jq["tried"])
    verdict = "the lowest tried within" if jq["within"] else "none tried is within"
    return (f"{verdict} {jq['points']:g} point of uncompressed faces ({100 * jq['uncompressed_accuracy']:.2f} %), same classifier, "
            + (f"measured in this run on {jq['faces']} PrivateTest faces: " if jq["measured"] else
               f"measured on {jq['date']} (commit {jq['commit']}) on {jq['faces']} PrivateTest faces and reused from `{jq['recorded']}` "
               "(same classifier, Pillow and libjpeg-turbo; `--remeasure-jpeg` measures again): ") + tried)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else cpu
    return f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def start_servers(args, stack: contextlib.ExitStack, meanwhile):
    """Start every server at once (children of this process, closed by `stack`) and run meanwhile() while they load."""
    import bench_baselines as bb

    from ferserver.process import ServerProcess

    starts = {"fercodec": lambda: ServerProcess(), "naive": lambda: bb.BaselineProcess("naive"), "jpeg": lambda: bb.BaselineProcess("jpeg")}
    if not args.no_unbatched:
        starts["fercodec_unbatched"] = lambda: ServerProcess("--max-batch", "1")
    if not args.no_fp32:
        starts["fercodec_fp32"] = lambda: ServerProcess("--classifier-precision", "fp32", "--synthesis-precision", "fp32")
    say("starting " + ", ".join(starts) + " servers")
    pool = ThreadPoolExecutor(len(starts))
    futures = {k: pool.submit(f) for k, f in starts.items()}
    try:
        result = meanwhile()
    finally:
        servers, failed = {}, {}
        for k, f in futures.items():  # every start is waited for, so none is left running if another failed
            try:
                servers[k] = stack.enter_context(f.result())
            except Exception as e:
                failed[k] = e
        pool.shutdown()
    if failed:
        raise SystemExit(f"bench: could not start {', '.join(failed)}: {next(iter(failed.values()))}")
    return servers, result


def jpeg_record_key(faces: int) -> dict:
    """What the JPEG quality choice depends on: a recorded choice is reused only while all of it is unchanged."""
    import hashlib

    import PIL
    from PIL import features

    import bench_baselines as bb

    clf = bb.image_card().file("classifier.pt")
    return {"classifier_sha256": hashlib.sha256(clf.read_bytes()).hexdigest(), "pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
            "faces": faces, "candidates": list(bb.JPEG_CANDIDATES), "points": bb.JPEG_POINTS, "options": bb.JPEG_OPTIONS}


def prepare(args, faces: np.ndarray) -> dict:
    """The JPEG quality (measured unless given) and every path's client-side encoding of the faces."""
    import bench_baselines as bb

    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split

    if args.jpeg_quality is not None:
        jq = {"quality": args.jpeg_quality, "measured": False}
    else:
        jf, jl = load_split("test", limit=args.jpeg_faces)
        key = jpeg_record_key(len(jf))
        record = Path(args.out) / "jpeg_quality.json"
        old = json.loads(record.read_text()) if record.is_file() else None
        if old and old.get("key") == key and not args.remeasure_jpeg:
            jq = {**old, "measured": False, "recorded": str(record.relative_to(ROOT) if record.is_relative_to(ROOT) else record)}
            say(f"JPEG quality q{jq['quality']}, as measured on {old['date']} ({record}; --remeasure-jpeg measures again)")
        else:
            commit, _ = source_commit()
            jq = {**bb.pick_jpeg_quality(jf, jl, progress=say), "key": key, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit}
            Path(args.out).mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(jq, indent=2) + "\n")
            jq["measured"] = True
    say("encoding the faces with each path's client")
    enc = FaceEncoder()
    q = enc.check_quality(args.quality)
    payloads = {"image": enc.encode(faces, q), "expression": FaceEncoder("fercodec-v1-expr").encode(faces),
                "naive": bb.naive_encode(faces, bb.compressai_model(quality=q)), "jpeg": bb.jpeg_encode(faces, jq["quality"])}
    return {"jpeg_quality": jq, "quality": q, "payloads": payloads, "class_names": enc.card.class_names}


def serving(args, servers: dict, prep: dict, labels: np.ndarray) -> dict:
    """Each path at every level, one after another, and the accuracy of its answers."""
    rows = {}
    for key, server, kind, what in PATHS:
        if server not in servers:
            continue
        what = what.format(q=prep["quality"], jq=prep["jpeg_quality"]["quality"])
        levels, answers = drive(servers[server], prep["payloads"][kind], args.levels, args.seconds, args.warmup, what)
        names = prep["class_names"]
        rows[key] = {"what": what, "server": server, "levels": levels, "faces_answered": len(answers),
                     "accuracy": float(np.mean([answers[i] == names[labels[i]] for i in answers])) if answers else float("nan")}
    return rows


def alternate(sides: tuple[str, str], rounds: int, window) -> dict[str, list[dict]]:
    """{side: window(side, round) per round}: the two sides take turns, the second first in every other round, so a
    shared VM's drift over minutes falls on both alike (head_to_head, open_loop, scripts/bench_ab.py)."""
    got: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(rounds):
        for side in (sides[::-1] if r % 2 else sides):
            got[side].append(window(side, r))
    return got


def _against_jpeg(servers: dict, prep: dict, kind: str, side: str):
    """(server, payloads) of one side of a comparison with (c): "ours" (ferserver, `kind`'s bitstreams) or "jpeg"."""
    return (servers["jpeg"], prep["payloads"]["jpeg"]) if side == "jpeg" else (servers["fercodec"], prep["payloads"][kind])


def open_loop(servers: dict, prep: dict, rates: list[float], rounds: int, seconds: float) -> dict:
    """{path key: {rate: {"ours": [window], "jpeg": [window]}}}: the path and (c) in alternating open-loop windows
    (_arrivals: one-face calls at random, as from many devices), each window's p50/p99 latency."""
    out: dict = {}
    for key, kind in (("fercodec", "image"), ("fercodec_expr", "expression")):
        out[key] = {}
        for rate in rates:
            def window(side, r):
                server, payloads = _against_jpeg(servers, prep, kind, side)
                return asyncio.run(_arrivals(server.address, payloads, rate, seconds, 0.5, seed=r))

            got = out[key][rate] = alternate(("ours", "jpeg"), rounds, window)
            med = {side: statistics.median(w["p50_ms"] for w in ws) for side, ws in got.items()}
            say(f"open loop, {key} and (c) at {rate:g} faces/s: p50 {med['ours']:.1f} and {med['jpeg']:.1f} ms")
    return out


def head_to_head(servers: dict, prep: dict, levels: list[int], rounds: int, seconds: float, warmup: float) -> dict:
    """{path key: {level: per-round faces/s ratios against (c)}}: the path and (c) in alternating windows (see the module doc)."""
    out: dict = {}
    for key, kind in (("fercodec", "image"), ("fercodec_expr", "expression")):
        out[key] = {}
        for level in levels:
            def window(side, r):
                server, payloads = _against_jpeg(servers, prep, kind, side)
                return asyncio.run(_level(server.address, payloads, level, seconds, warmup, server.proc.pid, {}))

            got = alternate(("ours", "jpeg"), rounds, window)
            ratios = out[key][level] = [o["faces_per_s"] / j["faces_per_s"] for o, j in zip(got["ours"], got["jpeg"])]
            say(f"head to head, {key} against (c), {level} in flight: median {statistics.median(ratios):.2f}x over {rounds} rounds "
                f"({min(ratios):.2f}-{max(ratios):.2f})")
    return out


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


NONE_OR_MORE = argtypes.checked(int, lambda v: v >= 0, "0 (none) or more")  # --runs, --rounds: 0 skips those figures
NON_NEGATIVE_SECONDS = argtypes.checked(float, lambda v: 0 <= v < float("inf"), "0 or more seconds")
QUICK = {"levels": [1, 32], "seconds": 1.0, "warmup": 0.3, "faces": 64, "runs": 0, "jpeg_faces": 200, "no_unbatched": True, "no_fp32": True, "no_edge": True,
         "rounds": 2, "h2h_seconds": 0.5, "rates": [50.0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", type=argtypes.comma_separated(argtypes.count), default=[1, 8, 32, 128],
                   help="calls in flight, comma-separated (default 1,8,32,128)")
    p.add_argument("--seconds", type=argtypes.positive("seconds"), default=10.0, help="measured seconds per path and level")
    p.add_argument("--warmup", type=NON_NEGATIVE_SECONDS, default=1.0, help="unmeasured seconds before each level")
    p.add_argument("--faces", type=argtypes.count, default=512, help="PrivateTest faces the load cycles through")
    p.add_argument("--runs", type=NONE_OR_MORE, default=5, help="cold-start runs (0 skips the cold-start figures)")
    p.add_argument("--quality", type=argtypes.checked(int, lambda v: v >= 0, "a quality, 0 or more"), default=None,
                   help="image codec quality (default: the model's); the naive path uses the same")
    p.add_argument("--jpeg-quality", type=argtypes.checked(int, lambda v: 0 <= v <= 100, "a JPEG quality from 0 to 100"), default=None,
                   help="JPEG quality for (c) (default: measured, or --out's matching jpeg_quality.json)")
    p.add_argument("--jpeg-faces", type=argtypes.count, default=None, help="PrivateTest faces the JPEG quality is measured on (default: all)")
    p.add_argument("--remeasure-jpeg", action="store_true", help="measure the JPEG quality even when --out holds a matching jpeg_quality.json")
    p.add_argument("--no-unbatched", action="store_true", help="skip the fercodec --max-batch 1 path")
    p.add_argument("--no-fp32", action="store_true", help="skip the fercodec path with float networks (--classifier-precision fp32 --synthesis-precision fp32)")
    p.add_argument("--no-edge", action="store_true", help="skip the edge-encoding figures")
    p.add_argument("--rounds", type=NONE_OR_MORE, default=6, help="alternating fercodec/(c) window pairs per level for the head-to-head ratios (0 skips them)")
    p.add_argument("--h2h-seconds", type=argtypes.positive("seconds"), default=2.0, help="measured seconds per head-to-head window")
    p.add_argument("--rates", type=argtypes.comma_separated(argtypes.rate, empty=True), default=[100.0, 300.0, 600.0],
                   help="open-loop arrival rates, faces/s, comma-separated, for the open-loop table (default 100,300,600; '' skips it); "
                        "--rounds window pairs each, of --h2h-seconds")
    p.add_argument("--out", default=str(ROOT / "docs" / "bench"), help="where serving.md and serving.json go")
    p.add_argument("--quick", action="store_true", help="a small run for tests: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--replot", action="store_true", help="measure nothing: draw --out's serving.png again from its serving.json")
    args = p.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():  # found now, not when the figures are written
        p.error(f"--out {args.out}: a file, not a folder")
    if args.replot:
        src = Path(args.out) / "serving.json"
        if not src.is_file():
            raise SystemExit(f"bench: --replot needs {src}, which a measuring run writes")
        if not plot_serving(json.loads(src.read_text()), Path(args.out) / "serving.png"):
            raise SystemExit("bench: --replot needs matplotlib (pip install matplotlib, or the [train] extra)")
        say(f"wrote {Path(args.out) / 'serving.png'}")
        return 0
    if args.quick:
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)  # flags given explicitly still win
    if args.quality is not None:  # before any server starts, not in the middle of encoding
        from ferwire.card import DEFAULT_MODEL_DIR, ModelCard

        top = ModelCard.load(DEFAULT_MODEL_DIR).num_qualities - 1
        if args.quality > top:
            p.error(f"argument --quality: the image codec's qualities are 0 to {top}, got {args.quality}")

    from PIL import Image

    from fermodels.data import load_split

    commit, dirty = source_commit()
    out = {"machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit, "dirty": dirty,
           "command": " ".join(["scripts/bench.py", *(argv if argv is not None else sys.argv[1:])]), "loadavg_start": os.getloadavg(),
           "levels": args.levels, "seconds": args.seconds, "warmup": args.warmup}
    faces, labels = load_split("test", limit=args.faces)
    out["faces"] = len(faces)
    with contextlib.ExitStack() as stack:
        servers, prep = start_servers(args, stack, lambda: prepare(args, faces))
        out["model"] = servers["fercodec"].ready_line.split("models ", 1)[-1]
        if args.runs:
            say(f"cold start, {args.runs} runs of each ferclient send")
            with tempfile.TemporaryDirectory() as tmp:
                import skimage.data

                face, photo, big = Path(tmp) / "face.png", Path(tmp) / "astronaut.png", Path(tmp) / "astronaut_12mp.jpg"
                Image.fromarray(faces[0]).save(face)
                Image.fromarray(skimage.data.astronaut()).save(photo)
                Image.fromarray(skimage.data.astronaut()).resize((4032, 4032), Image.Resampling.BICUBIC).crop((0, 504, 4032, 3528)).save(big, quality=90)
                inputs = {"face.png --no-detect": [str(face), "--no-detect"], "astronaut.png (512x512), detect + align": [str(photo)],
                          "astronaut_12mp.jpg (4032x3024), detect + align": [str(big)]}
                out["cold_start"] = cold_start(servers["fercodec"].address, inputs, args.runs)
        out["rows"] = serving(args, servers, prep, labels)
        if args.rounds:
            out["head_to_head"] = {"rounds": args.rounds, "seconds": args.h2h_seconds,
                                   "ratios": head_to_head(servers, prep, args.levels, args.rounds, args.h2h_seconds, min(args.warmup, 0.5))}
        if args.rounds and args.rates:
            out["open_loop"] = {"rounds": args.rounds, "seconds": args.h2h_seconds,
                                "windows": open_loop(servers, prep, args.rates, args.rounds, args.h2h_seconds)}
        with ThreadPoolExecutor(len(servers)) as pool:  # each takes seconds to drain and tear down: all at once
            list(pool.map(lambda s: s.stop(), servers.values()))
    out["quality"], out["jpeg_quality"] = prep["quality"], prep["jpeg_quality"]
    out["goals"] = goals(out["rows"], args.levels)
    if not args.no_edge:
        say("edge encoding")
        out["edge_encode_ms"] = {"image": edge_encode_ms(faces[:200], None), "expression": edge_encode_ms(faces[:200], "fercodec-v1-expr")}
        out["edge_encoder_macs"] = {"image": encoder_macs(None), "expression": encoder_macs("fercodec-v1-expr")}
    out["loadavg_end"] = os.getloadavg()

    md = serving_markdown(out)
    extra = other_figures(out)
    if extra:
        md += "\nOther figures from this run:\n\n" + "".join(f"- {line}\n" for line in extra)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "serving.md").write_text(md)
    (dest / "serving.json").write_text(json.dumps(out, indent=2) + "\n")
    print(md)
    say(f"wrote {dest / 'serving.md'} and serving.json" + (", serving.png" if plot_serving(out, dest / "serving.png") else " (no serving.png: matplotlib is missing)"))
    return 0


# Curves drawn in serving.png: the paths a reader compares (the --max-batch 1 and float-network rows stay in the table).
PLOTTED = {"fercodec": ("image codec", "C0", "o-"), "fercodec_expr": ("expression layer", "C2", "s-"),
           "jpeg": ("(c) JPEG upload, batched", "C1", "^--"), "naive": ("(b) naive CompressAI", "C7", "v:")}


def plot_serving(out: dict, path: Path) -> bool:
    """serving.png: faces/s and p99 against calls in flight for each compared path, and the head-to-head ratios against
    (c) with the issue's goals drawn in; False (and nothing written) where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows, levels = out["rows"], out["levels"]
    h2h = (out.get("head_to_head") or {}).get("ratios", {})
    fig, axes = plt.subplots(1, 3 if h2h else 2, figsize=(15 if h2h else 10, 4.2))
    for key, (label, colour, style) in PLOTTED.items():
        if key not in rows:
            continue
        lv = rows[key]["levels"]
        x = [r["in_flight"] for r in lv]
        axes[0].plot(x, [r["faces_per_s"] for r in lv], style, color=colour, label=label)
        axes[1].plot(x, [r["p99_ms"] for r in lv], style, color=colour, label=label)
    if "naive" in rows:
        lv = rows["naive"]["levels"]
        axes[0].plot([r["in_flight"] for r in lv], [GOAL_NAIVE * r["faces_per_s"] for r in lv], color="grey", lw=0.8, ls="--",
                     label=f"goal: {GOAL_NAIVE:g}x (b)")
    axes[0].set(ylabel="faces/s", title="throughput")
    axes[1].set(ylabel="p99 latency, ms", yscale="log", title="p99 latency")
    axes[1].axhline(GOAL_P99_MS, color="grey", lw=0.8, ls="--")
    axes[1].annotate(f"goal {GOAL_P99_MS:g} ms at {GOAL_P99_AT} in flight", (GOAL_P99_AT, GOAL_P99_MS), textcoords="offset points", xytext=(-10, 6), fontsize=8, ha="right")
    if h2h:
        for key, (label, colour, style) in PLOTTED.items():
            if key in h2h:
                by_level = {int(k): v for k, v in h2h[key].items()}  # int keys when measured, str once read back from serving.json
                x = sorted(by_level)
                ratios = [by_level[k] for k in x]
                med = [statistics.median(r) for r in ratios]
                axes[2].errorbar(x, med, yerr=[[m - min(r) for m, r in zip(med, ratios)], [max(r) - m for m, r in zip(med, ratios)]],
                                 fmt=style, color=colour, capsize=3, label=label)
        axes[2].axhline(GOAL_JPEG, color="grey", lw=0.8, ls="--")
        axes[2].annotate(f"goal {GOAL_JPEG:g}x", (levels[-1], GOAL_JPEG), textcoords="offset points", xytext=(0, 6), fontsize=8, ha="right")
        axes[2].set(ylabel="faces/s against (c)", title=f"head to head (median and range of {out['head_to_head']['rounds']} window pairs)")
    for ax in axes:
        ax.set(xscale="log", xlabel="calls in flight (one face per call)")
        ax.set_xticks(levels, [str(v) for v in levels])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"scripts/bench.py, commit {out['commit']}{' (with uncommitted changes)' if out.get('dirty') else ''}, {out['date'][:10]}: "
                 f"{out['machine'].split(', ', 1)[-1]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def other_figures(out: dict) -> list[str]:
    """Cold start and edge encoding, as README's Speed section quotes them."""
    lines = []
    if "cold_start" in out:
        c = out["cold_start"]
        for name, r in c["client"].items():
            lines.append(f"`ferclient send {name}`, cold: {r['wall_s']:.2f} s wall, {r['peak_rss_mb']:.0f} MB peak RSS (median of {c['runs']})")
        lines.append(f"bare `python -c pass`: {c['python_wall_s']:.2f} s, {c['python_peak_rss_mb']:.0f} MB")
    rows = out["rows"]
    if "fercodec_unbatched" in rows:
        for i, level in enumerate(out["levels"]):
            b, u = rows["fercodec"]["levels"][i], rows["fercodec_unbatched"]["levels"][i]
            lines.append(f"batching speed-up, image codec, {level} in flight: {b['faces_per_s'] / u['faces_per_s']:.2f}x")
    if "fercodec_fp32" in rows:
        for i, level in enumerate(out["levels"]):
            b, f = rows["fercodec"]["levels"][i], rows["fercodec_fp32"]["levels"][i]
            lines.append(f"the defaults (int8 classifier, synthesis in bfloat16 where the CPU has it) against float networks, image codec, {level} in flight: "
                         f"{b['faces_per_s'] / f['faces_per_s']:.2f}x faces/s, "
                         f"p99 {b['p99_ms']:.1f} against {f['p99_ms']:.1f} ms")
    if "edge_encode_ms" in out:
        e, m = out["edge_encode_ms"], out["edge_encoder_macs"]
        lines.append(f"edge encode, one face, 1 ONNX Runtime thread: image codec {e['image']:.2f} ms, expression layer {e['expression']:.2f} ms ({e['expression'] / e['image']:.1f}x)")
        lines.append(f"edge encoder multiply-adds per face: image codec {m['image'] / 1e6:.1f} M, expression layer {m['expression'] / 1e6:.1f} M ({m['expression'] / m['image']:.1f}x)")
    return lines


if __name__ == "__main__":
    sys.exit(main())
