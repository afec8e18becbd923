"""fereval --robustness: accuracy under realistic-crop perturbations, uncompressed and through each codec.

Every classifier given reads the perturbed faces uncompressed; the image codec's deployment path
(edge encoder, bitstream, server synthesis, deployed classifier) reads them at its default quality,
and the expression layer through its own path. The perturbations and their severities are
fermodels.perturb's, with fixed seeds, so every column and every run sees the same faces.
"""

from __future__ import annotations

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
    for kind, severity in conditions():
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
        "| perturbation | severity | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['severity']:g} | " + " | ".join(f"{100 * r[c]:.2f} %" for c in columns) + " |")
    lines.append("| **mean of the perturbed rows** | | " + " | ".join(f"**{100 * mean[c]:.2f} %**" for c in columns) + " |")
    lines += ["", "Perturbations (fermodels.perturb; each face draws its own direction, tilt sign or place, seeded):", ""]
    lines += [f"- {k}: {d}" for k, (d, _) in PERTURBATIONS.items() if k != "none"]
    return "\n".join(lines) + "\n"
