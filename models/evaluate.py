"""fereval: what the shipped codec costs in bytes and in expression accuracy, against Pillow's codecs.

Our points go through the deployment path (ONNX encoder and range coder of the
edge client, the server's bitstream decoder and synthesis), so the bytes are
real bitstreams and the accuracy is what the server would report. Baselines are
whole files as Pillow writes them, decoded back and classified the same way.

    fereval --out docs/results                     # all of FER2013 PrivateTest
    fereval --limit 300 --baselines jpeg,webp      # a quick look
    fereval --extra-classifier plain=runs/classifier/best.pt --update-card

The expression layer (fercodec-v1-expr, a feature codec that sends no pixels)
is measured beside the image codec when its directory exists: bytes and
accuracy through its own deployment path, no PSNR (--expression-dir none skips it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pytorch_msssim import ms_ssim
from tqdm import tqdm

from .bundle import load_classifier
from .data import DEFAULT_DATA, SPLITS, load_split, to_tensor

OURS = "fercodec"
EXPRESSION = "fercodec-expr"  # the expression layer's points: bytes and accuracy, no image
DEPLOYED = "deployed"
SPLIT_NAMES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
CARD_MARKERS = ("<!-- metrics:start -->", "<!-- metrics:end -->")
# The standard MS-SSIM (5 scales, 11x11 window) needs sides above 160 px; at
# 48x48 only 3 scales (48, 24, 12) with a 3x3 window fit.
MS_SSIM_WEIGHTS = (0.2, 0.3, 0.5)
MS_SSIM_WIN = 3
MS_SSIM_NOTE = f"MS-SSIM over 3 scales (48, 24, 12 px) with weights {', '.join(map(str, MS_SSIM_WEIGHTS))}, a {MS_SSIM_WIN}x{MS_SSIM_WIN} Gaussian window (sigma 1.5), data range 1.0"


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


# ---------------------------------------------------------------- measuring


def classifier_accuracy(classifier, faces_uint8, labels, batch_size: int = 256) -> float:
    """Fraction of faces classified right, as deployed (mirror-averaged probabilities). Takes uint8 [N,H,W] faces or float [N,1,H,W] in [0,1] (decoded ones)."""
    x = to_tensor(faces_uint8) if isinstance(faces_uint8, np.ndarray) else faces_uint8
    device = next(classifier.parameters()).device
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            pred = classifier.probabilities(x[i : i + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == torch.as_tensor(labels[i : i + batch_size])).sum())
    return correct / len(x)


def image_quality(faces_uint8: np.ndarray, recon: torch.Tensor, batch_size: int = 256) -> tuple[float, float]:
    """(mean per-face PSNR in dB on the 0..255 scale, mean per-face MS-SSIM) of reconstructions against the originals."""
    psnr, msssim = [], []
    for i in range(0, len(recon), batch_size):
        x = to_tensor(faces_uint8[i : i + batch_size])
        r = recon[i : i + batch_size].cpu()
        mse = (r - x).square().mean((1, 2, 3)).clamp_min(1e-10)  # a lossless face counts as 100 dB, not infinity
        psnr.append(-10 * mse.log10())
        msssim.append(ms_ssim(r, x, data_range=1.0, size_average=False, win_size=MS_SSIM_WIN, weights=list(MS_SSIM_WEIGHTS)))
    return torch.cat(psnr).mean().item(), torch.cat(msssim).mean().item()


def _point(codec: str, setting, sizes, faces, labels, recon, classifiers: dict, batch_size: int) -> dict:
    """One rate point: mean whole-file bytes, fidelity, and every classifier's accuracy on the reconstructions."""
    h, w = faces.shape[1:]
    nbytes = float(np.mean(sizes))
    psnr, msssim = image_quality(faces, recon, batch_size)
    acc = {name: classifier_accuracy(clf, recon, labels, batch_size) for name, clf in classifiers.items()}
    return {
        "codec": codec,
        "setting": setting,
        "bytes": nbytes,
        "bpp": 8 * nbytes / (h * w),
        "psnr": psnr,
        "ms_ssim": msssim,
        "accuracy": next(iter(acc.values())),
        "accuracies": acc,
    }


