"""FER2013's train and val faces, packed losslessly to travel to a lent GPU machine, and unpacked there.

    python scripts/gpu_data.py pack .gpudata/fer2013_trainval.npz      # here: tiles of faces as lossless WebP
    python scripts/gpu_data.py unpack .gpudata/fer2013_trainval.npz /tmp/fer2013.npz   # there: the npz fertrain reads

Why: the device tool carries at most 64 MiB with the working tree, and the raw faces are 73 MB.
Lossless WebP of 1,000-face tiles keeps about 71 % of the bytes; unpacking checks every pixel's
SHA-256 against the original's, so the GPU trains on exactly the faces the CPU would.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

TILE = (25, 40)  # faces per tile: rows, columns
SPLITS = ("train", "val")


def _tiles(x: np.ndarray) -> list[bytes]:
    from PIL import Image

    rows, cols = TILE
    n, h, w = x.shape
    out = []
    for i in range(0, n, rows * cols):
        chunk = x[i : i + rows * cols]
        pad = np.zeros((rows * cols - len(chunk), h, w), np.uint8)
        grid = np.concatenate([chunk, pad]).reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, "WEBP", lossless=True, quality=100, method=4)
        out.append(buf.getvalue())
    return out


def _untile(blobs: list[bytes], n: int, h: int, w: int) -> np.ndarray:
    from PIL import Image

    rows, cols = TILE
    grids = [np.asarray(Image.open(io.BytesIO(b))) for b in blobs]
    grids = [g[..., 0] if g.ndim == 3 else g for g in grids]  # WebP has no gray mode: it decodes as R = G = B
    faces = [g.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w) for g in grids]
    return np.concatenate(faces)[:n]


def pack(dst: str, src: str | None = None) -> None:
    from fermodels.data import load_split

    arrays = {}
    for split in SPLITS:
        x, y = load_split(split, src)
        blobs = _tiles(x)
        arrays |= {f"{split}_tiles": np.array(blobs, dtype=object), f"{split}_shape": np.array(x.shape), f"y_{split}": y,
                   f"{split}_sha256": np.array(hashlib.sha256(x.tobytes()).hexdigest())}
        print(f"{split}: {len(x)} faces, {x.nbytes / 1e6:.1f} MB -> {sum(map(len, blobs)) / 1e6:.1f} MB", file=sys.stderr)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **arrays)


def unpack(src: str, dst: str) -> None:
    d = np.load(src, allow_pickle=True)
    out = {}
    for split in SPLITS:
        n, h, w = (int(v) for v in d[f"{split}_shape"])
        x = _untile(list(d[f"{split}_tiles"]), n, h, w)
        if hashlib.sha256(x.tobytes()).hexdigest() != str(d[f"{split}_sha256"]):
            raise SystemExit(f"gpu_data: {split} faces differ from the packed ones' SHA-256")
        out |= {f"x_{split}": x, f"y_{split}": d[f"y_{split}"]}
    np.savez(dst, **out)
    counts = ", ".join(f"{s} {len(out['x_' + s])}" for s in SPLITS)
    print(f"gpu_data: unpacked {counts} faces to {dst}; SHA-256 match", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("pack", "unpack"):
        raise SystemExit(__doc__.split("\n\n")[1])
    pack(sys.argv[2]) if sys.argv[1] == "pack" else unpack(sys.argv[2], sys.argv[3])
