"""Tilted faces: what ferclient's detector finds, how far alignment levels them, how the classifier reads the crops.

    python scripts/tilted_faces.py [--split val] [--limit 300] [--tilts 0,15,30,45,60,-30] [--sides 64-192]
    python scripts/tilted_faces.py --folder DIR [--scale 0.35] [--tilts 15,-15,30,-30] [--limit 300]
    ... [--also 'NAME:SETTING=VALUE[,SETTING=VALUE]']     # one more column, ferclient.faces settings changed

FER2013 mode: each face of the split is pasted at --sides px into a grey canvas twice its size and turned by
exactly each tilt, then found by ferclient's detector three ways: as before 2026-12-05's second change
(upright() by quarter turns, no 45-degree passes, no levelling), with eighth turns and the 45-degree passes,
and as shipped (also levelled()). The deployed classifier reads the aligned crops uncompressed; a face not
found counts as wrong. Each cell also gives the median tilt of the eye line that alignment levels, over the
faces found: at 0 degrees it is the faces' own (FER2013 faces are not level), and the closer a row's figure
comes to that plus the row's tilt, the more of the tilt alignment takes out.

Folder mode (real photos, no labels needed): each image under DIR (every --limit-th evenly, optionally shrunk by
--scale to make its face smaller) is read as ferclient reads it; its largest face's eye line is measured untilted,
then the image is turned by each tilt (Pillow, expanded, grey fill) and found again each way. The error is the
eye line found minus (the untilted one + the tilt): how faithfully alignment follows a tilt on sharp photos.

Chosen on val (and on photos of people never trained on); docs/photos/README.md, "Faces at any angle", and
docs/detector, "What alignment does to accuracy".
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from fermodels import argtypes

# module settings of ferclient.faces per variant
VARIANTS = (("quarter turns", {"UPRIGHT_TURNS": (0, 90, 180, 270), "PHOTO_TILTS": (), "LEVEL_MIN_ROLL": math.inf}),
            ("eighth turns, 45-degree passes", {"LEVEL_MIN_ROLL": math.inf}),
            ("shipped (also levelled)", {}))
FOLDER_VARIANTS = VARIANTS[1:]  # on photos of upright people, quarter turns and eighth turns differ only past 45 degrees


def _variant(text: str) -> tuple[str, dict]:
    """'NAME:SETTING=VALUE,SETTING=VALUE' -> (NAME, {SETTING: number})."""
    name, _, settings = text.partition(":")
    out = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item.strip()}: not a number, in {text}") from None
    if not name or not out:
        raise argparse.ArgumentTypeError(f"expected NAME:SETTING=VALUE[,SETTING=VALUE], got {text}")
    return name, out


def _sides(text: str) -> tuple[int, int]:
    """'LO-HI' px -> (LO, HI)."""
    lo, _, hi = text.partition("-")
    if not (lo.isdigit() and hi.isdigit() and 0 < int(lo) <= int(hi)):
        raise argparse.ArgumentTypeError(f"must be LO-HI px, 0 < LO <= HI, got {text}")
    return int(lo), int(hi)


def _apply(faces, settings: dict) -> None:
    for k, v in settings.items():
        if not hasattr(faces, k):
            raise SystemExit(f"ferclient.faces has no setting {k}")
        setattr(faces, k, v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--limit", type=argtypes.checked(int, lambda v: v >= 0, "0 (all) or more"), default=300, help="evenly spaced faces of the split, or images of --folder (0: all)")
    p.add_argument("--tilts", type=argtypes.comma_separated(argtypes.checked(float, math.isfinite, "a number of degrees")), default=None,
                   help="degrees, counter-clockwise (default 0,15,30,45,60,-30; --folder: 15,-15,30,-30)")
    p.add_argument("--sides", type=_sides, default="64-192", help="px, the pasted face's side: LO-HI, drawn evenly")
    p.add_argument("--folder", help="real photos instead: how faithfully the eye line follows a tilt")
    p.add_argument("--scale", type=argtypes.checked(float, lambda v: 0 < v < math.inf, "a positive factor"), default=1.0,
                   help="--folder: shrink each image by this first (smaller faces)")
    p.add_argument("--also", action="append", default=[], type=_variant, metavar="NAME:SETTING=VALUE", help="one more variant (repeatable)")
    args = p.parse_args(argv)
    if args.folder and not Path(args.folder).is_dir():
        p.error(f"--folder {args.folder}: no such directory")

    import ferclient.faces as faces

    unknown = sorted({k for _, settings in args.also for k in settings if not hasattr(faces, k)})
    if unknown:
        p.error(f"argument --also: ferclient.faces has no setting {', '.join(unknown)}")

    variants = (FOLDER_VARIANTS if args.folder else VARIANTS) + tuple(args.also)
    shipped = {k: getattr(faces, k) for _, v in variants for k in v if hasattr(faces, k)}
    try:
        if args.folder:
            _folder(args, faces, variants, shipped)
        else:
            _fer2013(args, faces, variants, shipped)
    finally:
        _apply(faces, shipped)
    return 0


def _fer2013(args, faces, variants, shipped) -> None:
    import cv2
    import numpy as np
    import torch

    from fermodels.bundle import keep_freed_memory, load_classifier
    from fermodels.data import load_split, to_tensor
    from fermodels.evaluation.photos import _hit
    from ferwire.card import ModelCard

    lo, hi = args.sides
    keep_freed_memory()
    clf = load_classifier(ModelCard.load().file("classifier.pt"))
    crops48, labels = load_split(args.split, limit=args.limit or None)
    det = faces.FaceDetector()
    print(f"{len(crops48)} {args.split} faces at {lo}-{hi} px; found / accuracy over all faces (the deployed classifier, uncompressed) / "
          "median eye-line tilt levelled")
    print("| tilt | " + " | ".join(name for name, _ in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for tilt in args.tilts or (0.0, 15.0, 30.0, 45.0, 60.0, -30.0):
        rng = np.random.default_rng(0)
        canvases = []
        for face in crops48:
            side = int(rng.integers(lo, hi + 1))
            img = np.full((2 * side, 2 * side), 128, np.uint8)
            img[side // 2 : side // 2 + side, side // 2 : side // 2 + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC if side > 48 else cv2.INTER_AREA)
            centre = (side // 2 + side / 2, side // 2 + side / 2)
            m = cv2.getRotationMatrix2D(centre, tilt, 1.0)
            canvases.append((cv2.warpAffine(img, m, img.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), centre, side))
        row = f"| {tilt:g} deg |"
        for _, settings in variants:
            _apply(faces, {**shipped, **settings})
            found, crops, rolls = np.zeros(len(crops48), bool), crops48 * 0, []
            for i, (img, centre, side) in enumerate(canvases):
                hits = [f for f in det.detect(img) if f.size >= faces.MIN_FACE and _hit(f, centre, side)]
                if hits:
                    face = max(hits, key=lambda f: f.score)
                    found[i], crops[i] = True, faces.align(img, face)
                    rolls.append(-face.roll)  # counter-clockwise, as a tilt is given
            with torch.inference_mode():
                right = (clf.probabilities(to_tensor(crops)).argmax(1).numpy() == labels) & found
            row += f" {100 * found.mean():.1f} % / {100 * right.mean():.2f} % / {np.median(rolls) if rolls else math.nan:.1f} |"
        print(row, flush=True)


def _folder(args, faces, variants, shipped) -> None:
    import numpy as np
    from PIL import Image

    from fermodels.evaluation.folder import IMAGE_SUFFIXES

    files = sorted(f for f in Path(args.folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if args.limit and len(files) > args.limit:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, args.limit)]
    tilts = args.tilts or [15.0, -15.0, 30.0, -30.0]
    det = faces.FaceDetector()
    errors: dict = {}
    sizes = []
    for f in files:
        _apply(faces, shipped)
        im = Image.fromarray(faces.load_rgb(f)[0])
        if args.scale != 1.0:
            im = im.resize((max(1, round(im.width * args.scale)), max(1, round(im.height * args.scale))), Image.Resampling.LANCZOS)
        found = [g for g in det.detect(np.asarray(im)) if g.size >= faces.MIN_FACE]
        if not found:
            continue
        sizes.append(found[0].size)
        upright = -found[0].roll  # counter-clockwise, as a tilt is given
        for tilt in tilts:
            turned = np.asarray(im.rotate(tilt, Image.Resampling.BILINEAR, expand=True, fillcolor=(90, 90, 90)))
            for name, settings in variants:
                _apply(faces, {**shipped, **settings})
                again = [g for g in det.detect(turned) if g.size >= faces.MIN_FACE]
                if again:
                    errors.setdefault((tilt, name), []).append(-again[0].roll - upright - tilt)
    print(f"{len(sizes)} of {len(files)} images of {args.folder} with a face found (scale {args.scale:g}; face side median "
          f"{np.median(sizes) if sizes else math.nan:.0f} px); eye line found turned minus (untilted + tilt), degrees: median / mean absolute")
    print("| tilt | " + " | ".join(name for name, _ in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for tilt in tilts:
        cells = [np.array(errors.get((tilt, name), [math.nan])) for name, _ in variants]
        print(f"| {tilt:g} deg | " + " | ".join(f"{np.median(e):+.1f} / {np.mean(np.abs(e)):.1f}" for e in cells) + " |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