def _progress(desc: str, total: int):
    return tqdm(total=total, desc=desc, unit="face", dynamic_ncols=True, mininterval=2, file=sys.stderr)


# ---------------------------------------------------------------- our codec


def _reconstruct(encoder, codec, faces: np.ndarray, q: int, batch_size: int, bar) -> tuple[list[int], torch.Tensor]:
    """Deployment round trip at quality q: edge encoder -> bitstreams -> server decoder -> synthesis."""
    from ferwire.bitstream import decode

    card, tables = encoder.card, encoder.tables
    sizes, recon = [], []
    for i in range(0, len(faces), batch_size):
        streams = encoder.encode(faces[i : i + batch_size], q)
        z = np.stack([decode(s, tables, card.model_tag)[1] for s in streams])
        with torch.inference_mode():
            recon.append(codec.reconstruct(z, tables, q).cpu())
        sizes += [len(s) for s in streams]
        bar.update(len(streams))
    return sizes, torch.cat(recon)


def evaluate_codec(card, faces, labels, qualities=None, device="cpu", batch_size=256, extra_classifiers: dict | None = None) -> list[dict]:
    """One point per quality of the model in `card`, through the deployment path.

    "accuracy" is the deployment classifier's; "accuracies" adds every extra
    classifier's, keyed by name, with the deployment one as "deployed".
    """
    from ferclient.encoder import FaceEncoder

    from .bundle import load_torch_models

    codec, deployed = load_torch_models(card, device)
    encoder = FaceEncoder(card.path, threads=torch.get_num_threads())
    classifiers = {DEPLOYED: deployed, **(extra_classifiers or {})}
    qualities = range(card.num_qualities) if qualities is None else qualities
    points = []
    with _progress(OURS, len(qualities) * len(faces)) as bar:
        for q in qualities:
            sizes, recon = _reconstruct(encoder, codec, faces, q, batch_size, bar)
            points.append({"quality": q, "lambda": card.lambdas[q], **_point(OURS, q, sizes, faces, labels, recon, classifiers, batch_size)})
    return points


def evaluate_expression(card, faces, labels, device="cpu", batch_size=256) -> list[dict]:
    """The expression layer's one point, through its deployment path: edge encoder -> bitstreams -> server decoder -> probabilities."""
    from ferclient.encoder import FaceEncoder
    from ferwire.bitstream import decode

    from .bundle import load_expression

    expr = load_expression(card, device)
    encoder = FaceEncoder(card.path, threads=torch.get_num_threads())
    sizes, correct = [], 0
    with _progress(EXPRESSION, len(faces)) as bar, torch.inference_mode():
        for i in range(0, len(faces), batch_size):
            streams = encoder.encode(faces[i : i + batch_size], 0)
            z = np.stack([decode(s, encoder.tables, card.model_tag)[1] for s in streams])
            pred = expr.probabilities(z, encoder.tables).argmax(1).cpu()
            correct += int((pred == torch.as_tensor(labels[i : i + batch_size])).sum())
            sizes += [len(s) for s in streams]
            bar.update(len(streams))
    h, w = faces.shape[1:]
    nbytes, acc = float(np.mean(sizes)), correct / len(faces)
    return [{"codec": EXPRESSION, "setting": 0, "quality": 0, "lambda": card.lambdas[0], "bytes": nbytes, "bpp": 8 * nbytes / (h * w),
             "psnr": None, "ms_ssim": None, "accuracy": acc, "accuracies": {DEPLOYED: acc}}]


# ---------------------------------------------------------------- baselines


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
    with _progress(name, len(settings) * len(faces)) as bar:
        for s in settings:
            sizes, decoded = [], []
            for face in faces:
                size, out = pillow_roundtrip(name, face, s)
                sizes.append(size)
                decoded.append(out)
                bar.update()
            recon = to_tensor(np.stack(decoded))
            points.append(_point(name, s, sizes, faces, labels, recon, classifiers, batch_size))
    return points


# ---------------------------------------------------------------- comparing curves


def _frontier(curve) -> np.ndarray:
    """The points no other point beats on both bytes and accuracy, as [[accuracy, log bytes], ...] rising in both."""
    kept: list[tuple[float, float]] = []
    for nbytes, acc in sorted(curve, key=lambda p: (-p[1], p[0])):  # most accurate first, cheapest first in a tie
        if nbytes > 0 and np.isfinite(acc) and (not kept or nbytes < kept[-1][0]):
            kept.append((nbytes, acc))
    return np.array([(acc, np.log(nbytes)) for nbytes, acc in reversed(kept)]).reshape(-1, 2)


