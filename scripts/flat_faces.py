"""Dim, hazy and backlit faces: what stretching a flat crop's contrast (ferclient's crops, client/faces.py) gives back.

    python scripts/flat_faces.py [--split val] [--limit 0] [--server HOST:PORT]

Each face of the split is lit again (its contrast scaled about its mean, shifted; or darkened by a gamma
curve), then sent as ferclient's crop functions hand it to the encoder, once as it is and once after
_flat_stretched (which changes only crops flatter than almost any FER2013 face). The deployed classifier
(mirror pair, as served) reads both uncompressed; with --server, a real ferserver reads both through the
image codec at its default quality as well. Chosen on val; docs/photos/README.md, "Dim and flat faces".
"""

from __future__ import annotations

import argparse

LIGHTS = (("as they are", 1.0, 0.0, 1.0), ("contrast x0.5", 0.5, 0.0, 1.0), ("contrast x0.3", 0.3, 0.0, 1.0),
          ("contrast x0.3, brighter by 60", 0.3, 60.0, 1.0), ("contrast x0.2, darker by 60", 0.2, -60.0, 1.0),
          ("dark: gamma 2.5, x0.4", 0.4, 0.0, 2.5), ("very dark: gamma 3.5, x0.4", 0.4, 0.0, 3.5))


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--limit", type=int, default=0, help="evenly spaced faces of the split (0: all)")
    p.add_argument("--server", default=None, help="a running ferserver: also measure through the image codec")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from ferclient.faces import FLAT_STD, _flat_stretched
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

    served = ["", " image codec: as they are | stretched |"][bool(args.server)]
    print(f"{len(faces)} {args.split} faces; the deployed classifier uncompressed" + (f"; and {card.model_id} through {args.server}" if args.server else ""))
    print(f"| lighting | crops flatter than {FLAT_STD:g} | uncompressed: as they are | stretched |{served}")
    print("|---|---|---|---|" + ("---|---|" if args.server else ""))
    for name, k, shift, gamma in LIGHTS:
        lit = relit(faces, k, shift, gamma)
        views = list(lit)
        each = [_flat_stretched(f) for f in views]
        flat = 100.0 * float(np.mean([s is not f for s, f in zip(each, views)]))  # _flat_stretched returns any other crop itself
        stretched = np.stack(each)
        row = f"| {name} | {flat:.1f} % | {accuracy(lit):.2f} % | {accuracy(stretched):.2f} % |"
        if args.server:
            for crops in (lit, stretched):
                row += f" {100.0 * float((recognise(args.server, card.path, crops) == labels).mean()):.2f} % |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
