"""How to enlarge a face that has fewer pixels than the 48x48 crop: bilinear against Lanczos, on val.

    python scripts/small_faces.py [--split val] [--limit 1800] [--sides 24,32,40,64,80]

Each face of the split is photographed again at SIDE px (area-shrunk, or Lanczos-enlarged past 48),
padded, and cut back to 48x48 by ferclient's warp onto FER2013's landmarks (the same similarity
align() uses), once with bilinear taps and once with Lanczos taps. The deployed classifier (mirror
pair, as served) reads both, uncompressed. align() enlarges with Lanczos because of this table
(docs/photos/README.md, "Small faces").
"""

from __future__ import annotations

import argparse

from fermodels import argtypes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--limit", type=argtypes.count, default=1800, help="evenly spaced faces of the split")
    p.add_argument("--sides", type=argtypes.comma_separated(argtypes.positive("px", int)), default="24,32,40,64,80", help="face sides in px, comma-separated")
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch

    from ferclient.faces import FER2013_LANDMARKS, _similarity, warp
    from ferwire.card import ModelCard
    from fermodels.bundle import keep_freed_memory, load_classifier
    from fermodels.data import load_split, to_tensor

    keep_freed_memory()
    clf = load_classifier(ModelCard.load().file("classifier.pt"))
    faces, labels = load_split(args.split, limit=args.limit)

    def accuracy(crops) -> float:
        with torch.inference_mode():
            p = np.concatenate([clf.probabilities(to_tensor(np.stack(crops[i : i + 300]))).numpy() for i in range(0, len(crops), 300)])
        return 100.0 * float((p.argmax(1) == labels).mean())

    marks = FER2013_LANDMARKS.astype(np.float64)
    print(f"{len(faces)} {args.split} faces, deployed classifier, uncompressed")
    print("| face side | bilinear | Lanczos |\n|---|---|---|")
    for side in args.sides:
        crops = {False: [], True: []}
        for face in faces:
            photo = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < 48 else cv2.INTER_LANCZOS4)
            pad = side // 2
            photo = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REFLECT)
            m = _similarity(marks * (side / 48.0) + pad, marks)
            for lanczos in crops:
                crops[lanczos].append(np.clip(np.rint(warp(photo, m, 48, lanczos=lanczos)), 0, 255).astype(np.uint8))
        print(f"| {side} px | {accuracy(crops[False]):.2f} % | {accuracy(crops[True]):.2f} % |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