def _mean_gap(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean of a(x) - b(x) over the x range both cover; a, b are [[x, y], ...] rising in x, linear between knots.

    Both curves are linear between the union of their knots, so the trapezoid rule is exact there.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    lo, hi = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if hi <= lo:
        return None
    x = np.union1d(np.concatenate([a[:, 0], b[:, 0]]), [lo, hi])
    x = x[(x >= lo) & (x <= hi)]
    diff = np.interp(x, a[:, 0], a[:, 1]) - np.interp(x, b[:, 0], b[:, 1])
    return float(np.sum((diff[1:] + diff[:-1]) / 2 * np.diff(x)) / (hi - lo))


def bd_rate(curve_a, curve_b) -> float | None:
    """Mean byte difference of a over b in % at equal accuracy (Bjontegaard style, piecewise linear).

    Curves are [(bytes, accuracy), ...]; negative means a needs fewer bytes.
    None when the accuracy ranges do not overlap.
    """
    mean = _mean_gap(_frontier(curve_a), _frontier(curve_b))
    return None if mean is None else float(np.expm1(mean) * 100)


def bd_accuracy(curve_a, curve_b) -> float | None:
    """Mean accuracy difference of a over b, in points, at equal bytes (over the overlapping log-byte range).

    Curves are [(bytes, accuracy), ...] in any order; positive means a is more accurate.
    """

    def xy(curve):
        return np.array(sorted((np.log(n), acc) for n, acc in curve)).reshape(-1, 2)

    mean = _mean_gap(xy(curve_a), xy(curve_b))
    return None if mean is None else mean * 100


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
    """Markdown: each fereval run (a training strategy, an export setting) against the first, our deployed curves only."""
    table = versus_first([
        (f"{name} (`{r['model']['id']}`)", r["uncompressed_accuracy"][DEPLOYED], curves([p for p in r["points"] if p["codec"] == OURS])[f"{OURS}/{DEPLOYED}"])
        for name, r in runs.items()
    ])
    r0 = next(iter(runs.values()))
    head = f"FER2013 {r0['split']} ({SPLIT_NAMES[r0['split']]}), {r0['faces']} faces; each run's own deployed classifier on its own reconstructions."
    return f"# Runs compared\n\n{head}\n\n{table}\n"


def bytes_at_accuracy(curve, target: float) -> float | None:
    """Fewest bytes per face that reach `target` accuracy, interpolated in log bytes; None if no point reaches it."""
    f = _frontier(curve)
    if not len(f) or f[-1, 0] < target:
        return None
    if f[0, 0] >= target:  # already there at the cheapest point: no extrapolation below the curve
        return float(np.exp(f[0, 1]))
    return float(np.exp(np.interp(target, f[:, 0], f[:, 1])))


PARITY_POINTS = 0.5  # the issue's bar for the default quality


def default_quality(points, uncompressed: float, tolerance: float = PARITY_POINTS / 100) -> dict:
    """The quality to ship as default: the cheapest one whose deployed accuracy is within
    `tolerance` of uncompressed, else the most accurate one. Run it on val (PublicTest)."""
    ours = sorted((p for p in points if p["codec"] == OURS), key=lambda p: p["quality"])
    within = [p for p in ours if p["accuracy"] >= uncompressed - tolerance]
    pick = within[0] if within else max(ours, key=lambda p: p["accuracy"])
    return {"quality": pick["quality"], "within_tolerance": bool(within), "gap_points": round((uncompressed - pick["accuracy"]) * 100, 2), "bytes": pick["bytes"]}


def curves(points) -> dict[str, list[tuple[float, float]]]:
    """Rate-accuracy curves keyed "codec/classifier"."""
    out: dict[str, list] = {}
    for p in points:
        for clf, acc in p["accuracies"].items():
            out.setdefault(f"{p['codec']}/{clf}", []).append((p["bytes"], acc))
    return out


def compare(points, uncompressed: dict) -> tuple[dict, dict]:
    """(BD-rate of each of our curves vs each baseline curve, bytes to stay within 1 point of uncompressed, per curve)."""
    cs = curves(points)
    ours = [k for k in cs if k.startswith(OURS + "/")]
    bd = {a: {b: bd_rate(cs[a], cs[b]) for b in cs if b not in ours and not b.startswith(EXPRESSION + "/")} for a in ours}
    within = {k: bytes_at_accuracy(c, uncompressed[k.split("/", 1)[1]] - 0.01) for k, c in cs.items()}
    return bd, within


# ---------------------------------------------------------------- reporting


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


# ---------------------------------------------------------------- reporting


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
        f"Pick it on val (`--split val`) and ship it with `ferexport --default-quality {d['quality']}`; the model's current default is q{r['model']['default_quality']}."
    )


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


