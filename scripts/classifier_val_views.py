"""Score a classifier on val exactly as `fertrain classifier --decoded M --robust` scores its epochs.

    python scripts/classifier_val_views.py CLASSIFIER [--decoded MODEL_DIR] [--seed 5]

Single pass (no mirror average), uncompressed and decoded at every quality of MODEL_DIR, for each
val face and for its realistic-crop copy (fermodels.perturb.random_perturbations with the run's
--seed): the starting point of a --robust fine-tune, on the same views as its log.jsonl rows.
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> int:
    from fermodels.bundle import load_classifier
    from fermodels.data import load_split
    from fermodels.train import _decoded_views, _robust_views

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("classifier", help="classifier.pt, a fertrain checkpoint or a model directory")
    p.add_argument("--decoded", default="models/weights/fercodec-v1", help="model directory whose qualities decode the views")
    p.add_argument("--seed", type=int, default=5, help="the fine-tune's --seed (it seeds the perturbed copies)")
    args = p.parse_args(argv)
    x, y = load_split("val")
    y = torch.from_numpy(y)
    views = _robust_views(_decoded_views(args.decoded), args.seed)(x)
    clf = load_classifier(args.classifier).eval()
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
