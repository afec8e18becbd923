"""Build the labelled folder docs/muxspace measures, from a checkout of github.com/muxspace/facial_expressions.

The collection's 13,690 labelled web photos are 92 % neutral and happy, so every face of the rarer classes
is kept and 400 each of neutral and happy are drawn (seed 0); contempt has no FER2013 class and is left out.
The folder holds symlinks to the checkout's images, one subfolder per FER2013 class, as
`fereval --folder`, `fertrain classifier --extra-folder` and scripts/fer_package_baseline.py read it.

`--part train|val|test` keeps only the photos of one part of the people: each person (LFW's name, or the
name before an image's number) falls in train (60 %), val (15 %) or test (25 %) by a hash of the name, so
no person is in two parts and the split is the same on every machine. Nearly all disgust photos show five
actors, so the hash is salted: SALT is the one of 0-11 that puts most disgust photos in train while val keeps
at least 10 and test at least 20 (169 / 18 / 21), chosen on the label counts alone. The web-photo fine-tune
(docs/webfaces) trains on train and chooses on val; test waits for a model that ships.

    git clone https://github.com/muxspace/facial_expressions /work/muxfaces/repo
    python scripts/muxspace_subset.py /work/muxfaces/repo /work/muxfaces/subset
    python scripts/muxspace_subset.py /work/muxfaces/repo /work/muxfaces/train400 --part train
    python scripts/muxspace_subset.py /work/muxfaces/repo /work/muxfaces/val --part val
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

from fermodels import argtypes

PARTS = {"train": (0, 60), "val": (60, 75), "test": (75, 100)}  # hash buckets 0-99 per part
SALT = 5


def person(image: str) -> str:
    """Who an image shows, from its name: LFW's "George_W_Bush_0012.jpg" -> "George_W_Bush", "HrithikRoshan_17.jpg" -> "HrithikRoshan"."""
    return re.sub(r"_?\d+k?\.[A-Za-z]+$", "", image)


def part_of(image: str) -> str:
    bucket = int(hashlib.sha1(f"{SALT}:{person(image)}".encode()).hexdigest(), 16) % 100
    return next(name for name, (lo, hi) in PARTS.items() if lo <= bucket < hi)


CLASSES = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happiness": "happy", "sadness": "sad", "surprise": "surprise", "neutral": "neutral"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkout", help="the repository's checkout (data/legend.csv and images/)")
    p.add_argument("out", help="folder to create (must not exist)")
    p.add_argument("--per-class", type=argtypes.count, default=400, help="most faces drawn per class (default 400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--part", choices=("all", *PARTS), default="all", help="only the photos of one part of the people (default all)")
    args = p.parse_args(argv)
    src, out = Path(args.checkout), Path(args.out)
    legend = src / "data" / "legend.csv"
    if not legend.is_file():
        print(f"muxspace_subset: {legend}: not found (give the repository's checkout)", file=sys.stderr)
        return 2
    if out.exists():
        print(f"muxspace_subset: {out} exists; give a new folder", file=sys.stderr)
        return 2
    by_class: dict[str, set[str]] = defaultdict(set)
    with legend.open() as f:
        for row in csv.DictReader(f):
            label = CLASSES.get(row["emotion"].strip().lower())
            if label and (src / "images" / row["image"]).is_file() and args.part in ("all", part_of(row["image"])):
                by_class[label].add(row["image"])
    rnd = random.Random(args.seed)
    for label, names in by_class.items():
        names = sorted(names)
        picked = names if len(names) <= args.per_class else rnd.sample(names, args.per_class)
        (out / label).mkdir(parents=True)
        for name in picked:
            (out / label / name).symlink_to((src / "images" / name).resolve())
        print(f"{label}: {len(picked)} of {len(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
