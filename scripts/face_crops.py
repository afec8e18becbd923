"""Face crops sent as photos (`ferclient send crop.png`, no --no-detect): how many the detector finds.

    python scripts/face_crops.py OUT_DIR [--split val] [--limit 1000] [--nofaces BENCH_DIR/nofaces]

Writes `--limit` FER2013 faces of the split (a fixed random draw, seed 0) into OUT_DIR/<class>/ as 48x48 PNGs, the
folder `fereval --folder OUT_DIR [--detect]` reads, and prints how many of them YuNet finds as they are (the first pass
alone) and as `FaceDetector.detect` finds them (with the border pass for small photos). With --nofaces, the
detector benchmark's face-free photos (docs/detector) shrunk to 48, 96 and 160 px: the photos given a face, which
the border pass must not raise. docs/detector/README.md, "Face crops".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the crops (one subfolder per class)")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--limit", type=int, default=1000, help="faces drawn from the split (0: all)")
    ap.add_argument("--nofaces", type=Path, help="the detector benchmark's face-free photos (BENCH_DIR/nofaces)")
    args = ap.parse_args(argv)

    from PIL import Image

    from ferclient.faces import FaceDetector
    from fermodels.data import load_split
    from ferwire.card import ModelCard

    names = ModelCard.load().class_names
    faces, labels = load_split(args.split)
    pick = np.random.default_rng(0).permutation(len(faces))
    pick = np.sort(pick[: args.limit] if args.limit else pick)
    detector = FaceDetector()
    plain = found = 0
    for i in pick:
        folder = args.out / names[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(faces[i]).save(folder / f"{i:05d}.png")
        rgb = np.repeat(faces[i][:, :, None], 3, 2)
        plain += bool(len(detector._pass(rgb, rgb, 1.0)))
        found += bool(detector.detect(rgb))
    n = len(pick)
    print(f"{n} {args.split} crops in {args.out}: a face found in {plain} ({100 * plain / n:.1f} %) as they are, "
          f"{found} ({100 * found / n:.1f} %) with the border pass")
    if args.nofaces:
        photos = sorted(p for p in args.nofaces.iterdir() if p.is_file())
        for side in (48, 96, 160):
            given = 0
            for p in photos:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    k = side / max(im.size)
                    small = im.resize((max(1, round(im.size[0] * k)), max(1, round(im.size[1] * k))), Image.Resampling.BOX)
                given += bool(detector.detect(np.asarray(small)))
            print(f"face-free photos shrunk to {side} px: {given} of {len(photos)} given a face")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
