"""A classifier against two labellings of the same faces: FER2013's one annotator and FER+'s crowd majority.

    python -m fermodels.evaluation.crowd --votes runs/ferplus_votes.npz [--split val] MODEL [MODEL ...]

Why: the labels a model is scored on are a convention, and FER2013's and FER+'s agree on only about 64 % of faces
(docs/ferplus). Each MODEL (a model directory, classifier.pt or a fertrain checkpoint) reads the split's dataset
crops directly, one view, no codec; faces without crowd votes count only against FER2013's labels.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..data import DATA_HELP


def agreement(model, faces: np.ndarray, labels: np.ndarray, votes: np.ndarray) -> dict:
    """Accuracy (%) against FER2013's labels and against the crowd's majority, and the faces each counts."""
    import torch

    from ..data import to_tensor

    with torch.no_grad():
        pred = torch.cat([model(to_tensor(faces[i : i + 512])).argmax(1) for i in range(0, len(faces), 512)]).numpy()
    has = votes.sum(1) > 0
    return {"fer2013": 100.0 * float((pred == labels).mean()), "crowd": 100.0 * float((pred[has] == votes[has].argmax(1)).mean()),
            "faces": len(faces), "with_votes": int(has.sum())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fermodels.evaluation.crowd", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="model directories, classifier.pt files or fertrain checkpoints")
    p.add_argument("--votes", required=True, help="the file scripts/ferplus_votes.py writes")
    p.add_argument("--split", default="val", choices=("val", "test"), help="val (PublicTest, default) or test (PrivateTest)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--limit", type=int, default=None, help="N evenly spaced faces (default all)")
    args = p.parse_args(argv)
    from ..bundle import load_classifier
    from ..data import load_crowd_votes, load_split

    try:
        faces, labels = load_split(args.split, args.data, args.limit)
        votes = load_crowd_votes(args.votes, args.split, args.limit, args.data)
        for src in args.models:
            r = agreement(load_classifier(src).eval(), faces, labels, votes)
            print(f"{src}: {r['fer2013']:.2f} % against FER2013's labels ({r['faces']} faces), "
                  f"{r['crowd']:.2f} % against the crowd's majority ({r['with_votes']} with votes)")
    except (OSError, ValueError) as e:
        print(f"python -m fermodels.evaluation.crowd: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
