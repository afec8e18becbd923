"""fereval's reports: results.md and its tables, the plots, the model card's metrics, runs compared."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

from .baselines import BASELINES
from .comparison import PARITY_POINTS, bd_accuracy, bd_rate, bytes_at_accuracy, curves
from .measure import DEPLOYED, EXPRESSION, MS_SSIM_NOTE, OURS


SPLIT_NAMES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
CARD_MARKERS = ("<!-- metrics:start -->", "<!-- metrics:end -->")


def machine_info(device: str) -> dict:
    """Enough about the machine to tell whether two runs' timings and numbers are comparable."""
    import PIL

    cpu = platform.processor()
    if not cpu and Path("/proc/cpuinfo").is_file():  # Linux leaves processor() empty
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    return {
        "platform": platform.platform(),
        "processor": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
    }


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _bd(x) -> str:
    return "no overlap" if x is None else f"{x:+.1f} %"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def _setting_label(p: dict) -> str:
    return f"q{p['setting']}" if p["codec"] in (OURS, EXPRESSION) else BASELINES[p["codec"]].label.format(p["setting"])


def _num(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def points_table(points, classifiers) -> str:
    """Markdown: one row per rate point, one accuracy column per classifier."""
    header = ["codec", "setting", "bytes/face", "bpp", "PSNR (dB)", "MS-SSIM", *[f"accuracy ({c})" for c in classifiers]]
    rows = [
        [p["codec"], _setting_label(p), f"{p['bytes']:.1f}", f"{p['bpp']:.3f}", _num(p["psnr"], ".2f"), _num(p["ms_ssim"], ".4f"), *[_pct(p["accuracies"].get(c)) for c in classifiers]]
        for p in points
    ]
    return _table(header, rows)


def _default_text(r: dict) -> str:
    d = r["default_quality"]
    gap = f"{abs(d['gap_points']):.2f} points {'below' if d['gap_points'] > 0 else 'above'} uncompressed"
    found = f"q{d['quality']} is the cheapest quality within {PARITY_POINTS} points" if d["within_tolerance"] else f"no quality is within {PARITY_POINTS} points; the most accurate is q{d['quality']}"
    return (
        f"Rule: the cheapest quality whose deployed accuracy is within {PARITY_POINTS} points of uncompressed, else the most accurate one. "
        f"Here {found}: {d['bytes']:.0f} bytes/face, {gap}. "
        f"Pick it on val (`--split val`) and ship it with `ferexport --default-quality {d['quality']}`; the model directory's default when this ran "
        f"was q{r['model']['default_quality']} (model.json says what it is now)."
        + (f" Measured on {r['faces']} faces only (95 % interval about ±{196 * (0.25 / r['faces']) ** 0.5:.0f} points): not a choice to ship; "
           "measure the whole split." if r["faces"] < 1000 else "")
    )


def pick_line(r: dict) -> str:
    """The default-quality pick in one line, for fereval's stdout (results.md has the whole rule)."""
    d = r["default_quality"]
    return (f"default quality by the rule (cheapest within {PARITY_POINTS} points of uncompressed) on {r['split']}: q{d['quality']}, "
            f"{d['bytes']:.0f} bytes/face, {d['gap_points']:+.2f} points against uncompressed"
            + ("" if d["within_tolerance"] else " (none within: the most accurate)") + (f"; only {r['faces']} faces" if r["faces"] < 1000 else ""))


def markdown(r: dict) -> str:
    """results.md: the machine, the command, and every table."""
    m, clfs = r["machine"], list(r["classifiers"])
    ours = [p for p in r["points"] if p["codec"] == OURS]
    expr = [p for p in r["points"] if p["codec"] == EXPRESSION]
    base = [p for p in r["points"] if p["codec"] not in (OURS, EXPRESSION)]
    bd_cols = list(r["bd_rate"])
    bd_rows = sorted({b for row in r["bd_rate"].values() for b in row})
    out = [
        f"# fercodec evaluation: {r['model']['id']}",
        "",
        f"FER2013 {r['split']} ({SPLIT_NAMES[r['split']]}), {r['faces']} faces, {r['date']}, {r['seconds']:.0f} s.",
        "",
        f"- Command: `{r['command']}`",
        f"- Machine: {m['platform']}; {m['processor'] or 'unknown CPU'}; {m['cpu_count']} CPUs ({m['torch_threads']} torch threads, {m['device']}); "
        f"Python {m['python']}, torch {m['torch']}, Pillow {m['pillow']}",
        f"- Model: `{r['model']['path']}` (tag {r['model']['tag']:#06x})",
        "",
        "Bytes are whole files per face: our bitstream including its header, each baseline's file as Pillow writes it. "
        "bpp = 8 x bytes / (48 x 48). PSNR is the mean over faces of each face's PSNR (0..255 scale) against the original; "
        f"{MS_SSIM_NOTE}. Accuracy is the share of faces whose expression a classifier gets right on the decoded face.",
        "",
        "The deployment path is the client's ONNX encoder, real bitstreams and the server's entropy decoder; the classifiers "
        "answer as their networks do (float32, the most probable class). ferserver on a CPU also runs its int8 classifier and "
        "bfloat16 synthesis and applies the prior correction and temperature from model.json: `python -m "
        "fermodels.evaluation.calibration` measures that (README, Accuracy you can expect).",
        "",
        "## Uncompressed faces",
        "",
        _table(["classifier", "checkpoint", "accuracy"], [[c, f"`{r['classifiers'][c]}`", _pct(r["uncompressed_accuracy"][c])] for c in clfs]),
        "",
        "## fercodec (this model, deployment path)",
        "",
        points_table(ours, clfs),
        "",
        *(_expression_section(r, expr, clfs) if expr else []),
        "## Baselines (Pillow)",
        "",
        *[f"- {BASELINES[k].title}: {how}" for k, how in r["baseline_settings"].items()],
        "",
        points_table(base, clfs) if base else "No baselines were run.",
        "",
        "## BD-rate at equal accuracy",
        "",
        "Mean byte difference of our curve (column) against a baseline curve (row) over the accuracy range both reach; "
        "log bytes interpolated piecewise-linearly in accuracy along each curve's Pareto points. Negative: we need fewer bytes.",
        "",
        _table(["baseline / ours", *bd_cols], [[b, *[_bd(r["bd_rate"][a].get(b)) for a in bd_cols]] for b in bd_rows]) if bd_rows else "No baselines to compare with.",
        "",
        "## Bytes per face to stay within 1 point of uncompressed accuracy",
        "",
        _table(["curve", "bytes/face"], [[k, "never" if v is None else f"{v:.0f}"] for k, v in r["bytes_within_1_point"].items()]),
        "",
        "## Default quality",
        "",
        _default_text(r),
        "",
        "![bytes per face against expression accuracy](rate_accuracy.png)",
        "",
        "![bytes per face against PSNR](rate_psnr.png)",
        "",
    ]
    return "\n".join(out)


def _expression_section(r: dict, expr: list[dict], clfs: list[str]) -> list[str]:
    """The expression layer's point, and what every other curve needs to match its accuracy."""
    p = expr[0]
    cs = curves([q for q in r["points"] if q["codec"] != EXPRESSION])
    rows = [[k, "never" if (b := bytes_at_accuracy(c, p["accuracy"])) is None else f"{b:.0f}", "–" if b is None else f"{100 * (p['bytes'] / b - 1):+.1f} %"] for k, c in cs.items()]
    return [
        f"## {EXPRESSION} (the expression layer, `{r['expression']['id']}`)",
        "",
        "A feature codec: the edge runs the classifier's first blocks and sends a latent; the server classifies it without "
        "reconstructing a face, so there is no PSNR. Its reference is the deployed classifier on uncompressed faces, which it was distilled from.",
        "",
        points_table(expr, clfs),
        "",
        f"Bytes each curve needs to reach its accuracy ({_pct(p['accuracy'])}), and the expression layer's difference:",
        "",
        _table(["curve", "bytes/face", "expression layer vs it"], rows),
        "",
    ]


def plot(r: dict, out: Path) -> None:
    """rate_accuracy.png and rate_psnr.png: bytes per face on a log axis, one line per codec (and classifier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    codecs = list(dict.fromkeys(p["codec"] for p in r["points"]))
    colors = {c: f"C{i}" for i, c in enumerate(codecs)}
    styles = dict(zip(r["classifiers"], ("-", "--", ":", "-.") * 8))
    title = f"FER2013 {SPLIT_NAMES[r['split']]}, {r['faces']} faces"

    def axes(ylabel):
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 200, not 2x10^2
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bytes per face (whole file / bitstream)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        return fig, ax

    def save(fig, ax, name):
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)

    fig, ax = axes("expression accuracy (%)")
    for key, curve in curves(r["points"]).items():
        codec, clf = key.split("/", 1)
        xs, ys = zip(*sorted(curve))
        mark = {OURS: "o", EXPRESSION: "*"}.get(codec, ".")
        ax.plot(xs, [100 * y for y in ys], styles[clf], color=colors[codec], marker=mark, ms=12 if codec == EXPRESSION else 6, lw=2 if codec == OURS else 1, label=key)
    for clf, acc in r["uncompressed_accuracy"].items():
        ax.axhline(100 * acc, color="gray", ls=styles[clf], lw=0.8, label=f"uncompressed/{clf}")
    save(fig, ax, "rate_accuracy.png")

    fig, ax = axes("PSNR (dB)")
    for codec in codecs:
        pts = sorted((p["bytes"], p["psnr"]) for p in r["points"] if p["codec"] == codec and p["psnr"] is not None)
        if not pts:
            continue
        ax.plot(*zip(*pts), "-", color=colors[codec], marker="o" if codec == OURS else ".", lw=2 if codec == OURS else 1, label=codec)
    save(fig, ax, "rate_psnr.png")


def write_outputs(r: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "results.md").write_text(markdown(r))
    plot(r, out)


def update_card(card, r: dict, codec: str = OURS) -> None:
    """Record `codec`'s points in <model dir>/model.json and in MODEL_CARD.md's metrics block, if it has one."""
    ours = [p for p in r["points"] if p["codec"] == codec]

    def per_q(key: str, digits: int) -> dict:
        return {str(p["quality"]): round(p[key], digits) for p in ours}

    meta_path = card.path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"] = {
        "split": r["split"],
        "faces": r["faces"],
        "uncompressed_accuracy": round(r["uncompressed_accuracy"][DEPLOYED], 4),
        "bits_per_pixel": per_q("bpp", 4),
        "bytes": per_q("bytes", 2),
        **({"psnr": per_q("psnr", 3)} if ours[0]["psnr"] is not None else {}),
        "accuracy": per_q("accuracy", 4),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"fereval: wrote metrics into {meta_path}", file=sys.stderr)

    md = card.path / "MODEL_CARD.md"
    lines = md.read_text().splitlines() if md.is_file() else []
    try:
        start, end = lines.index(CARD_MARKERS[0]), lines.index(CARD_MARKERS[1])
    except ValueError:
        start = end = -1
    if not 0 <= start < end:
        print(f"fereval: note: {md} has no {' ... '.join(CARD_MARKERS)} block; left it alone", file=sys.stderr)
        return
    block = [
        "",
        f"FER2013 {r['split']} ({SPLIT_NAMES[r['split']]}), {r['faces']} faces, measured by `fereval` on {r['date'][:10]}; "
        f"deployed classifier on uncompressed faces: {_pct(r['uncompressed_accuracy'][DEPLOYED])}.",
        "",
        points_table(ours, [DEPLOYED]),
        "",
    ]
    md.write_text("\n".join(lines[: start + 1] + block + lines[end:]) + "\n")
    print(f"fereval: updated the metrics table in {md}", file=sys.stderr)


def versus_first(runs: list[tuple[str, float, list]], accuracy_label: str = "uncompressed accuracy", bytes_label: str = "bytes/face") -> str:
    """Markdown: runs given as (name, uncompressed accuracy, [(bytes, accuracy), ...]), each against the first one.

    Shared by `fereval --compare` (training strategies on test) and
    scripts/sweep_table.py (loss weights on val).
    """
    base = runs[0][2]
    rows = []
    for i, (name, clean, curve) in enumerate(runs):
        gain = bd_accuracy(curve, base)
        rows.append([name, _pct(clean), " / ".join(f"{b:.0f} B {_pct(a)}" for b, a in sorted(curve)),
                     "" if i == 0 else _bd(bd_rate(curve, base)),
                     "" if i == 0 else "no overlap" if gain is None else f"{gain:+.2f} points"])
    header = ["run", accuracy_label, f"per quality: {bytes_label}, accuracy", "bytes vs the first run at equal accuracy", "accuracy vs the first run at equal bytes"]
    return _table(header, rows)


def compare_runs(runs: dict[str, dict]) -> str:
    """Markdown: each fereval run (a training strategy, an export setting) against the first, our deployed curves only.
    ValueError where the runs measured different faces (another split or --limit): the differences would be
    the faces', not the models' (runs on 20 test and 20 val faces were compared as "+10.08 points", under one heading)."""
    for what in ("split", "faces"):
        seen = {name: r.get(what) for name, r in runs.items()}
        if len({v for v in seen.values() if v is not None}) > 1:
            raise ValueError(f"--compare takes runs on the same faces; their {what} differ: "
                             + ", ".join(f"{name} {v}" for name, v in seen.items()))
    table = versus_first([
        (f"{name} (`{r['model']['id']}`)", r["uncompressed_accuracy"][DEPLOYED], curves([p for p in r["points"] if p["codec"] == OURS])[f"{OURS}/{DEPLOYED}"])
        for name, r in runs.items()
    ])
    r0 = next(iter(runs.values()))
    head = f"FER2013 {r0['split']} ({SPLIT_NAMES[r0['split']]}), {r0['faces']} faces; each run's own deployed classifier on its own reconstructions."
    return f"# Runs compared\n\n{head}\n\n{table}\n"
