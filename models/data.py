"""FER2013 from the shared npz: arrays in, float tensors out, nothing cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(
    os.environ.get(
        "FERCODEC_DATA",
        Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fer2013" / "fer2013.npz",
    )
)
SPLITS = ("train", "val", "test")
# every tool's --data help: the default said "../shared", which reads as the current folder's parent; it is the checkout's
DATA_HELP = (f"FER2013's fer2013.npz (default {DEFAULT_DATA}" + ("" if os.environ.get("FERCODEC_DATA") else
             ": ../shared beside this checkout, or $FERCODEC_DATA") + ")")


def load_split(split: str, path: str | os.PathLike | None = None, limit: int | None = None):
    """Return (faces uint8 [N,48,48], labels int64 [N]) for train, val (PublicTest) or test (PrivateTest)."""
    x, y = _read(split, path, "x", "y")
    y = y.astype(np.int64)
    if limit is not None:
        idx = _subset(len(x), limit)
        x, y = x[idx], y[idx]
    return x, y


def load_labels(split: str, path: str | os.PathLike | None = None) -> np.ndarray:
    """A split's labels int64 [N] alone (the faces are not read): row counts, class shares."""
    return _read(split, path, "y")[0].astype(np.int64)


def _read(split: str, path: str | os.PathLike | None, *names: str) -> list[np.ndarray]:
    """The archive's arrays NAME_split; a damaged file, or one that is not FER2013's archive, is a ValueError in one
    line (every tool printed a traceback: BadZipFile, zlib.error, EOFError, KeyError, numpy's pickle refusal)."""
    import zipfile
    import zlib

    where = _archive(split, path)
    try:
        d = np.load(where)
        if not isinstance(d, np.lib.npyio.NpzFile):  # one .npy array under an .npz name: no `with`, no names
            raise ValueError(f"{where} holds one array, not an .npz archive of named ones")
        with d:
            missing = [f"{n}_{split}" for n in names if f"{n}_{split}" not in d.files]
            if missing:
                raise ValueError(f"{where} has no {', '.join(missing)}: not FER2013's archive (that has x_train, y_train, x_val, ...)")
            return [d[f"{n}_{split}"] for n in names]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise ValueError(f"{where} cannot be read ({type(e).__name__}: {e}): damaged or cut short; fetch it again") from None
    except ValueError as e:
        if str(e).startswith(str(where)):
            raise
        raise ValueError(f"{where} is not an .npz archive ({e})") from None


def _archive(split: str, path: str | os.PathLike | None) -> Path:
    """The FER2013 npz to read `split` from, after checking both: a one-line error for a bad split or a missing file."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(path or DEFAULT_DATA)
    if not path.is_file():
        raise FileNotFoundError(f"FER2013 archive not found at {path} (set --data or FERCODEC_DATA)")
    return path


def _subset(n: int, limit: int) -> np.ndarray:
    """Evenly spaced rows: ids are random, so classes stay interleaved and the subset is the same on every machine."""
    return np.linspace(0, n - 1, num=min(limit, n)).round().astype(np.int64)


def load_crowd_votes(path: str | os.PathLike, split: str, limit: int | None = None, data: str | os.PathLike | None = None) -> np.ndarray:
    """FER+ crowd votes [N,7] float32 for a split's faces, row for row with load_split (all zero where a face has
    none), from the file scripts/ferplus_votes.py writes; checked against the archive's row count."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"crowd votes not found at {path} (scripts/ferplus_votes.py writes them)")
    with np.load(path) as d:
        if f"votes_{split}" not in d:
            raise ValueError(f"{path} has no votes_{split}: not a file from scripts/ferplus_votes.py")
        v = d[f"votes_{split}"].astype(np.float32)
    n = len(load_labels(split, data))
    if len(v) != n:
        raise ValueError(f"{path} has votes for {len(v)} {split} faces, the archive {n}: written for another fer2013.npz")
    return v[_subset(len(v), limit)] if limit is not None else v


def to_tensor(faces: np.ndarray):
    """uint8 [N,H,W] -> float32 torch tensor [N,1,H,W] in [0,1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(faces)).float().div_(255.0).unsqueeze(1)


def augment(x, generator):
    """Random horizontal flip and +-4 px shift (reflect padding): cheap, label-preserving."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)  # drawn on the CPU generator: the same faces flip on any device
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = 4
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    h, w = x.shape[-2:]
    return xp[..., dy : dy + h, dx : dx + w]
