"""The `fer` package (mini-Xception, trained on FER2013 too) on a labelled folder, as its users run it.

Why: the baseline users would pick instead of fercodec for expressions, measured on the same faces as
`fereval --folder DIR [--detect]`, so the two tables compare. Each image goes to `FER().detect_emotions`
(as BGR, what it expects of an array): with --detect its own detector (OpenCV's Haar cascade, the package
default) finds the faces and the largest one counts (none found: wrong); without, the face box given is the
image shrunk by the package's 10-pixel offsets, so that the crop its classifier reads is exactly the whole
image, as `--no-detect` sends it.
`contempt` and other folders that are not FER2013 classes are skipped, as fereval does.

Needs `fer` and TensorFlow, which fercodec does not depend on; run it from a separate environment:

    python3 -m venv /tmp/ferenv && /tmp/ferenv/bin/pip install fer
    /tmp/ferenv/bin/python scripts/fer_package_baseline.py DIR [--detect] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
OFFSET = 10  # FER(offsets=(10, 10)), the package default: it widens every face box by this much on each side before cropping
ALIASES = {"anger": "angry", "happiness": "happy", "sadness": "sad"}  # folder names other collections use


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="one subfolder of images per class")
    p.add_argument("--detect", action="store_true", help="find the face with fer's own detector instead of using the whole image")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    root = Path(args.folder)
    if not root.is_dir():
        p.error(f"{root}: no such directory")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        p.error(f"--out {args.out}: no folder {Path(args.out).parent} to write it into")
    items = [(f, ALIASES.get(d.name.lower(), d.name.lower())) for d in sorted(root.iterdir()) if d.is_dir() for f in sorted(d.iterdir()) if f.is_file()]
    items = [(f, c) for f, c in items if c in CLASSES]
    if not items:
        p.error(f"{root}: no images in subfolders named for a class ({', '.join(CLASSES)})")

    import numpy as np
    from PIL import Image

    try:
        from fer.fer import FER
    except ModuleNotFoundError as e:  # fercodec's environment has no fer (nor TensorFlow): the docstring's separate one does
        print(f"fer_package_baseline: needs the `fer` package and TensorFlow ({e}); run it from a separate environment: "
              "python3 -m venv /tmp/ferenv && /tmp/ferenv/bin/pip install fer", file=sys.stderr)
        return 2

    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety
        def tqdm(x, **_):
            return x

    detector = FER(mtcnn=False, offsets=(OFFSET, OFFSET))
    right: dict[str, list[int]] = {c: [] for c in CLASSES}
    missed = 0
    for f, truth in tqdm(items, desc="fer", unit="image"):
        bgr = np.ascontiguousarray(np.asarray(Image.open(f).convert("RGB"))[..., ::-1])
        h, w = bgr.shape[:2]
        faces = detector.detect_emotions(bgr) if args.detect else detector.detect_emotions(bgr, face_rectangles=[(OFFSET, OFFSET, w - 2 * OFFSET, h - 2 * OFFSET)])
        if not faces:
            missed += 1
            right[truth].append(0)
            continue
        face = max(faces, key=lambda r: r["box"][2] * r["box"][3])
        right[truth].append(int(max(face["emotions"], key=face["emotions"].get) == truth))
    present = {c: v for c, v in right.items() if v}
    out = {"folder": str(root), "detect": args.detect, "images": len(items), "no_face": missed,
           "accuracy": sum(map(sum, present.values())) / len(items),
           "mean_recall": float(np.mean([np.mean(v) for v in present.values()])),
           "recall": {c: float(np.mean(v)) for c, v in present.items()}}
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
