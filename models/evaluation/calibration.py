"""Calibrated answers: a prior correction and a temperature per shipped model, fitted on val, checked on test.

    python -m fermodels.evaluation.calibration [--write] [--prior-strength S] [--out docs/calibration]

For each bundled model, FER2013 val (PublicTest) and test (PrivateTest) faces go the deployed way
(ferclient's encoder at the default setting, a real ferserver on loopback) and come back as the
probabilities users see; the model card's current correction is undone to start from the raw ones.
The server reports softmax((log p - s log prior) / T) (ferwire.card.tempered), prior being the class
balance the model learned: model.json's train_prior where it has one (a model trained toward other
targets, docs/ferplus), else FER2013 train's labels'. s (logit adjustment) takes back part of that balance: a quarter of FER2013's
faces are happy and 1.4 % disgust, and a collection the model has never seen has its own balance.
s and T are fitted together on val by class-balanced NLL (each class weighs the same), so the
correction is chosen for an unknown balance, not FER2013's. T alone changes no label; s does.
Reported on val and test: accuracy, mean recall, expected calibration error (15 equal-width
confidence bins), NLL and balanced NLL, before (raw) and after, and the recall of every class.
--write stores s, the prior and T in each model.json (the server reads them at start).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from ferwire.card import tempered

from .. import argtypes, progress_bar
from ..data import DATA_HELP

BINS = 15


def ece(p: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: confidence vs accuracy, weighted over equal-width confidence bins (reliability's)."""
    return float(sum(n * abs(right - conf) for n, conf, right in reliability(p, labels, bins)) / len(labels))


def nll(p: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())


def balanced_nll(p: np.ndarray, labels: np.ndarray) -> float:
    """NLL with each face weighted by 1 / its class's count: every class present counts the same."""
    w = 1.0 / np.bincount(labels)[labels]
    return float((w * -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))).sum() / w.sum())


def mean_recall(p: np.ndarray, labels: np.ndarray) -> float:
    pred = p.argmax(1)
    return float(np.mean([(pred[labels == k] == k).mean() for k in np.unique(labels)]))


TEMPERATURES = np.round(np.arange(0.25, 5.0001, 0.01), 2)
STRENGTHS = np.round(np.arange(0.0, 1.5001, 0.05), 2)


def fit_temperature(p: np.ndarray, labels: np.ndarray, log_bias: np.ndarray | None = None, loss=nll) -> float:
    """The T in 0.25..5 (step 0.01) with the lowest `loss` of softmax((log p + log_bias) / T)."""
    return float(min(TEMPERATURES, key=lambda t: loss(tempered(p, t, log_bias), labels)))


def fit_correction(p: np.ndarray, labels: np.ndarray, prior: np.ndarray, strength: float | None = None, progress=None) -> tuple[float, float]:
    """(s, T) with the lowest class-balanced NLL of softmax((log p - s log prior) / T): s in 0..1.5 (step 0.05)
    unless given, T as fit_temperature. Balanced, so that the fit does not learn FER2013's class balance back.
    progress: wraps the strengths tried (a tqdm bar; on all of val the grid takes seconds)."""
    log_prior = np.log(prior)
    strengths = STRENGTHS if strength is None else [strength]
    fits = [(s, fit_temperature(p, labels, -s * log_prior, balanced_nll)) for s in (progress or list)(strengths)]
    return min(fits, key=lambda st: balanced_nll(tempered(p, st[1], -st[0] * log_prior), labels))


def recalls(p: np.ndarray, labels: np.ndarray, names) -> dict[str, float]:
    """Recall of every class; NaN for a class with no face (a --limit subset can lack one)."""
    pred = p.argmax(1)
    return {n: float((pred[labels == k] == k).mean()) if (labels == k).any() else float("nan") for k, n in enumerate(names)}


def raw_probabilities(q: np.ndarray, card) -> np.ndarray:
    """Undo what the server applied (card.served): softmax(T log q - log_bias) gives back the model's own p."""
    x = tempered(q, 1.0 / card.temperature)
    return x if card.log_bias is None else tempered(x, 1.0, -card.log_bias)


def train_prior(data=None) -> np.ndarray:
    """FER2013 train's class shares (the labels alone are read)."""
    from ..data import load_labels

    y = load_labels("train", data)
    return np.bincount(y) / len(y)


