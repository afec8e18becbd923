"""Faces from another collection, where the truth is known: fereval --folder DIR.

Why: every other figure is on FER2013's faces. A folder of labelled face crops from elsewhere (CK+,
JAFFE, a user's own set) says how the shipped models carry over. DIR holds one subfolder per class,
named as FER2013's classes or a common alias (anger, happiness, sadness, surprised, ...). Subfolders
for classes FER2013 does not have (CK+'s contempt) are skipped and listed.

Each image goes the way `ferclient send IMAGE --no-detect` sends it: the whole image as a 48x48 gray
face (ferclient.faces.whole), ferclient's encoder at the model's default quality, a real ferserver,
the label. The shipped classifier on the same 48x48 faces, uncompressed, is the ceiling. Report only:
choosing anything on such a set would tune to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import CLASS_NAMES

ALIASES = {"anger": "angry", "disgusted": "disgust", "fearful": "fear", "afraid": "fear", "happiness": "happy", "joy": "happy",
           "sadness": "sad", "surprised": "surprise", "neutrality": "neutral"}
NO_FACE = len(CLASS_NAMES)  # the "answer" for an image whose face --detect did not find
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm"}


def class_of(name: str) -> int | None:
    """FER2013 class index of a subfolder's name (case-insensitive, aliases allowed), or None."""
    n = name.strip().lower()
    n = ALIASES.get(n, n)
    return CLASS_NAMES.index(n) if n in CLASS_NAMES else None


