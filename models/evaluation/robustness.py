"""fereval --robustness: accuracy under realistic-crop perturbations, uncompressed and through each codec.

Every classifier given reads the perturbed faces uncompressed; the image codec's deployment path
(edge encoder, bitstream, server synthesis, deployed classifier) reads them at its default quality,
and the expression layer through its own path. The perturbations and their severities are
fermodels.perturb's, with fixed seeds, so every column and every run sees the same faces.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import progress_bar
from ..perturb import PERTURBATIONS, conditions, perturb
from .deployment import codec_accuracy, evaluate_expression
from .measure import classifier_accuracy


def evaluate_robustness(card, expression, faces, labels, classifiers: dict, device: str = "cpu", batch_size: int = 256) -> tuple[list[str], list[dict]]:
    """(columns, one row per perturbation and severity with the accuracy of each column). card None: no image codec
    column (fereval --model-dir none: an expression layer alone, a twentieth of the time)."""
    import torch
    from ferclient.encoder import FaceEncoder

    from ..bundle import load_torch_models

    models = (*load_torch_models(card, device), FaceEncoder(card.path, threads=torch.get_num_threads())) if card is not None else None
    rows = []
    for kind, severity in progress_bar("perturbations", len(conditions()), unit="setting", iterable=conditions()):
        f = perturb(faces, kind, severity)
        row = {"kind": kind, "severity": severity}
        for name, clf in classifiers.items():
            row[f"{name}, uncompressed"] = classifier_accuracy(clf, f, labels, batch_size)
        if card is not None:
            row[f"{card.model_id}, q{card.default_quality}"] = codec_accuracy(card, f, labels, card.default_quality, device, batch_size, models)
        if expression is not None:
            row[expression.model_id] = evaluate_expression(expression, f, labels, device, batch_size)[0]["accuracy"]
        rows.append(row)
    return [k for k in rows[0] if k not in ("kind", "severity")], rows


def markdown(columns: list[str], rows: list[dict], command: str, machine: str, faces: int, split: str) -> str:
    perturbed = [r for r in rows if r["kind"] != "none"]
    mean = {c: sum(r[c] for r in perturbed) / len(perturbed) for c in columns}
    lines = [
        "# Robustness: accuracy on perturbed crops",
        "",
        f"Command: `{command}`. {faces} FER2013 {split} faces. Machine: {machine}.",
        "",
        "![accuracy under each perturbation, per column](robustness.png)",
        "",
        "| perturbation | severity | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['severity']:g} | " + " | ".join(f"{100 * r[c]:.2f} %" for c in columns) + " |")
    lines.append("| **mean of the perturbed rows** | | " + " | ".join(f"**{100 * mean[c]:.2f} %**" for c in columns) + " |")
    lines += ["", "Perturbations (fermodels.perturb; each face draws its own direction, tilt sign or place, seeded):", ""]
    lines += [f"- {k}: {d}" for k, (d, _) in PERTURBATIONS.items() if k != "none"]
    return "\n".join(lines) + "\n"


def plot(columns: list[str], rows: list[dict], path: Path, title: str) -> None:
    """robustness.png: one group of bars per perturbation and severity, one bar per column, each column's unperturbed
    accuracy a dashed line in its colour: which degradation costs what, and which network or path holds up, at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    perturbed = [r for r in rows if r["kind"] != "none"]
    clean = next((r for r in rows if r["kind"] == "none"), None)
    height = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(perturbed) + 1.6), dpi=110)
    for k, c in enumerate(columns):
        ys = [i + (k - (len(columns) - 1) / 2) * height for i in range(len(perturbed))]
        ax.barh(ys, [100 * r[c] for r in perturbed], height=height, color=f"C{k}", label=c)
        if clean is not None:
            ax.axvline(100 * clean[c], color=f"C{k}", lw=0.9, ls="--")
    ax.set_yticks(range(len(perturbed)), [f"{r['kind']} {r['severity']:g}" for r in perturbed])
    ax.invert_yaxis()
    low = min(100 * r[c] for r in perturbed for c in columns)
    ax.set_xlim(max(0.0, 5 * (low // 5) - 5), None)
    ax.set_xlabel("accuracy (%); dashed: the same column on unperturbed faces")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08 - 0.6 / len(perturbed)), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replot(folder: Path) -> Path:
    """robustness.png drawn again from the robustness.json in folder (as fereval --robustness wrote it)."""
    r = json.loads((folder / "robustness.json").read_text())
    path = folder / "robustness.png"
    plot(r["columns"], r["rows"], path, title_of(r))
    return path


def title_of(r: dict) -> str:
    from .report import SPLIT_NAMES

    return f"FER2013 {SPLIT_NAMES.get(r['split'], r['split'])}, {r['faces']} faces per row, perturbed as fermodels.perturb does"


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m fermodels.evaluation.robustness",
                                description="Draw robustness.png again from a folder's robustness.json (fereval --robustness draws it when it measures).")
    p.add_argument("folder", type=Path, help="a folder fereval --robustness wrote (robustness.json)")
    a = p.parse_args()
    if not (a.folder / "robustness.json").is_file():
        p.error(f"{a.folder / 'robustness.json'}: no such file (fereval --robustness --out {a.folder} writes it)")
    print(replot(a.folder))
