"""argparse types for the command lines (fertrain, fereval, ferclient): a bad number is argparse's one line and exit 2,
not a traceback from deep in a schedule (--epochs 0 divided by zero) or from torch (--threads -1), nor a silently
wrapped port. Import-light, as fermodels is: the edge client uses these too."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def checked(convert: Callable[[str], float], ok: Callable[[float], bool], need: str) -> Callable[[str], float]:
    """An argparse type: convert(text), refused with "must be {need}, got {text}" unless ok(value)."""

    def parse(text: str):
        try:
            v = convert(text)
        except ValueError:  # argparse's own line would be "invalid parse value: 'abc'"
            raise argparse.ArgumentTypeError(f"must be {need}, got {text}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
        return v

    return parse


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0  # refuses nan and inf too


count = checked(int, lambda n: n >= 1, "at least 1")  # epochs, faces, a batch
rate = checked(float, _positive, "a positive number")  # a learning rate (inf and nan are refused too)
threads = checked(int, lambda n: n >= 0, "0 (torch's default) or a number of threads")  # torch's CPU threads


def positive(unit: str, convert: Callable[[str], float] = float) -> Callable[[str], float]:
    """A positive number of `unit` (seconds, pixels, frames); with convert=int a whole one (30.5 px says so)."""
    return checked(convert, _positive, f"a positive {'whole ' if convert is int else ''}number of {unit}")


def nonempty(text: str) -> str:
    """A path or name that must not be '': what an unset shell variable gives (--tls-ca "$CA"), which would otherwise
    quietly mean the flag's default (plaintext, no token, no output)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty (an unset shell variable?)")
    return text


def comma_separated(kind: Callable[[str], float], empty: bool = False) -> Callable[[str], list]:
    """Comma-separated values, each one checked by kind (a type above): "1,8,32" -> [1, 8, 32]. An empty item is
    refused, and so is '' unless empty (a flag whose '' skips something: it is then [])."""

    def parse(text: str) -> list:
        if empty and not text.strip():
            return []
        items = [t.strip() for t in text.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(f"must be comma-separated values, got {text!r}")
        return [kind(t) for t in items]

    return parse
