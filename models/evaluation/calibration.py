"""Calibrated confidences: a temperature per shipped model, fitted on val, checked on test.

    python -m fermodels.evaluation.calibration [--write] [--out docs/calibration]

For each bundled model, FER2013 val (PublicTest) and test (PrivateTest) faces go the deployed way
(ferclient's encoder at the default setting, a real ferserver on loopback) and come back as the
probabilities users see. The temperature T minimising val's negative log-likelihood is the one the
server applies (softmax(log p / T), ferwire.card.tempered; argmax unchanged). Reported on test:
expected calibration error (15 equal-width confidence bins) before and after, NLL, accuracy and the
recall of every class. --write stores T in each model.json (the server reads it at start).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from ferwire.card import tempered

BINS = 15


def ece(p: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: confidence vs accuracy, weighted over equal-width confidence bins."""
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return float(total)


def nll(p: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(p: np.ndarray, labels: np.ndarray) -> float:
    """The T in 0.25..5 (step 0.01) with the lowest NLL of softmax(log p / T)."""
    grid = np.round(np.arange(0.25, 5.0001, 0.01), 2)
    return float(min(grid, key=lambda t: nll(tempered(p, t), labels)))


def recalls(p: np.ndarray, labels: np.ndarray, names) -> dict[str, float]:
    pred = p.argmax(1)
    return {n: float((pred[labels == k] == k).mean()) for k, n in enumerate(names)}


def calibrate(address: str, model_dir, data=None, limit=None) -> dict:
    from ferwire.card import ModelCard

    from ..data import load_split
    from .photos import server_probabilities

    card = ModelCard.load(model_dir)
    # The server already applies the model's current T; undo it so the fit starts from the raw probabilities.
    raw = {}
    for split in ("val", "test"):
        faces, labels = load_split(split, data, limit)
        raw[split] = (tempered(server_probabilities(address, card.path, faces), 1.0 / card.temperature), labels)
    t = fit_temperature(*raw["val"])
    row = {"model": card.model_id, "path": str(card.path), "temperature": t, "previous_temperature": card.temperature}
    for split, (p, y) in raw.items():
        q = tempered(p, t)
        row[split] = {"faces": int(len(y)), "accuracy": float((p.argmax(1) == y).mean()), "ece_before": ece(p, y), "ece_after": ece(q, y),
                      "nll_before": nll(p, y), "nll_after": nll(q, y), "mean_confidence_before": float(p.max(1).mean()),
                      "mean_confidence_after": float(q.max(1).mean()), "recall": recalls(p, y, card.class_names)}
    return row


def markdown(rows: list[dict], command: str) -> str:
    names = list(rows[0]["test"]["recall"])
    lines = [
        "# Calibration and per-class recall",
        "",
        f"Command: `{command}`. Deployed path: ferclient's encoder at the default setting, a real ferserver on loopback.",
        f"T is fitted on val (PublicTest) by NLL; ECE uses {BINS} equal-width confidence bins. Temperature changes no label.",
        "",
        "| model | T | split | accuracy | mean confidence, before -> after | ECE, before -> after | NLL, before -> after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for split in ("val", "test"):
            s = r[split]
            lines.append(f"| {r['model']} | {r['temperature']:.2f} | {split} | {100 * s['accuracy']:.2f} % | {s['mean_confidence_before']:.3f} -> {s['mean_confidence_after']:.3f} | "
                         f"{s['ece_before']:.4f} -> {s['ece_after']:.4f} | {s['nll_before']:.4f} -> {s['nll_after']:.4f} |")
    lines += ["", "Recall of each class on test (PrivateTest):", "", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{100 * r['test']['recall'][n]:.1f} %" for n in names) + " |")
    return "\n".join(lines) + "\n"


def write_temperature(model_dir, t: float) -> None:
    meta = Path(model_dir) / "model.json"
    d = json.loads(meta.read_text())
    d["temperature"] = t
    meta.write_text(json.dumps(d, indent=2) + "\n")


def main(argv=None) -> int:
    from ferserver.process import ServerProcess
    from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m fermodels.evaluation.calibration", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", action="append", default=None, help="model directory (repeatable; default both bundled models)")
    p.add_argument("--data", default=None, help="FER2013 npz (default ../shared or $FERCODEC_DATA)")
    p.add_argument("--limit", type=int, default=None, help="N evenly spaced faces per split (default all)")
    p.add_argument("--write", action="store_true", help="store each fitted T in its model.json")
    p.add_argument("--out", type=Path, default=Path("docs/calibration"))
    args = p.parse_args(argv)
    dirs = args.model_dir or [DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR]
    try:
        with ServerProcess("--model-dir", ",".join(str(d) for d in dirs)) as server:
            rows = [calibrate(server.address, d, args.data, args.limit) for d in dirs]
    except (OSError, ValueError, RuntimeError) as e:
        print(f"calibration: {e}", file=sys.stderr)
        return 2
    if args.write:
        for r in rows:
            write_temperature(r["path"], r["temperature"])
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, shlex.join(["python", "-m", "fermodels.evaluation.calibration", *argv]))
    (args.out / "calibration.json").write_text(json.dumps(rows, indent=1))
    (args.out / "README.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