def load_folder(root: str | Path, detect: bool = False, flag: str = "--folder") -> tuple[np.ndarray, np.ndarray, dict]:
    """(faces uint8 [N,48,48], labels [N], notes): every image under root's class subfolders, as --no-detect
    makes it, or with `detect` as `ferclient send` does (detector, the largest face of at least its default --min-face,
    aligned; an image with no such face found keeps its whole-image crop and is listed in notes["missed"] by index).
    notes also: {"skipped_classes": {folder: images}, "unreadable": [path: reason], "files": [each face's path under root]}.
    ValueError, naming `flag`, if nothing usable."""
    from ferclient.faces import MIN_FACE, FaceDetector, ImageError, align, load_rgb, to_gray, whole

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{flag} {root}: not a directory")
    detector = FaceDetector() if detect else None
    faces, labels, skipped, unreadable, missed, names = [], [], {}, [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        k = class_of(sub.name)
        if k is None:
            skipped[sub.name] = len(files)
            continue
        for f in files:
            try:
                rgb = load_rgb(f)[0]
                gray = to_gray(rgb)
                found = [face for face in detector.detect(rgb) if face.size >= MIN_FACE] if detector else []  # ferclient send's default --min-face
                if detector and not found:
                    missed.append(len(faces))
                faces.append(align(gray, found[0]) if found else whole(gray))
                labels.append(k)
                names.append(str(f.relative_to(root)))
            except ImageError as e:
                unreadable.append(f"{f.relative_to(root)}: {e}")
    if not faces:
        others = ", ".join(sorted(skipped)) or "none"
        raise ValueError(f"{flag} {root}: no images in subfolders named after FER2013's classes ({', '.join(CLASS_NAMES)}); subfolders found: {others}")
    return np.stack(faces), np.array(labels), {"skipped_classes": skipped, "unreadable": unreadable, "detect": detect, "missed": missed, "files": names}


LARGEST_GROUPS = 5


def scores(pred: np.ndarray, labels: np.ndarray, groups: list[str] | None = None) -> dict:
    """Accuracy, mean recall over the classes present (the set's class balance is its own) and recall per class;
    with `groups` (each image's person, say), also accuracy averaged over groups and the largest groups' accuracies,
    since a collection where a few people have many images weighs their faces many times."""
    recall = {CLASS_NAMES[k]: float((pred[labels == k] == k).mean()) for k in np.unique(labels)}
    answers = {CLASS_NAMES[k]: np.bincount(pred[labels == k], minlength=NO_FACE + 1).tolist() for k in np.unique(labels)}  # last: no face
    out = {"accuracy": float((pred == labels).mean()), "mean_recall": float(np.mean(list(recall.values()))), "recall": recall, "answers": answers}
    if groups is not None:
        g = np.asarray(groups)
        names, counts = np.unique(g, return_counts=True)
        right = {n: float((pred[g == n] == labels[g == n]).mean()) for n in names}
        largest = sorted(zip(names, counts), key=lambda nc: (-nc[1], nc[0]))[:LARGEST_GROUPS]
        out["groups"] = {"count": len(names), "accuracy_over_groups": float(np.mean(list(right.values()))),
                         "largest": [{"group": str(n), "images": int(c), "accuracy": right[n]} for n, c in largest]}
    return out


def evaluate_folder(address: str, faces: np.ndarray, labels: np.ndarray, model_dirs: dict, card, missed=(), groups=None) -> list[dict]:
    """One row per path: the uncompressed classifier of `card`'s model (its labels as the server would give them:
    the card's prior correction applied), then each model through a real ferserver. Faces in `missed`
    (no face found with --detect) count as wrong on every path, as ferclient would give them no answer."""
    import torch

    from ..bundle import load_classifier
    from ..data import to_tensor
    from .photos import recognise

    classifier = load_classifier(card.file("classifier.pt"))
    with torch.inference_mode():
        p = np.concatenate([classifier.probabilities(to_tensor(faces[i : i + 256])).numpy() for i in range(0, len(faces), 256)])
    ceiling = card.served(p).argmax(1)
    def miss(pred):
        pred = pred.copy()
        pred[list(missed)] = NO_FACE
        return pred

    rows = [{"path": "classifier, uncompressed 48x48 (no codec)", **scores(miss(ceiling), labels, groups)}]
    for name, d in model_dirs.items():
        rows.append({"path": f"{name}, through ferclient and ferserver", **scores(miss(recognise(address, d, faces)), labels, groups)})
    return rows


def markdown(rows: list[dict], labels: np.ndarray, notes: dict, root: str, command: str, machine: str) -> str:
    present = [CLASS_NAMES[k] for k in np.unique(labels)]
    counts = {CLASS_NAMES[k]: int((labels == k).sum()) for k in np.unique(labels)}
    lines = [
        f"# Faces from another collection: {Path(root).name}",
        "",
        f"Command: `{command}`. Machine: {machine}.",
        "",
        f"{len(labels)} faces in {len(present)} classes ({', '.join(f'{c} {n}' for c, n in counts.items())}). Each image is sent as",
        ("`ferclient send IMAGE` sends it (detector, the largest face, aligned to 48x48 gray)" if notes["detect"] else
         "`ferclient send IMAGE --no-detect` sends it (the whole image, 48x48 gray)") + " at the model's default setting, to a real",
        "ferserver. Mean recall averages the classes present, so a class-heavy set does not hide a weak class.",
    ]
    if notes["detect"]:
        lines.append(f"No face found in {len(notes['missed'])} of {len(labels)} images ({100 * len(notes['missed']) / len(labels):.1f} %): counted wrong.")
    if notes["skipped_classes"]:
        lines.append("Skipped (no FER2013 class): " + ", ".join(f"{k} ({n} images)" for k, n in notes["skipped_classes"].items()) + ".")
    if notes["unreadable"]:
        lines.append(f"Unreadable, left out: {len(notes['unreadable'])} (folder.json lists them).")
    lines += ["", "| path | accuracy | mean recall | " + " | ".join(present) + " |", "|---|---|---|" + "---|" * len(present)]
    for r in rows:
        lines.append(f"| {r['path']} | {100 * r['accuracy']:.1f} % | {100 * r['mean_recall']:.1f} % | "
                     + " | ".join(f"{100 * r['recall'][c]:.1f}" for c in present) + " |")
    if "groups" in rows[0]:
        g = rows[0]["groups"]
        lines += ["", f"{g['count']} groups (--group-by). Accuracy averaged over groups, each group weighing the same: "
                  + "; ".join(f"{r['path']} {100 * r['groups']['accuracy_over_groups']:.1f} %" for r in rows) + ".",
                  "", "| largest groups (images) | " + " | ".join(r["path"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
        for i, big in enumerate(g["largest"]):
            lines.append(f"| {big['group']} ({big['images']}) | " + " | ".join(f"{100 * r['groups']['largest'][i]['accuracy']:.1f} %" for r in rows) + " |")
    deployed = rows[1] if len(rows) > 1 else rows[0]
    lines += ["", f"Where the answers go, {deployed['path']} (rows: the true class; % of its faces given each label):", "",
              "| true class | " + " | ".join(CLASS_NAMES) + " | no face |", "|---|" + "---|" * (len(CLASS_NAMES) + 1)]
    for c in present:
        n = max(sum(deployed["answers"][c]), 1)
        lines.append(f"| {c} | " + " | ".join(f"{100 * a / n:.0f}" for a in deployed["answers"][c]) + " |")
    return "\n".join(lines) + "\n"