# ---------------------------------------------------------------- command line


def _baseline_names(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)} or none")
    return list(dict.fromkeys(names))


def _extra_classifier(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path or "/" in name or name == DEPLOYED:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH with a NAME other than {DEPLOYED!r} and without '/', got {text!r}")
    return name, path


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _args(argv):
    p = argparse.ArgumentParser(prog="fereval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="model directory (default $FERCODEC_MODEL_DIR or the shipped fercodec-v1)")
    p.add_argument("--expression-dir", default=None, help="expression-layer model directory to measure too (default: the bundled fercodec-v1-expr; none skips it)")
    p.add_argument("--data", default=None, help=f"FER2013 npz (default {DEFAULT_DATA} or $FERCODEC_DATA)")
    p.add_argument("--split", choices=SPLITS, default="test", help="test = PrivateTest (default), val = PublicTest")
    p.add_argument("--limit", type=_positive, default=None, help="evaluate N evenly spaced faces of the split")
    p.add_argument("--out", default="docs/results", help="directory for results.json, results.md and the plots")
    p.add_argument("--baselines", type=_baseline_names, default=list(BASELINES), help=f"comma-separated subset of {','.join(BASELINES)}, or none (default all)")
    p.add_argument("--extra-classifier", type=_extra_classifier, action="append", default=[], metavar="NAME=PATH", help="also classify every decoded face with this checkpoint (repeatable)")
    p.add_argument("--update-card", action="store_true", help="write our metrics into the model directory's model.json and MODEL_CARD.md")
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0 = torch's default)")
    p.add_argument("--batch-size", type=_positive, default=256, help="faces per synthesis / classifier batch")
    p.add_argument("--device", default="cpu", help="torch device for synthesis and classifiers (cpu, cuda, auto)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=RESULTS_JSON", type=_extra_classifier,
                   help="instead of evaluating, compare earlier runs' results.json against the first one given; writes compare.md in --out")
    p.add_argument("--photos", action="store_true",
                   help="instead of the codec curves, measure the deployed path from photos: each face of the split pasted into a "
                        "synthetic canvas, then ferclient's detector, alignment and encoder and a real ferserver (fermodels.wild); "
                        "writes photos.md and photos.json in --out")
    p.add_argument("--server", default=None, help="with --photos: a running ferserver's host:port (default: start one on loopback)")
    p.add_argument("--seed", type=int, default=0, help="with --photos: canvas seed (default 0)")
    return p.parse_args(argv)


def photos(args, command: str) -> Path:
    """fereval --photos: write photos.json and photos.md in --out; returns the markdown's path."""
    from contextlib import nullcontext

    from ferserver.process import ServerProcess
    from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR

    from .wild import evaluate_photos, markdown

    faces, labels = load_split(args.split, args.data, args.limit)
    dirs = {"fercodec-v1 (image codec)": args.model_dir or DEFAULT_MODEL_DIR}
    expression = _expression_card(args.expression_dir)
    if expression is not None:
        dirs["fercodec-v1-expr (expression layer)"] = expression.path
    t0 = time.perf_counter()
    with (nullcontext(None) if args.server else ServerProcess()) as server:
        rows = evaluate_photos(args.server or server.address, faces, labels, dirs, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info("cpu")
    (out / "photos.json").write_text(json.dumps({"command": command, "split": args.split, "seconds": time.perf_counter() - t0,
                                                 "machine": machine, "rows": rows}, indent=1))
    (out / "photos.md").write_text(markdown(rows, command, f"{machine['processor']}, {machine['cpu_count']} cores, {machine['device']}"))
    return out / "photos.md"


def _expression_card(path):
    """The expression layer to measure: --expression-dir, else the bundled one if present; None for "none"."""
    from ferwire.card import EXPRESSION_MODEL_DIR, ModelCard

    if path == "none" or (path is None and not EXPRESSION_MODEL_DIR.is_dir()):
        return None
    card = ModelCard.load(path or EXPRESSION_MODEL_DIR)
    if card.kind != "expression":
        raise ValueError(f"--expression-dir {card.path} holds a {card.kind} model, not the expression layer")
    return card


def evaluate(args, command: str) -> dict:
    """Everything fereval measures, as the dict written to results.json."""
    from ferwire.card import ModelCard

    from .bundle import keep_freed_memory, pick_device

    t0 = time.perf_counter()
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    card = ModelCard.load(args.model_dir)
    if card.kind != "image":
        raise ValueError(f"--model-dir {card.path} is the {card.kind} layer; pass it as --expression-dir")
    faces, labels = load_split(args.split, args.data, args.limit)
    extras = {name: load_classifier(path, device) for name, path in args.extra_classifier}
    classifiers = {DEPLOYED: load_classifier(card.file("classifier.pt"), device), **extras}
    uncompressed = {name: classifier_accuracy(clf, faces, labels, args.batch_size) for name, clf in classifiers.items()}
    points = evaluate_codec(card, faces, labels, device=device, batch_size=args.batch_size, extra_classifiers=extras)
    expression = _expression_card(args.expression_dir)
    if expression is not None:
        points += evaluate_expression(expression, faces, labels, device, args.batch_size)
    baselines = available_baselines(args.baselines)
    for name in baselines:
        points += evaluate_baseline(name, faces, labels, classifiers, batch_size=args.batch_size)
    bd, within = compare(points, uncompressed)
    return {
        "model": {"id": card.model_id, "tag": card.model_tag, "path": str(card.path.resolve()), "lambdas": list(card.lambdas), "default_quality": card.default_quality},
        "expression": None if expression is None else {"id": expression.model_id, "tag": expression.model_tag, "path": str(expression.path.resolve()), "beta": expression.lambdas[0]},
        "split": args.split,
        "faces": len(faces),
        "data": str(Path(args.data or DEFAULT_DATA).resolve()),
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - t0,
        "machine": machine_info(device),
        "ms_ssim": MS_SSIM_NOTE,
        "classifiers": {DEPLOYED: str(card.file("classifier.pt").resolve()), **{n: str(Path(p).resolve()) for n, p in args.extra_classifier}},
        "uncompressed_accuracy": uncompressed,
        "baseline_settings": {k: BASELINES[k].how for k in baselines},
        "points": points,
        "bd_rate": bd,
        "bytes_within_1_point": within,
        "default_quality": default_quality(points, uncompressed[DEPLOYED]),
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _args(argv)
    try:
        if args.compare:
            runs = {name: json.loads(Path(path).read_text()) for name, path in args.compare}
            Path(args.out).mkdir(parents=True, exist_ok=True)
            text = compare_runs(runs) + f"\nCommand: `{shlex.join(['fereval', *argv])}`\n"
            (Path(args.out) / "compare.md").write_text(text)
            print(text)
            return 0
        if args.photos:
            path = photos(args, shlex.join(["fereval", *argv]))
            print(path.read_text())
            return 0
        results = evaluate(args, shlex.join(["fereval", *argv]))
        out = Path(args.out)
        write_outputs(results, out)
        if args.update_card:
            from ferwire.card import ModelCard

            update_card(ModelCard.load(results["model"]["path"]), results)
            if results["expression"]:
                update_card(ModelCard.load(results["expression"]["path"]), results, EXPRESSION)
    except (OSError, ValueError, KeyError) as e:
        print(f"fereval: {e if not isinstance(e, KeyError) else f'missing key {e} in a model or data file'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fereval: interrupted", file=sys.stderr)
        return 130
    print(f"fereval: {results['faces']} faces in {results['seconds']:.0f} s; wrote {out / 'results.md'}, results.json and the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