def reliability(p: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[list[float]]:
    """Per equal-width confidence bin (ece's): [faces, mean confidence, accuracy]; an empty bin is [0, 0, 0]."""
    conf, right = p.max(1), p.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        out.append([int(m.sum()), float(conf[m].mean()) if m.any() else 0.0, float(right[m].mean()) if m.any() else 0.0])
    return out


def confusion(p: np.ndarray, labels: np.ndarray, classes: int) -> list[list[int]]:
    """Counts [true class][answered class]."""
    return np.bincount(labels * classes + p.argmax(1), minlength=classes * classes).reshape(classes, classes).tolist()


def _measures(p: np.ndarray, y: np.ndarray, names) -> dict:
    return {"accuracy": float((p.argmax(1) == y).mean()), "mean_recall": mean_recall(p, y), "ece": ece(p, y), "nll": nll(p, y),
            "balanced_nll": balanced_nll(p, y), "mean_confidence": float(p.max(1).mean()), "recall": recalls(p, y, names),
            "reliability": reliability(p, y), "confusion": confusion(p, y, len(names))}


SERVER_CHUNK = 512  # faces per server_probabilities call: a multiple of its 64-face requests, so the server sees the same batches


def _served(address: str, card, faces: np.ndarray, desc: str) -> np.ndarray:
    """photos.server_probabilities of faces, SERVER_CHUNK at a time under a bar. Why: every val and test face goes
    through ferclient's encoder and a real server, minutes for both models, and nothing was shown until the table."""
    from .photos import server_probabilities

    out = []
    with progress_bar(desc, len(faces)) as bar:
        for i in range(0, len(faces), SERVER_CHUNK):
            out.append(server_probabilities(address, card.path, faces[i : i + SERVER_CHUNK]))
            bar.update(len(out[-1]))
    return np.concatenate(out)


def calibrate(address: str, model_dir, data=None, limit=None, strength: float | None = None) -> dict:
    from ferwire.card import ModelCard

    from ..data import load_split

    card = ModelCard.load(model_dir)
    raw = {}
    for split in ("val", "test"):
        faces, labels = load_split(split, data, limit)
        raw[split] = (raw_probabilities(_served(address, card, faces, f"{card.model_id}: {split} faces through the server"), card), labels)
    # The balance the model learned: the card's, where an earlier fit or its trainer wrote one (a model trained on other
    # targets than FER2013's labels, e.g. docs/ferplus), else FER2013 train's labels'.
    prior = np.asarray(card.train_prior) if card.train_prior else train_prior(data)
    s, t = fit_correction(*raw["val"], prior, strength, lambda it: progress_bar(f"{card.model_id}: fitting s and T on val", unit="strength", iterable=it))
    row = {"model": card.model_id, "path": str(card.path), "prior_strength": s, "train_prior": prior.tolist(), "temperature": t,
           "previous": {"prior_strength": card.prior_correction, "temperature": card.temperature}}
    for split, (p, y) in raw.items():
        row[split] = {"faces": int(len(y)), "before": _measures(p, y, card.class_names),
                      "after": _measures(tempered(p, t, -s * np.log(prior)), y, card.class_names)}
    return row


def markdown(rows: list[dict], command: str) -> str:
    names = list(rows[0]["test"]["before"]["recall"])
    prior = "; ".join(f"{r['model']}: " + ", ".join(f"{n} {100 * v:.1f} %" for n, v in zip(names, r["train_prior"])) for r in rows)
    lines = [
        "# Calibration: prior correction, temperature and per-class recall",
        "",
        f"Command: `{command}`. Deployed path: ferclient's encoder at the default setting, a real ferserver on loopback.",
        "",
        "The server reports softmax((log p - s log prior) / T) of the model's mirror-averaged probabilities p. prior is the class",
        f"balance the model was trained toward: FER2013 train's labels' unless model.json gives another ({prior}). The correction s (logit adjustment, Menon et al. 2021) takes",
        "part of that balance back out of the answers, so that a rare class such as disgust is not ruled out for being rare:",
        "a collection the model has never seen has its own balance. s and T are fitted together on val (PublicTest) by",
        "class-balanced NLL (each class weighs the same); test (PrivateTest) is reported, not used. T changes no label; s does.",
        f"Before: the raw probabilities (s = 0, T = 1). ECE: {BINS} equal-width confidence bins.",
        "",
        "![reliability diagrams and confusion matrices on test](calibration.png)",
        "",
        "| model | s | T | split | accuracy | mean recall | ECE | NLL | balanced NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for split in ("val", "test"):
            b, a = r[split]["before"], r[split]["after"]
            lines.append(f"| {r['model']} | {r['prior_strength']:.2f} | {r['temperature']:.2f} | {split} | {100 * b['accuracy']:.2f} -> {100 * a['accuracy']:.2f} % | "
                         f"{100 * b['mean_recall']:.2f} -> {100 * a['mean_recall']:.2f} % | {b['ece']:.4f} -> {a['ece']:.4f} | {b['nll']:.4f} -> {a['nll']:.4f} | "
                         f"{b['balanced_nll']:.4f} -> {a['balanced_nll']:.4f} |")
    lines += ["", "Recall of each class on test (PrivateTest), before -> after:", "", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        b, a = r["test"]["before"]["recall"], r["test"]["after"]["recall"]
        lines.append(f"| {r['model']} | " + " | ".join(f"{100 * b[n]:.1f} -> {100 * a[n]:.1f} %" for n in names) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """calibration.png, test (PrivateTest) per model: the reliability diagram before and after the correction (a point per
    confidence bin, its size the bin's faces; on the diagonal, a confidence means what it says) and the confusion matrix
    after it, each row the true class in % (where fear and sad go)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows[0]["test"]["after"]["recall"])
    fig, axes = plt.subplots(2, len(rows), figsize=(5.2 * len(rows), 9.6), dpi=110, squeeze=False)
    for k, r in enumerate(rows):
        ax = axes[0][k]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for when, colour, label in (("before", "C7", f"raw (ECE {r['test']['before']['ece']:.3f})"),
                                    ("after", "C0", f"served: s {r['prior_strength']:.2f}, T {r['temperature']:.2f} (ECE {r['test']['after']['ece']:.3f})")):
            bins = [b for b in r["test"][when]["reliability"] if b[0]]
            total = sum(b[0] for b in bins)
            ax.plot([b[1] for b in bins], [b[2] for b in bins], "-", color=colour, lw=1, label=label)
            ax.scatter([b[1] for b in bins], [b[2] for b in bins], s=[1500 * b[0] / total for b in bins], color=colour, alpha=0.6)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence of the answer", ylabel="fraction of answers right",
               title=f"{r['model']}: reliability, test ({r['test']['faces']} faces)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[1][k]
        m = np.asarray(r["test"]["after"]["confusion"], float)
        pct = 100 * m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=8, color="white" if pct[i, j] > 55 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), [f"{n} ({int(c)})" for n, c in zip(names, m.sum(1))], fontsize=8)
        ax.set(xlabel="answered", ylabel="true class (faces)", title=f"{r['model']}: confusion, test (% of each row)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_calibration(model_dir, row: dict) -> None:
    """Store the fitted s (with the prior it applies to) and T in the directory's model.json."""
    meta = Path(model_dir) / "model.json"
    d = json.loads(meta.read_text())
    d["temperature"] = row["temperature"]
    d["prior_correction"] = {"strength": row["prior_strength"], "train_prior": [round(v, 6) for v in row["train_prior"]]}
    meta.write_text(json.dumps(d, indent=2) + "\n")


def main(argv=None) -> int:
    from ferserver.process import ServerProcess
    from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m fermodels.evaluation.calibration", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", action="append", default=None, help="model directory (repeatable; default both bundled models)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--limit", type=argtypes.count, default=None, help="N evenly spaced faces per split (default all; a quick look: "
                                                                          "nothing is written unless --out is given, and --write is refused)")
    p.add_argument("--prior-strength", type=float, default=None, metavar="S",
                   help="use this prior correction instead of fitting it (0: temperature only)")
    p.add_argument("--write", action="store_true", help="store each fitted s and T in its model.json")
    p.add_argument("--replot", action="store_true", help="measure nothing: draw calibration.png again from --out's calibration.json")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for README.md and calibration.json (default: this checkout's docs/calibration, the committed figures; "
                        "with --limit, none)")
    args = p.parse_args(argv)
    if args.write and args.limit:  # s and T fitted on a sample went into model.json without a word
        p.error("--write stores s and T in model.json: fit them on every val face (drop --limit)")
    if args.out is None and not args.limit:
        args.out = Path(__file__).resolve().parents[2] / "docs" / "calibration"
    if args.out is not None and args.out.exists() and not args.out.is_dir():  # checked before --write changes any model.json
        p.error(f"--out {args.out} is a file; give a folder")
    if args.prior_strength is not None and not 0 <= args.prior_strength <= 10:
        p.error(f"--prior-strength {args.prior_strength:g}: give a strength between 0 and 10")
    if args.replot:
        if args.out is None or not (args.out / "calibration.json").is_file():
            p.error(f"--replot reads calibration.json in --out, and {args.out} has none")
        plot(json.loads((args.out / "calibration.json").read_text()), args.out / "calibration.png")
        print(args.out / "calibration.png")
        return 0
    dirs = args.model_dir or [DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR]
    try:
        with ServerProcess("--model-dir", ",".join(str(d) for d in dirs)) as server:
            rows = [calibrate(server.address, d, args.data, args.limit, args.prior_strength) for d in dirs]
    except (OSError, ValueError, RuntimeError) as e:
        print(f"calibration: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # nothing written yet: --write and --out come after the measurement
        print("calibration: interrupted; nothing written", file=sys.stderr)
        return 130
    if args.write:
        for r in rows:
            write_calibration(r["path"], r)
    text = markdown(rows, shlex.join(["python", "-m", "fermodels.evaluation.calibration", *argv]))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "calibration.json").write_text(json.dumps(rows, indent=1))
        (args.out / "README.md").write_text(text)
        plot(rows, args.out / "calibration.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
