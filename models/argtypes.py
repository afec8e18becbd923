"""argparse types that fertrain and fereval share: a bad number is argparse's one line and exit 2, not a traceback
from deep in a schedule (--epochs 0 divided by zero) or from torch (--threads -1)."""

from __future__ import annotations

import argparse
import math


def count(text: str) -> int:
    """An integer of at least 1 (epochs, faces, a batch)."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return n


def rate(text: str) -> float:
    """A positive, finite number (a learning rate)."""
    v = float(text)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def threads(text: str) -> int:
    """torch's CPU threads: 0 for torch's default (one per core), or a number."""
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (torch's default) or a number of threads, got {text}")
    return n
