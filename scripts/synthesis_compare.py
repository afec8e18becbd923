"""Two image models' servers side by side: the labels each answers on FER2013 faces, and the engine's time per face.

What `fertrain synthesis` is judged by before its transform ships (docs/synthesis): the same bitstreams (the shipped
client's encoder) go through ferserver's Engine for each model directory, with the server's defaults (int8
classifier, bfloat16 synthesis where the CPU has it); the script prints and writes each quality's accuracy for both,
how often they agree, and milliseconds per face in batches of 1, 8 and 32, the two engines taking turns.

    python scripts/synthesis_compare.py runs/synth/model --split val --qualities 0,5,7 --out docs/synthesis/compare.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from fermodels import argtypes

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("candidate", help="the model directory to compare")
    p.add_argument("--against", default=str(ROOT / "models" / "weights" / "fercodec-v1"), help="the reference (default: the shipped image model)")
    p.add_argument("--split", default="val", choices=("val", "test"), help="FER2013 split (choose on val)")
    p.add_argument("--qualities", type=argtypes.comma_separated(argtypes.checked(int, lambda v: v >= 0, "a quality, 0 or more")), default="0,5,7",
                   help="comma-separated qualities")
    p.add_argument("--rounds", type=argtypes.count, default=6, help="timing rounds per batch size, the engines taking turns")
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    from ferserver import config as config_mod

    config_mod.runtime_defaults()
    import numpy as np

    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split
    from ferserver.engine import Engine, FaceJob, on_passing_thread
    from ferwire.card import ModelCard

    try:
        cards = {"reference": ModelCard.load(args.against), "candidate": ModelCard.load(args.candidate)}
    except (FileNotFoundError, ValueError) as e:
        print(f"synthesis_compare: {e}", file=sys.stderr)
        return 2
    top = min(c.num_qualities for c in cards.values()) - 1
    if max(args.qualities) > top:
        print(f"synthesis_compare: --qualities go from 0 to {top} for these models, got {max(args.qualities)}", file=sys.stderr)
        return 2
    if cards["reference"].model_tag != cards["candidate"].model_tag:
        print(f"synthesis_compare: {args.candidate} decodes other bitstreams than {args.against} (tag {cards['candidate'].model_tag:#06x})", file=sys.stderr)
        return 2
    faces, labels = load_split(args.split)
    enc = FaceEncoder(args.against)
    names = list(cards["reference"].class_names)
    out = {"split": args.split, "faces": len(faces), "reference": args.against, "candidate": args.candidate,
           "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}", "qualities": {}, "ms_per_face": {}}

    def work():
        engines = {k: Engine([c], "cpu", 0, None, 0, "auto", "auto") for k, c in cards.items()}
        for q in args.qualities:
            bits = enc.encode(faces, q)
            pred = {}
            for k, e in engines.items():
                answers = [o for i in range(0, len(bits), 32) for o in e.run([FaceJob(b) for b in bits[i : i + 32]])]
                pred[k] = np.array([names.index(a.label) for a in answers])
            row = {f"accuracy_{k}": float((v == labels).mean()) for k, v in pred.items()}
            row["agree"] = float((pred["reference"] == pred["candidate"]).mean())
            out["qualities"][q] = row
            print(f"q{q}: accuracy {row['accuracy_reference']:.4f} (reference) {row['accuracy_candidate']:.4f} (candidate), labels agree on {row['agree']:.4f}", flush=True)
        bits = enc.encode(faces[:256], cards["reference"].default_quality)
        for n in (1, 8, 32):
            times = {k: [] for k in engines}
            for _ in range(args.rounds):
                for k, e in engines.items():
                    jobs = [[FaceJob(b) for b in bits[i : i + n]] for i in range(0, 128 if n == 1 else 256, n)]
                    spent = 0.0
                    for j in jobs:
                        if n == 1:
                            time.sleep(0.0007)  # a lone face arrives after a round trip, as at 1 call in flight
                        t0 = time.perf_counter()
                        e.run(j)
                        spent += time.perf_counter() - t0
                    times[k].append(1000 * spent / (len(jobs) * n))
            out["ms_per_face"][n] = {k: float(np.median(v)) for k, v in times.items()}
            print(f"batch {n}: ms per face " + ", ".join(f"{k} {np.median(v):.3f}" for k, v in times.items()), flush=True)

    on_passing_thread(work)  # torch on a thread of its own, as ferserver runs it (ferserver.engine.on_passing_thread)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
