"""What encoding without constriction costs the edge (ARM Linux): python scripts/rangecoder_bench.py [--faces N] [--repeats R]

For N FER2013 PrivateTest faces (evenly spaced) and each bundled model at its default quality: milliseconds per face
to encode the latents (ferwire.bitstream.encode, after the ONNX encoder) with constriction and with ferwire.rangecoder,
median of R passes; bytes per face each way (ferwire.rangecoder cannot try constriction's trailing-byte cut, having no
decoder) and the share of faces constriction's cut shortens. Stops with an error if the range coder's words differ.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fermodels import argtypes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=argtypes.count, default=3589, help="PrivateTest faces, evenly spaced (fermodels.data.load_split)")
    p.add_argument("--repeats", type=argtypes.count, default=3, help="timed passes over the faces per figure")
    args = p.parse_args(argv)

    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split
    from ferwire import bitstream as bs
    from ferwire.rangecoder import RangeEncoder

    faces = load_split("test", limit=args.faces)[0]
    print(f"{len(faces)} PrivateTest faces; ms per face, median of {args.repeats} passes")
    print("| model | quality | constriction ms/face | ferwire.rangecoder ms/face | constriction bytes/face | rangecoder bytes/face | faces cut |")
    print("|---|---|---|---|---|---|---|")
    for name in ("fercodec-v1", "fercodec-v1-expr"):
        enc = FaceEncoder(name)
        q, tag = enc.card.default_quality, enc.card.model_tag
        y = enc.latents(faces)
        out = {}
        for coder, has in (("constriction", True), ("rangecoder", False)):
            saved = bs._encoder, bs.has_constriction
            if not has:
                bs._encoder, bs.has_constriction = RangeEncoder, lambda: False
            try:
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    streams = [bs.encode(v, q, enc.tables, tag) for v in y]
                    times.append((time.perf_counter() - t) / len(y))
            finally:
                bs._encoder, bs.has_constriction = saved
            out[coder] = (1000 * float(np.median(times)), streams)
        (t_c, c_streams), (t_r, r_streams) = out["constriction"], out["rangecoder"]
        for a, b in zip(c_streams, r_streams):  # the same words: constriction's stream is the other's, less the bytes it cut
            if b[: len(a)] != a or len(b) - len(a) > 3:
                raise SystemExit(f"{name}: ferwire.rangecoder wrote other words than constriction")
        cut = np.mean([len(b) > len(a) for a, b in zip(c_streams, r_streams)])
        print(f"| {name} | q{q} | {t_c:.2f} | {t_r:.2f} | {np.mean([len(s) for s in c_streams]):.3f} | {np.mean([len(s) for s in r_streams]):.3f} | {100 * cut:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
