"""Perturbations of FER2013 crops that mimic crops from real photos: fixed severities for fereval --robustness, a random mix for fertrain --robust.

A face cut from a photo is not a FER2013 crop: the detector's box is off by a few pixels and a few
percent of scale, heads tilt, the photo may be blurred, dark or bright, already JPEG-compressed, or
partly covered. Each perturbation here has fixed severities and a seeded per-face direction (which way
to shift, tilt or where to occlude), so two runs, or two models, see the very same faces.
"""

from __future__ import annotations

import numpy as np

# name -> (description, severities). Each severity is one row of the table.
PERTURBATIONS = {
    "none": ("the dataset's own crop", [0]),
    "shift": ("crop offset by this many px (of 48) in a random direction", [2, 4]),
    "scale": ("crop zoomed by this factor about the centre (< 1 shows more background)", [0.9, 1.1]),
    "rotate": ("head tilted by this many degrees, random sign", [10, 20]),
    "blur": ("Gaussian blur, sigma in px", [0.8, 1.5]),
    "gamma": ("lighting: pixel^gamma (< 1 brighter, > 1 darker)", [0.6, 1.6]),
    "jpeg": ("the source was a JPEG of this quality", [30, 10]),
    "occlude": ("a mean-gray square of this side (px) at a random place", [12, 20]),
}


def perturb(faces: np.ndarray, kind: str, severity: float, seed: int = 0) -> np.ndarray:
    """uint8 [N,48,48] -> the same faces, perturbed; deterministic for (kind, severity, seed)."""
    import cv2

    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")
    rng = np.random.default_rng([seed, list(PERTURBATIONS).index(kind)])
    n, h, w = faces.shape
    out = np.empty_like(faces)
    if kind == "none":
        return faces.copy()
    if kind in ("shift", "scale", "rotate"):
        for i, f in enumerate(faces):
            if kind == "shift":
                a = rng.uniform(0, 2 * np.pi)
                m = np.float32([[1, 0, severity * np.cos(a)], [0, 1, severity * np.sin(a)]])
            else:
                angle = float(severity) * rng.choice([-1, 1]) if kind == "rotate" else 0.0
                m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, float(severity) if kind == "scale" else 1.0)
            out[i] = cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return out
    if kind == "blur":
        return np.stack([cv2.GaussianBlur(f, (0, 0), float(severity)) for f in faces])
    if kind == "gamma":
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** float(severity) + 0.5, 0, 255).astype(np.uint8)
        return lut[faces]
    if kind == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(severity)]
        return np.stack([cv2.imdecode(cv2.imencode(".jpg", f, params)[1], cv2.IMREAD_GRAYSCALE) for f in faces])
    side = int(severity)  # occlude
    out[:] = faces
    for i in range(n):
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out[i, y : y + side, x : x + side] = int(faces[i].mean())
    return out


def conditions():
    """(kind, severity) in table order."""
    return [(k, s) for k, (_, sev) in PERTURBATIONS.items() for s in sev]


# Training-time mix: each kind applies independently with its probability, at a uniform severity in its range.
RANDOM_MIX = {
    "shift": (0.5, (0.0, 4.0)),
    "scale": (0.5, (0.85, 1.15)),
    "rotate": (0.5, (0.0, 20.0)),
    "blur": (0.3, (0.3, 1.5)),
    "gamma": (0.3, (0.6, 1.6)),
    "jpeg": (0.3, (10, 60)),
    "occlude": (0.2, (8, 20)),
}


def random_perturbations(faces: np.ndarray, seed: int) -> np.ndarray:
    """A realistic-crop version of every face (fertrain classifier --robust): RANDOM_MIX's kinds, each face its own draw."""
    rng = np.random.default_rng([seed, 1 << 20])
    out = faces.copy()
    for i in range(len(out)):
        for kind, (prob, (lo, hi)) in RANDOM_MIX.items():
            if rng.random() < prob:
                out[i : i + 1] = perturb(out[i : i + 1], kind, float(rng.uniform(lo, hi)), seed=int(rng.integers(1 << 31)))
    return out
