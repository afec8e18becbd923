"""Dim, hazy, backlit, blurred and noisy faces: what ferclient's crop preparation (client/faces.py, _typical) gives back.

    python scripts/hard_faces.py [--split val] [--limit 0] [--server HOST:PORT]

Each face of the split is lit again (its contrast scaled about its mean, shifted; or darkened by a gamma
curve), blurred (a Gaussian, a horizontal motion streak, or shrunk to a few pixels and enlarged as align
enlarges) or given Gaussian noise (seeded), then sent as ferclient's crop functions hand it to the encoder: once as
cut and once prepared (_typical: noisy crops smoothed, flat crops stretched, blurred crops sharpened; any other crop
is untouched). The deployed
classifier (mirror pair, as served) reads both uncompressed; with --server, a real ferserver reads both
through the image codec at its default quality as well. Chosen on val; docs/photos/README.md, "Dim and flat
faces", "Blurred faces" and "Noisy faces".
"""

from __future__ import annotations

import argparse

from fermodels import argtypes

# (name, kind, parameters): "light" (contrast k about the mean, shift, gamma), "gauss" (sigma), "motion" (px), "small" (px),
# "noise" (sigma in grey levels)
CONDITIONS = (("as they are", "light", (1.0, 0.0, 1.0)), ("contrast x0.5", "light", (0.5, 0.0, 1.0)),
              ("contrast x0.3", "light", (0.3, 0.0, 1.0)), ("contrast x0.3, brighter by 60", "light", (0.3, 60.0, 1.0)),
              ("contrast x0.2, darker by 60", "light", (0.2, -60.0, 1.0)), ("dark: gamma 2.5, x0.4", "light", (0.4, 0.0, 2.5)),
              ("very dark: gamma 3.5, x0.4", "light", (0.4, 0.0, 3.5)), ("out of focus: Gaussian sigma 1", "gauss", 1.0),
              ("out of focus: Gaussian sigma 1.5", "gauss", 1.5), ("out of focus: Gaussian sigma 2", "gauss", 2.0),
              ("moving: 5 px horizontal streak", "motion", 5), ("far: 32 px face enlarged", "small", 32),
              ("far: 24 px face enlarged", "small", 24), ("noisy: Gaussian noise sigma 6", "noise", 6),
              ("noisy: Gaussian noise sigma 8", "noise", 8), ("noisy: Gaussian noise sigma 12", "noise", 12),
              ("noisy: Gaussian noise sigma 16", "noise", 16))


def relit(faces, k: float, shift: float, gamma: float):
    """uint8 faces lit again: contrast k about each face's mean and a shift, or (gamma > 1) 255 * k * (x/255)^gamma."""
    import numpy as np

    f = faces.astype(np.float64)
    if gamma != 1.0:
        out = 255.0 * k * (f / 255.0) ** gamma
    else:
        m = f.mean(axis=(1, 2), keepdims=True)
        out = (f - m) * k + m + shift
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def degraded(faces, kind: str, value):
    """uint8 faces under one condition of CONDITIONS."""
    import cv2
    import numpy as np

    if kind == "light":
        return relit(faces, *value)
    if kind == "gauss":
        return np.stack([cv2.GaussianBlur(f, (0, 0), value) for f in faces])
    if kind == "noise":
        noise = np.random.default_rng(int(value)).normal(0.0, value, faces.shape)
        return np.clip(np.rint(faces + noise), 0, 255).astype(np.uint8)
    if kind == "motion":
        streak = np.full((1, value), 1.0 / value, np.float32)
        return np.stack([np.clip(np.rint(cv2.filter2D(f.astype(np.float32), -1, streak)), 0, 255).astype(np.uint8) for f in faces])
    from ferclient.faces import _resized  # the enlargement the crop functions use
    from PIL import Image

    return np.stack([_resized(Image.fromarray(f).resize((value, value), Image.Resampling.BOX), f.shape[0]) for f in faces])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--limit", type=argtypes.checked(int, lambda v: v >= 0, "0 (all) or more"), default=0, help="evenly spaced faces of the split (0: all)")
    p.add_argument("--server", default=None, help="a running ferserver: also measure through the image codec")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from ferclient.faces import BLURRED_VAR, FLAT_STD, NOISY_SIGMA, _blur_sharpened, _flat_stretched, _noise_smoothed
    from ferwire.card import ModelCard
    from fermodels.bundle import keep_freed_memory, load_classifier
    from fermodels.data import load_split, to_tensor
    from fermodels.evaluation.photos import recognise

    keep_freed_memory()
    card = ModelCard.load()
    clf = load_classifier(card.file("classifier.pt"))
    faces, labels = load_split(args.split, limit=args.limit or None)

    def accuracy(crops) -> float:
        with torch.inference_mode():
            p = np.concatenate([clf.probabilities(to_tensor(crops[i : i + 300])).numpy() for i in range(0, len(crops), 300)])
        return 100.0 * float((p.argmax(1) == labels).mean())

    served = ["", " image codec: as cut | prepared |"][bool(args.server)]
    print(f"{len(faces)} {args.split} faces; the deployed classifier uncompressed" + (f"; and {card.model_id} through {args.server}" if args.server else ""))
    print(f"| condition | smoothed (noise >= {NOISY_SIGMA:g}) | stretched (centre std < {FLAT_STD:g}) | sharpened (Laplacian var. < {BLURRED_VAR:g}) "
          f"| uncompressed: as cut | prepared |{served}")
    print("|---|---|---|---|---|---|" + ("---|---|" if args.server else ""))
    for name, kind, value in CONDITIONS:
        cut = list(degraded(faces, kind, value))  # views kept, so 'is' below compares the crops handed over
        smoothed = [_noise_smoothed(f) for f in cut]
        stretched = [_flat_stretched(f) for f in smoothed]
        prepared = [_blur_sharpened(s) for s in stretched]
        # each step returns a crop it leaves alone as the same object
        noisy = 100.0 * float(np.mean([s is not f for s, f in zip(smoothed, cut)]))
        flat = 100.0 * float(np.mean([s is not f for s, f in zip(stretched, smoothed)]))
        sharp = 100.0 * float(np.mean([t is not s for t, s in zip(prepared, stretched)]))
        prepared = np.stack(prepared)
        row = f"| {name} | {noisy:.1f} % | {flat:.1f} % | {sharp:.1f} % | {accuracy(np.stack(cut)):.2f} % | {accuracy(prepared):.2f} % |"
        if args.server:
            for crops in (np.stack(cut), prepared):
                row += f" {100.0 * float((recognise(args.server, card.path, crops) == labels).mean()):.2f} % |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
