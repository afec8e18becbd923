"""Face crops and close-ups sent as photos (`ferclient send crop.png`, no --no-detect): how many the detector finds.

    python scripts/face_crops.py OUT_DIR [--split val] [--limit 1000] [--side PX] [--nofaces BENCH_DIR/nofaces]
    python scripts/face_crops.py OUT_DIR --photos DIR [--side PX]

Writes `--limit` FER2013 faces of the split (a fixed random draw, seed 0) into OUT_DIR/<class>/ as PNGs, 48x48 or
enlarged to --side px (bicubic), the folder `fereval --folder OUT_DIR [--detect]` reads. With --photos, a folder of
photos with one subfolder per class instead: each photo's largest face, cut to the detector's box and scaled to
--side px on its longer side (a close-up: the face fills the frame). Prints how many of the written images
YuNet finds a face in as they are (the first pass alone) and with every pass `FaceDetector.detect` makes. With
--nofaces, the detector benchmark's face-free photos (docs/detector): the milliseconds detect takes on each, and
the close-up pass's share; then shrunk to 48, 96 and 160 px, the photos given a face. docs/detector/README.md, "Face crops and close-ups".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fermodels import argtypes


def _scaled(im, side: int | None):
    from PIL import Image

    if not side:
        return im
    k = side / max(im.size)
    return im.resize((max(1, round(im.size[0] * k)), max(1, round(im.size[1] * k))), Image.Resampling.BICUBIC)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the images written (one subfolder per class)")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--limit", type=argtypes.checked(int, lambda v: v >= 0, "0 (all) or more"), default=1000, help="faces drawn from the split (0: all)")
    ap.add_argument("--side", type=argtypes.checked(int, lambda v: v >= 0, "0 (as cut) or a number of px"), default=0,
                    help="scale each written image to this many px on its longer side (0: as cut)")
    ap.add_argument("--photos", type=Path, help="cut close-ups from these photos (one subfolder per class) instead of FER2013's crops")
    ap.add_argument("--nofaces", type=Path, help="the detector benchmark's face-free photos (BENCH_DIR/nofaces)")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"{args.out}: a file, not a folder")
    for flag, folder in (("--photos", args.photos), ("--nofaces", args.nofaces)):
        if folder and not folder.is_dir():
            ap.error(f"{flag} {folder}: no such directory")

    from PIL import Image

    from ferclient.faces import FaceDetector, load_rgb
    from fermodels.data import load_split
    from ferwire.card import ModelCard

    detector = FaceDetector()
    written: list[Path] = []
    if args.photos:
        for photo in sorted(p for p in args.photos.glob("*/*") if p.is_file()):
            rgb = load_rgb(photo)[0]
            faces = detector.detect(rgb)
            if not faces:
                continue
            x, y, w, h = faces[0].box
            folder = args.out / photo.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            written.append(folder / f"{photo.stem}.png")
            _scaled(Image.fromarray(rgb[y : y + h, x : x + w]), args.side).save(written[-1])
        what = f"close-ups cut from the photos of {args.photos} with a face found"
    else:
        names = ModelCard.load().class_names
        faces, labels = load_split(args.split)
        pick = np.random.default_rng(0).permutation(len(faces))
        for i in np.sort(pick[: args.limit] if args.limit else pick):
            folder = args.out / names[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            written.append(folder / f"{i:05d}.png")
            _scaled(Image.fromarray(faces[i]), args.side).save(written[-1])
        what = f"{args.split} crops"
    plain = found = 0
    for path in written:
        rgb = load_rgb(path)[0]
        plain += bool(len(detector._pass(rgb, *detector._shrunk(rgb))))
        found += bool(detector.detect(rgb))
    n = max(len(written), 1)
    print(f"{len(written)} {what} in {args.out}: a face found in {plain} ({100 * plain / n:.1f} %) as they are, "
          f"{found} ({100 * found / n:.1f} %) with every pass")
    if args.nofaces:
        import time

        photos = [load_rgb(p)[0] for p in sorted(args.nofaces.iterdir()) if p.is_file()]
        every = close_up = 0.0
        for rgb in photos:
            small = detector._shrunk(rgb)[0]  # what detect hands the pass
            t0 = time.perf_counter()
            detector.detect(rgb)
            t1 = time.perf_counter()
            detector._close_up(small)
            every, close_up = every + t1 - t0, close_up + time.perf_counter() - t1
        print(f"face-free photos as they are: {1000 * every / len(photos):.0f} ms each with every pass, "
              f"of which the close-up pass {1000 * close_up / len(photos):.1f} ms")
        for side in (48, 96, 160):
            given = sum(bool(detector.detect(np.asarray(_scaled(Image.fromarray(rgb), side)))) for rgb in photos)
            print(f"face-free photos shrunk to {side} px: {given} of {len(photos)} given a face")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
