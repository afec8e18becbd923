"""Pillow's codecs as baselines: whole files as Pillow writes them, decoded back and classified the same way."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import progress_bar
from ..data import to_tensor
from .measure import rate_point


@dataclass(frozen=True)
class Baseline:
    """How Pillow writes one codec: its format, the settings swept, and the options per setting."""

    title: str
    feature: str  # PIL.features name
    format: str
    settings: tuple
    options: Callable[[float], dict]
    label: str  # setting -> short text, e.g. "q{}" or "{} dB"
    how: str  # the options in words, for the report


BASELINES = {
    "jpeg": Baseline("JPEG", "jpg", "JPEG", (5, 10, 20, 30, 50, 70, 90), lambda s: {"quality": s, "optimize": True}, "q{}", "quality q, optimize=True (libjpeg-turbo)"),
    "webp": Baseline("WebP", "webp", "WEBP", (0, 5, 10, 20, 40, 60, 80), lambda s: {"quality": s, "method": 6}, "q{}", "lossy, quality q, method=6 (slowest, smallest)"),
    # The raw .j2k codestream: a complete file, without the ~85 bytes of JP2 boxes.
    "jpeg2000": Baseline(
        "JPEG 2000",
        "jpg_2000",
        "JPEG2000",
        (22, 25, 28, 31, 35, 40),
        lambda s: {"quality_mode": "dB", "quality_layers": [s], "no_jp2": True},
        "{} dB",
        'quality_mode="dB", quality_layers=[target PSNR], no_jp2=True (raw .j2k codestream, OpenJPEG)',
    ),
    "avif": Baseline("AVIF", "avif", "AVIF", (10, 20, 30, 40, 50, 60, 70), lambda s: {"quality": s}, "q{}", "quality q, Pillow's default speed (libavif)"),
}


def available_baselines(names) -> list[str]:
    """The named codecs this Pillow can write, warning once for each one it cannot."""
    from PIL import features

    ok = []
    for name in names:
        if features.check(BASELINES[name].feature):
            ok.append(name)
        else:
            print(f"fereval: warning: this Pillow has no {BASELINES[name].title} support; skipping {name}", file=sys.stderr)
    return ok


def pillow_roundtrip(name: str, face: np.ndarray, setting) -> tuple[int, np.ndarray]:
    """(file size in bytes, decoded uint8 face) for one grayscale face written with Pillow."""
    from PIL import Image

    b = BASELINES[name]
    buf = io.BytesIO()
    Image.fromarray(face, "L").save(buf, b.format, **b.options(setting))
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        return len(data), np.asarray(im.convert("L"))


def evaluate_baseline(name, faces, labels, classifiers: dict, settings=None, batch_size=256) -> list[dict]:
    """One point per setting of a Pillow codec; "accuracy" is the first classifier's, "accuracies" all of them."""
    settings = BASELINES[name].settings if settings is None else settings
    points = []
    with progress_bar(name, len(settings) * len(faces)) as bar:
        for s in settings:
            sizes, decoded = [], []
            for face in faces:
                size, out = pillow_roundtrip(name, face, s)
                sizes.append(size)
                decoded.append(out)
                bar.update()
            recon = to_tensor(np.stack(decoded))
            points.append(rate_point(name, s, sizes, faces, labels, recon, classifiers, batch_size))
    return points
