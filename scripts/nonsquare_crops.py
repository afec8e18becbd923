#!/usr/bin/env python3
"""Non-square face crops sent with --no-detect: FER2013 val faces (enlarged to 96 px) cut to 3:4 and 4:3, read
stretched to a square, cut to their centre square, or padded to a square with their sides mirrored (what
ferclient.faces.whole does), by the shipped image codec's classifier, uncompressed. Prints one accuracy per way."""

from __future__ import annotations

import argparse

import numpy as np


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--limit", type=int, default=1500, help="val faces used (0: all 3,589)")
    p.add_argument("--model-dir", default="models/weights/fercodec-v1", help="model whose classifier reads the crops")
    args = p.parse_args(argv)
    if args.limit < 0:
        p.error("--limit must be 0 or more")

    import torch
    from PIL import Image

    from ferclient.faces import _resized, _typical, squared
    from fermodels.bundle import load_classifier
    from fermodels.data import load_split

    try:
        clf = load_classifier(args.model_dir).eval()
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    x, y = load_split("val")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    faces = [np.asarray(Image.fromarray(f).resize((96, 96), Image.Resampling.LANCZOS)) for f in x]

    def accuracy(crops: list[np.ndarray]) -> float:
        t = torch.from_numpy(np.stack([_typical(_resized(Image.fromarray(c), 48)) for c in crops])).float().div(255)[:, None]
        with torch.inference_mode():
            prob = torch.cat([clf.probabilities(t[i : i + 500]) for i in range(0, len(t), 500)])
        return 100.0 * float((prob.argmax(1).numpy() == y).mean())

    def centre(g: np.ndarray) -> np.ndarray:
        h, w = g.shape
        s = min(h, w)
        return g[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]

    print(f"{len(y)} val faces; as they are (square): {accuracy(faces):.2f} %")
    print("| cut off (of 96 px) | stretched | centre square | padded |\n|---|---|---|---|")
    for cut in (12, 24):
        for where, crops in (("sides", [f[:, cut // 2 : 96 - cut // 2] for f in faces]), ("top and bottom", [f[cut // 2 : 96 - cut // 2] for f in faces])):
            print(f"| {cut} px, {where} | {accuracy(crops):.2f} % | {accuracy([centre(c) for c in crops]):.2f} % | {accuracy([squared(c) for c in crops]):.2f} % |")


if __name__ == "__main__":
    main()
