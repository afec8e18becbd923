"""Where a bitstream's bits and its decoding time go, per quality: python scripts/entropy_stats.py [--faces N] [--model NAME|DIR]

For N FER2013 val faces (evenly spaced), encoded as ferclient encodes them: bytes per face; the final constant run's share (how many
of a face's symbols it holds, its mean cost in bits on faces where it does not escape, and how many faces' runs
escape); and the range decoder's milliseconds per face (ferwire.bitstream's lockstep decoder, one face and a batch of
32, median of --repeats) with the run decoded and with it guessed (what decode_many does; docs/bitstream.md).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fermodels import argtypes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=argtypes.count, default=2000, help="val faces, evenly spaced (fermodels.data.load_split)")
    p.add_argument("--model", default=None, help="model name or directory (default: the image codec)")
    p.add_argument("--repeats", type=argtypes.count, default=30, help="timed decodes per figure")
    args = p.parse_args(argv)

    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split
    from ferwire import bitstream as bs
    from fermodels.quantize import ms_per_face
    from ferwire.entropy import ConstantRun

    try:
        enc = FaceEncoder(args.model)
    except (FileNotFoundError, ValueError) as e:  # not a model: ModelCard's one line, not its traceback
        print(f"entropy_stats: {e}", file=sys.stderr)
        return 2
    tables = enc.tables
    faces = load_split("val", limit=args.faces)[0]
    y = enc.latents(faces)
    print(f"{len(faces)} val faces, {tables.channels} x {tables.positions} symbols a face")
    print("| quality | bytes/face | final run: symbols | its bits (no escape) | faces whose run escapes | decode ms/face, 1: run decoded | guessed | 32: run decoded | guessed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for q in range(tables.num_qualities):
        streams = [bs.encode(v, q, tables, enc.card.model_tag) for v in y]
        payloads = [s[bs.HEADER_BYTES:] for s in streams]
        run = tables.steps(q)[-1]
        cells = ["–", "–", "–"]
        if isinstance(run, ConstantRun):
            z = tables.symbols(y, q).reshape(len(y), tables.channels, -1)
            escaped = (z[:, run.merged.channels] != run.merged.lo).any((1, 2))
            bits = []
            for i in np.flatnonzero(~escaped)[:200]:  # the run's contexts depend on the activity the groups before it leave
                activity = np.zeros(tables.positions, np.int64)
                for g in tables.steps(q)[:-1]:
                    coded = z[i, g.channels] - g.lo
                    coded = np.where((coded < 0) | (coded >= g.width), g.width, coded)  # an escape counts as the escape bin
                    activity += g.contribution[np.arange(len(g.channels))[:, None], coded].sum(0)
                rows = tables.context_rows(run.merged, activity)
                bits.append(-np.log2(rows[:, 0] / rows.sum(1)).sum())
            cells = [str(run.merged.channels.size * tables.positions), f"{np.mean(bits):.3f}", f"{int(escaped.sum())}"]
        timings = [ms_per_face(lambda b, g=g: bs._range_decode_many(b, tables, q, guess_final_run=g), payloads[:n], args.repeats)
                   for n in (1, 32) for g in (False, True)]
        print(f"| q{q} | {np.mean([len(s) for s in streams]):.1f} | {' | '.join(cells)} | " + " | ".join(f"{t:.3f}" for t in timings) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
