"""A/B two revisions of ferserver on this machine: python scripts/bench_ab.py --before REV [--after REV] [ferserver flags]

Why: a change worth a few percent is smaller than how much a shared VM's speed drifts between two runs of make bench.
So both servers run at once and take turns in short windows (the order flips every pair), and each pair gives a
ratio; the median of the ratios is the figure (scripts/bench.py's head-to-head, applied to two versions of ferserver).
Each side's p99 is the median over its windows; its max, the slowest call in any window.

--rates adds open-loop windows (scripts/bench.py's _arrivals): one-face calls arriving at random at each rate, as from
many devices, whether or not earlier calls were answered. Both servers keep up there, so the figures are latencies:
each side's p50 and p99 (medians over its windows) and the B/A ratio of the p50s, median over pairs.

Each revision is checked out with `git worktree` into a temporary folder and served from it (the packages mapped as
its pyproject.toml maps them), with the models that revision ships. The working tree itself is --after's default
("WORKTREE": what is installed, uncommitted changes included). Both get the same flags after `--`, and the same
PrivateTest faces, encoded by the working tree's client (so the bitstream format must be one both read).

    python scripts/bench_ab.py --before HEAD                    # the uncommitted change against the last commit
    python scripts/bench_ab.py --before 5faa47d --levels 1,32 -- --max-batch 16
    python scripts/bench_ab.py --before HEAD --levels '' --rates 100,400,800
    python scripts/bench_ab.py --before HEAD --expression       # the expression layer's faces
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from fermodels import argtypes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))



@contextlib.contextmanager
def checkout(rev: str):
    """-> the env that serves `rev` (PYTHONPATH to its packages), or {} for the working tree."""
    if rev == "WORKTREE":
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        tree, links = Path(tmp) / "tree", Path(tmp) / "packages"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        try:
            links.mkdir()
            packages = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]  # import name -> folder, as rev maps them
            for name, folder in packages.items():
                (links / name).symlink_to(tree / folder)
            yield {"PYTHONPATH": str(links)}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--before", required=True, help="git revision served as A")
    p.add_argument("--after", default="WORKTREE", help="git revision served as B (default: the working tree, as installed)")
    p.add_argument("--levels", default="1,8,32,128", help="calls in flight, comma-separated")
    p.add_argument("--rates", default="", help="open-loop arrival rates, faces/s, comma-separated (none by default)")
    p.add_argument("--rounds", type=argtypes.count, default=6, help="window pairs per level")
    p.add_argument("--seconds", type=argtypes.positive("seconds"), default=2.0, help="measured seconds per window")
    p.add_argument("--faces", type=argtypes.count, default=512, help="PrivateTest faces sent, round robin")
    p.add_argument("--quality", type=argtypes.checked(int, lambda v: v >= 0, "a quality, 0 or more"), default=None,
                   help="image codec quality (default: the model's)")
    p.add_argument("--expression", action="store_true", help="send faces encoded for the expression layer (default: the image codec)")
    p.add_argument("flags", nargs="*", help="ferserver flags for both servers (after --)")
    args = p.parse_args(argv)
    for rev in {args.before, args.after} - {"WORKTREE"}:
        if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"], capture_output=True).returncode:
            p.error(f"{rev} is not a revision of this repository")

    try:
        levels = [int(v) for v in args.levels.split(",") if v]
        rates = [float(v) for v in args.rates.split(",") if v]
    except ValueError:
        p.error(f"--levels and --rates are comma-separated numbers, not {args.levels!r} and {args.rates!r}")
    if any(v < 1 for v in levels) or any(not 0 < v < math.inf for v in rates) or not levels + rates:
        p.error("give calls in flight (--levels) of at least 1 or arrival rates (--rates) above 0")

    import bench
    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split
    from ferserver.process import ServerProcess

    faces, _ = load_split("test", limit=args.faces)
    from ferwire.card import EXPRESSION_MODEL_DIR

    payloads = (FaceEncoder(str(EXPRESSION_MODEL_DIR)) if args.expression else FaceEncoder()).encode(faces, args.quality)
    with contextlib.ExitStack() as stack:
        env_a, env_b = stack.enter_context(checkout(args.before)), stack.enter_context(checkout(args.after))
        servers = {"A": stack.enter_context(ServerProcess(*args.flags, env=env_a)), "B": stack.enter_context(ServerProcess(*args.flags, env=env_b))}
        for s in servers.values():  # warm both: oneDNN kernels, caches, the batcher's estimate
            asyncio.run(bench._level(s.address, payloads, 32, 2.0, 0.0, s.proc.pid, {}))
        print(f"A = {args.before}, B = {args.after}; {bench.machine()}; {args.rounds} pairs of {args.seconds:g} s windows per level")
        if levels:
            print("| in flight | B/A faces/s, median (range) | A faces/s | B faces/s | A p99 ms | B p99 ms | A max ms | B max ms |\n"
                  "|---|---|---|---|---|---|---|---|")
        for level in levels:
            got = bench.alternate(("B", "A"), args.rounds, lambda side, r: asyncio.run(
                bench._level(servers[side].address, payloads, level, args.seconds, 0.5, servers[side].proc.pid, {})))
            ratios = [b["faces_per_s"] / a["faces_per_s"] for a, b in zip(got["A"], got["B"])]
            med = {side: {k: statistics.median(x[k] for x in rows) for k in ("faces_per_s", "p99_ms")} for side, rows in got.items()}
            worst = {side: max(x["max_ms"] for x in rows) for side, rows in got.items()}  # the slowest call in any window: a stall shows here
            print(f"| {level} | {statistics.median(ratios):.3f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {med['A']['faces_per_s']:.0f} | "
                  f"{med['B']['faces_per_s']:.0f} | {med['A']['p99_ms']:.1f} | {med['B']['p99_ms']:.1f} | {worst['A']:.0f} | {worst['B']:.0f} |", flush=True)
        if rates:
            print("\n| arrivals/s | B/A p50, median (range) | A p50 ms | B p50 ms | A p99 ms | B p99 ms | A max ms | B max ms |\n"
                  "|---|---|---|---|---|---|---|---|")
        for rate in rates:
            got = bench.alternate(("B", "A"), args.rounds, lambda side, r: asyncio.run(
                bench._arrivals(servers[side].address, payloads, rate, args.seconds, 0.5, seed=r)))
            errors = {side: sum(x["errors"] for x in rows) for side, rows in got.items()}
            if any(errors.values()):
                print(f"errors at {rate:g}/s: A {errors['A']}, B {errors['B']}; first: {next(x['first_error'] for rows in got.values() for x in rows if x['errors'])}")
            ratios = [b["p50_ms"] / a["p50_ms"] for a, b in zip(got["A"], got["B"])]
            med = {side: {k: statistics.median(x[k] for x in rows) for k in ("p50_ms", "p99_ms")} for side, rows in got.items()}
            worst = {side: max(x["max_ms"] for x in rows) for side, rows in got.items()}
            print(f"| {rate:g} | {statistics.median(ratios):.3f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {med['A']['p50_ms']:.1f} | "
                  f"{med['B']['p50_ms']:.1f} | {med['A']['p99_ms']:.1f} | {med['B']['p99_ms']:.1f} | {worst['A']:.0f} | {worst['B']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
