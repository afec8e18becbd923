"""FER+ crowd votes for the faces in fer2013.npz, matched by pixels: what `fertrain classifier --crowd-votes` reads.

Why: FER2013's labels are one annotator's each (human accuracy about 65 %). FER+ (Barsoum et al., ICMI 2016;
github.com/microsoft/FERPlus, MIT licence) had 10 crowd workers relabel every FER2013 face, and a model trained
against their vote distribution learns how ambiguous each face is instead of one guess. The shared npz names its
faces by the Kaggle image release's random ids, FER+ by the original CSV's row, so faces are matched by pixels:
each npz face to the nearest FER+ image of the same split (mean-pooled 16x16 to shortlist, then full 48x48 RMS).
The npz's faces are JPEG-decoded and FER+'s PNGs are lossless, so a true match is a few grey levels apart.

    python scripts/ferplus_votes.py FERPLUS_CHECKOUT/fer2013new.csv IMAGES --out runs/ferplus_votes.npz

IMAGES holds FER2013Train/, FER2013Valid/ and FER2013Test/ with ferNNNNNNN.png, as FER+'s
src/generate_training_data.py writes them from the original fer2013.csv (a public copy:
github.com/tessav/crowd-emotion, data/). The output has, per split, `votes_<split>` [N, 7] uint8 in fermodels'
class order (FER+'s contempt, unknown and not-a-face votes dropped; all zero where no match) and `rms_<split>`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# FER+ columns (after Usage, Image name): neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
TO_OURS = [4, 5, 6, 1, 3, 2, 0]  # our angry, disgust, fear, happy, sad, surprise, neutral -> FER+ column
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FOLDER = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
MATCH_RMS = 8.0  # grey levels: JPEG round trips of one face are 1-4 apart; different faces are tens apart


def _pool(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), 16, 3, 16, 3).mean((2, 4)).reshape(len(x), -1)


def match(ours: np.ndarray, theirs: np.ndarray, shortlist: int = 5, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(index into theirs, full-resolution RMS) of the nearest of `theirs` for each of `ours` (uint8 [N,48,48])."""
    a, b = _pool(ours.astype(np.float32)), _pool(theirs.astype(np.float32))
    bb = (b * b).sum(1)
    best, rms = np.empty(len(ours), np.int64), np.empty(len(ours), np.float32)
    for s in range(0, len(ours), chunk):
        d = bb[None, :] - 2.0 * a[s : s + chunk] @ b.T
        cand = np.argpartition(d, shortlist, axis=1)[:, :shortlist]
        full = np.sqrt(((ours[s : s + chunk, None].astype(np.float32) - theirs[cand].astype(np.float32)) ** 2).mean((2, 3)))
        k = full.argmin(1)
        best[s : s + chunk], rms[s : s + chunk] = cand[np.arange(len(k)), k], full[np.arange(len(k)), k]
        print(f"  {min(s + chunk, len(ours))}/{len(ours)}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return best, rms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", help="fer2013new.csv from github.com/microsoft/FERPlus")
    p.add_argument("images", help="folder holding FER2013Train/, FER2013Valid/, FER2013Test/ PNGs")
    p.add_argument("--data", default=None, help="fer2013.npz (default: fermodels' default)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if not Path(args.csv).is_file():
        p.error(f"{args.csv}: no such file")
    if not Path(args.images).is_dir():
        p.error(f"{args.images}: no such directory")
    if args.data and not Path(args.data).is_file():
        p.error(f"--data {args.data}: no such file")
    if not Path(args.out).resolve().parent.is_dir():  # before the minutes of matching, not after
        p.error(f"--out {args.out}: no folder {Path(args.out).parent} to write it into")
    from fermodels.data import load_split

    rows = {}
    with open(args.csv, newline="") as f:
        for r in csv.reader(f):
            if r and r[0] in FOLDER and r[1]:
                rows.setdefault(r[0], []).append((r[1], np.array([int(v) for v in r[2:12]], np.int64)))
    out = {}
    for split, usage in USAGE.items():
        folder = Path(args.images) / FOLDER[usage]
        have = [(name, v) for name, v in rows.get(usage, []) if (folder / name).is_file()]
        if not have:
            print(f"ferplus_votes: none of {args.csv}'s {usage} images is in {folder} (FER+'s fer2013new.csv and its PNGs?)", file=sys.stderr)
            return 2
        theirs = np.stack([np.asarray(Image.open(folder / name).convert("L")) for name, _ in have])
        votes = np.stack([v for _, v in have])[:, TO_OURS].astype(np.uint8)
        faces, labels = load_split(split, args.data)
        print(f"{split}: matching {len(faces)} faces against {len(theirs)} FER+ images", file=sys.stderr)
        idx, rms = match(faces, theirs)
        ok = rms <= MATCH_RMS
        v = np.where(ok[:, None], votes[idx], 0).astype(np.uint8)
        has = v.sum(1) > 0
        agree = (v[has].argmax(1) == labels[has]).mean()
        print(f"{split}: {ok.sum()} of {len(faces)} matched (median RMS {np.median(rms[ok]):.2f}); {has.sum()} with votes; "
              f"crowd majority = FER2013 label on {100 * agree:.1f} %", file=sys.stderr)
        out[f"votes_{split}"], out[f"rms_{split}"] = v, rms.astype(np.float16)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
