"""Tilted faces: what ferclient's detector finds and how the classifier reads the crops, by exact tilt.

    python scripts/tilted_faces.py [--split val] [--limit 300] [--tilts 0,15,30,45,60,-30]

Each face of the split is pasted at 64-192 px into a grey canvas twice its size and turned by exactly each
tilt, then found by ferclient's detector three ways: as before 2026-12-05's second change (upright() by quarter
turns, no 45-degree passes, no levelling), with eighth turns and the 45-degree passes, and as shipped (also
levelled()). The deployed classifier reads the aligned crops uncompressed; a face not found counts as wrong.
Chosen on val; docs/photos/README.md, "Faces at any angle", and docs/detector, "What alignment does to accuracy".
"""

from __future__ import annotations

import argparse
import math

# module settings of ferclient.faces per variant
VARIANTS = (("quarter turns", {"UPRIGHT_TURNS": (0, 90, 180, 270), "PHOTO_TILTS": (), "LEVEL_MIN_ROLL": math.inf}),
            ("eighth turns, 45-degree passes", {"LEVEL_MIN_ROLL": math.inf}),
            ("shipped (also levelled)", {}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--limit", type=int, default=300, help="evenly spaced faces of the split (0: all)")
    p.add_argument("--tilts", default="0,15,30,45,60,-30", help="degrees, counter-clockwise")
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch

    import ferclient.faces as faces
    from fermodels.bundle import keep_freed_memory, load_classifier
    from fermodels.data import load_split, to_tensor
    from fermodels.evaluation.photos import _hit
    from ferwire.card import ModelCard

    keep_freed_memory()
    clf = load_classifier(ModelCard.load().file("classifier.pt"))
    crops48, labels = load_split(args.split, limit=args.limit or None)
    shipped = {k: getattr(faces, k) for _, v in VARIANTS for k in v}
    det = faces.FaceDetector()
    print(f"{len(crops48)} {args.split} faces; found / accuracy over all faces (the deployed classifier, uncompressed)")
    print("| tilt | " + " | ".join(name for name, _ in VARIANTS) + " |")
    print("|---|" + "---|" * len(VARIANTS))
    for tilt in (float(t) for t in args.tilts.split(",")):
        rng = np.random.default_rng(0)
        canvases = []
        for face in crops48:
            side = int(rng.integers(64, 193))
            img = np.full((2 * side, 2 * side), 128, np.uint8)
            img[side // 2 : side // 2 + side, side // 2 : side // 2 + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            centre = (side // 2 + side / 2, side // 2 + side / 2)
            m = cv2.getRotationMatrix2D(centre, tilt, 1.0)
            canvases.append((cv2.warpAffine(img, m, img.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), centre, side))
        row = f"| {tilt:g} deg |"
        for _, settings in VARIANTS:
            for k, v in {**shipped, **settings}.items():
                setattr(faces, k, v)
            found, crops = np.zeros(len(crops48), bool), crops48 * 0
            for i, (img, centre, side) in enumerate(canvases):
                hits = [f for f in det.detect(img) if f.size >= faces.MIN_FACE and _hit(f, centre, side)]
                if hits:
                    found[i], crops[i] = True, faces.align(img, max(hits, key=lambda f: f.score))
            with torch.inference_mode():
                right = (clf.probabilities(to_tensor(crops)).argmax(1).numpy() == labels) & found
            row += f" {100 * found.mean():.1f} % / {100 * right.mean():.2f} % |"
        print(row, flush=True)
    for k, v in shipped.items():
        setattr(faces, k, v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
