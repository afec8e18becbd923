"""Why ferserver loads its models on a passing thread and splits a batch over threads only when it pays (issue 18).

    python scripts/openmp_threads.py [--faces 1,8] [--gaps-ms 0.5,5,30] [--repeat 150]

Times ferserver's Engine.run (image codec, default quality, the server's CPU precisions) on a worker thread, as the
batcher runs it, forcing one or every torch thread, with the engine built either on the main thread (which lives on,
as the event loop's did) or on a passing thread (ferserver.engine.on_passing_thread). Between runs the worker sleeps
a gap, as a server does between batches. Each case runs in a process of its own: OpenMP's thread pools outlive the
calls that made them. Prints the median and p90 ms per run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time

import numpy as np

from fermodels import argtypes


def case(built_on: str, faces: int, gaps_ms: list[float], repeat: int) -> dict:
    from ferserver.config import runtime_defaults

    runtime_defaults()  # as ferserver, before torch loads
    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split
    from ferserver.engine import Engine, FaceJob, on_passing_thread
    from ferwire.card import DEFAULT_MODEL_DIR, ModelCard

    card = ModelCard.load(DEFAULT_MODEL_DIR)
    jobs = [FaceJob(b) for b in FaceEncoder(str(DEFAULT_MODEL_DIR)).encode(load_split("test", limit=faces)[0])]
    make = lambda: Engine(card, "cpu", decode_workers=0, classifier_precision="auto", synthesis_precision="auto")  # noqa: E731
    engine = make() if built_on == "main" else on_passing_thread(make)
    out: dict = {}

    def worker() -> None:
        import torch

        for threads in sorted({1, engine.threads.threads}):
            for gap in gaps_ms:
                engine.threads.use(threads)
                times = []
                with torch.inference_mode():
                    for _ in range(repeat + 20):
                        t = time.perf_counter()
                        engine._run(jobs)  # the model work without Threads' choice: `threads` is forced here
                        times.append(1000 * (time.perf_counter() - t))
                        time.sleep(gap / 1000)
                t = np.array(times[20:])
                out[f"{threads} {gap}"] = (float(np.median(t)), float(np.percentile(t, 90)))

    w = threading.Thread(target=worker)
    w.start()
    w.join()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=argtypes.comma_separated(argtypes.count), default="1,8", help="faces per run, comma-separated")
    p.add_argument("--gaps-ms", type=argtypes.comma_separated(argtypes.checked(float, lambda v: 0 <= v < math.inf, "0 or more ms")), default="0.5,5,30",
                   help="sleep between runs, ms, comma-separated")
    p.add_argument("--repeat", type=argtypes.count, default=150, help="timed runs per thread count and gap")
    p.add_argument("--case", help=argparse.SUPPRESS)  # "main|passing FACES": one case, in a child process
    args = p.parse_args(argv)
    if args.case:
        built_on, faces = args.case.split()
        print(json.dumps(case(built_on, int(faces), args.gaps_ms, args.repeat)))
        return 0
    gaps = ",".join(map(str, args.gaps_ms))
    print("| engine built on | faces | torch threads | gap ms | median ms | p90 ms |\n|---|---|---|---|---|---|")
    for faces in args.faces:
        for built_on in ("main", "passing"):
            r = subprocess.run([sys.executable, __file__, "--case", f"{built_on} {faces}", "--gaps-ms", gaps, "--repeat", str(args.repeat)],
                               capture_output=True, text=True, check=True)
            for key, (med, p90) in json.loads(r.stdout.strip().splitlines()[-1]).items():
                threads, gap = key.split()
                print(f"| {built_on} thread | {faces} | {threads} | {gap} | {med:.2f} | {p90:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
