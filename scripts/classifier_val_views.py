"""Score a classifier on val exactly as `fertrain classifier --decoded M --robust` scores its epochs.

    python scripts/classifier_val_views.py CLASSIFIER [--decoded MODEL_DIR] [--seed 5]

Single pass (no mirror average), uncompressed and decoded at every quality of MODEL_DIR, for each
val face and for its realistic-crop copy (fermodels.perturb.random_perturbations with the run's
--seed): the starting point of a --robust fine-tune, on the same views as its log.jsonl rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fermodels import argtypes

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the default works from any working directory


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("classifier", type=Path, help="classifier.pt, a fertrain checkpoint or a model directory")
    p.add_argument("--decoded", default=str(ROOT / "models" / "weights" / "fercodec-v1"),
                   help="model directory (or bundled model's name) whose qualities decode the views (default: the image codec)")
    p.add_argument("--seed", type=argtypes.checked(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"), default=5,
                   help="the fine-tune's --seed (it seeds the perturbed copies)")
    args = p.parse_args(argv)
    if not args.classifier.exists():
        p.error(f"{args.classifier}: no such file or directory")

    from ferwire.card import ModelCard

    try:  # both models before torch and the minutes of decoding: a path that is not a model is one line
        ModelCard.load(args.decoded)
        import torch

        from fermodels.bundle import load_classifier
        from fermodels.data import load_split
        from fermodels.train import _decoded_views, _robust_views

        clf = load_classifier(args.classifier).eval()
        decoded = _decoded_views(args.decoded)
    except (FileNotFoundError, ValueError) as e:
        print(f"classifier_val_views: {e}", file=sys.stderr)
        return 2
    x, y = load_split("val")
    y = torch.from_numpy(y)
    views = _robust_views(decoded, args.seed)(x)
    half, res = views.shape[1] // 2, {}
    with torch.no_grad():
        for v in range(views.shape[1]):
            k = v % half
            name = ("perturbed_" if v >= half else "") + ("acc" if k == 0 else f"q{k - 1}_acc")
            t = views[:, v : v + 1]
            res[name] = float((torch.cat([clf(t[i : i + 512]).argmax(1) for i in range(0, len(t), 512)]) == y).float().mean())
    res["mean_acc"] = sum(res.values()) / len(res)
    print(json.dumps({k: round(v, 4) for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
