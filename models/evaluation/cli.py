"""fereval: what the shipped codec costs in bytes and in expression accuracy, against Pillow's codecs.

Our points go through the deployment path (ONNX encoder and range coder of the
edge client, the server's bitstream decoder and synthesis), so the bytes are
real bitstreams and the accuracy is what the server would report. Baselines are
whole files as Pillow writes them, decoded back and classified the same way.

    fereval --out docs/results                     # all of FER2013 PrivateTest: the published figures (make eval)
    fereval --limit 300 --baselines jpeg,webp      # a quick look, into runs/fereval
    fereval --extra-classifier plain=runs/classifier/best.pt --update-card

The expression layer (fercodec-v1-expr, a feature codec that sends no pixels)
is measured beside the image codec when its directory exists: bytes and
accuracy through its own deployment path, no PSNR (--expression-dir none skips it).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import argtypes, source_revision
from ..bundle import load_classifier
from ..data import DATA_HELP, DEFAULT_DATA, SPLITS, load_split
from .baselines import BASELINES, available_baselines, evaluate_baseline
from .comparison import compare, default_quality
from .deployment import evaluate_codec, evaluate_expression
from .measure import DEPLOYED, EXPRESSION, MS_SSIM_NOTE, classifier_accuracy
from .report import SPLIT_NAMES, compare_runs, machine_info, pick_line, update_card, write_outputs


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


def _sides(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI in px, such as 32-63; got {text!r}") from None
    if not 16 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 16 <= LO <= HI, got {lo}-{hi}")
    return lo, hi


def _tilts(text: str) -> tuple[float, ...]:
    try:
        tilts = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected degrees separated by commas, such as 0,10,20; got {text!r}") from None
    if not all(0 <= t <= 180 for t in tilts):
        raise argparse.ArgumentTypeError(f"each tilt must be 0 to 180 degrees, got {text!r}")
    return tilts


def _args(argv):
    p = argparse.ArgumentParser(prog="fereval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="model directory (default $FERCODEC_MODEL_DIR or the shipped fercodec-v1); "
                                                     "with --robustness, none leaves out the image codec and its classifier (an expression layer or --extra-classifier networks alone)")
    p.add_argument("--expression-dir", default=None, help="expression-layer model directory to measure too (default: the bundled fercodec-v1-expr; none skips it)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--split", choices=SPLITS, default="test", help="test = PrivateTest (default), val = PublicTest")
    p.add_argument("--limit", type=argtypes.count, default=None, help="evaluate N evenly spaced faces of the split")
    p.add_argument("--out", default="runs/fereval", help="directory for results.json, results.md and the plots (or photos.md, folder.md, "
                   "robustness.md); the default keeps a quick look out of the published docs/results, which make eval writes")
    p.add_argument("--baselines", type=_baseline_names, default=list(BASELINES), help=f"comma-separated subset of {','.join(BASELINES)}, or none (default all)")
    p.add_argument("--extra-classifier", type=_extra_classifier, action="append", default=[], metavar="NAME=PATH", help="also classify every decoded face with this checkpoint (repeatable)")
    p.add_argument("--update-card", action="store_true", help="write our metrics into the model directory's model.json and MODEL_CARD.md")
    p.add_argument("--threads", type=argtypes.threads, default=0, help="torch and ONNX Runtime threads (0 = torch's default)")
    p.add_argument("--batch-size", type=argtypes.count, default=256, help="faces per synthesis / classifier batch")
    p.add_argument("--device", default="cpu", type=argtypes.checked(str, lambda v: re.fullmatch(r"cpu|auto|cuda(:\d+)?", v) is not None, "cpu, cuda, cuda:N or auto"),
                   help="torch device for synthesis and classifiers (cpu, cuda, cuda:N, auto)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=RESULTS_JSON", type=_extra_classifier,
                   help="instead of evaluating, compare earlier runs' results.json against the first one given; writes compare.md in --out")
    p.add_argument("--photos", action="store_true",
                   help="instead of the codec curves, measure the deployed path from photos: each face of the split pasted into a "
                        "synthetic canvas, then ferclient's detector, alignment and encoder and a real ferserver (fermodels.evaluation.photos); "
                        "writes photos.md and photos.json in --out")
    p.add_argument("--robustness", action="store_true",
                   help="instead of the codec curves, measure accuracy on the split's faces under fixed realistic-crop perturbations "
                        "(offset, zoom, tilt, blur, lighting, JPEG source, occlusion): every classifier uncompressed, the image codec at its "
                        "default quality, the expression layer; writes robustness.md and robustness.json in --out")
    p.add_argument("--folder", default=None, metavar="DIR",
                   help="instead of FER2013, measure labelled face crops from another collection: DIR has one subfolder per class "
                        "(FER2013's names or aliases such as anger, sadness); each image sent as ferclient send --no-detect sends it, to a "
                        "real ferserver, beside the classifier uncompressed (fermodels.evaluation.folder); writes folder.md and folder.json in --out")
    p.add_argument("--detect", action="store_true", help="with --folder: the images are photos; find the largest face and align it, "
                                                              "as ferclient send does (a photo with no face found counts as wrong)")
    p.add_argument("--group-by", type=_regex, default=None, metavar="REGEX",
                   help="with --folder: the group (e.g. the person) of each image is REGEX's first group on its file name's stem "
                        r"(LFW-style Name_0001: '^(.+?)_\d+$'); adds accuracy averaged over groups and the largest groups, for "
                        "collections where a few people have many images")
    p.add_argument("--server", default=None, help="with --photos or --folder: a running ferserver's host:port (default: start one on loopback)")
    p.add_argument("--seed", type=int, default=0, help="with --photos: canvas seed (default 0)")
    p.add_argument("--photo-sides", type=_sides, default=None, metavar="LO-HI",
                   help="with --photos: the pasted face's side in px, drawn from LO to HI (default 64-192; 32-63 measures small faces)")
    p.add_argument("--photo-tilts", type=_tilts, default=None, metavar="DEG[,DEG...]",
                   help="with --photos: one row each, faces turned by up to DEG degrees either way (default 0,10,20; "
                        "180 measures faces in any orientation)")
    args = p.parse_args(argv)
    if sum(map(bool, (args.photos, args.robustness, args.folder, args.compare))) > 1:
        p.error("--photos, --robustness, --folder and --compare are separate runs: give one")
    if (args.detect or args.group_by) and not args.folder:
        p.error("--detect and --group-by go with --folder")
    if (args.photo_sides or args.photo_tilts or args.seed) and not args.photos:
        p.error("--photo-sides, --photo-tilts and --seed go with --photos")
    if args.server and not (args.photos or args.folder):  # taken and ignored: the curves run in-process
        p.error("--server goes with --photos or --folder")
    if args.update_card and (args.limit or args.split != "test") and _shipped_among(args.model_dir, args.expression_dir):
        # a sample, or val, went into a shipped card under its "Measured (fereval, FER2013 PrivateTest)" heading
        p.error("--update-card into a shipped model's card records the full PrivateTest measurement: drop --limit and --split "
                "(or measure a copy of the model directory)")
    if args.model_dir == "none" and not args.robustness:
        p.error("--model-dir none goes with --robustness (every other run measures the image codec)")
    return args


def _shipped_among(*dirs) -> bool:
    """Whether any of the model directories --update-card would write is one shipped in this package (None: the default)."""
    from ferwire.card import WEIGHTS, model_path

    return any(model_path(d or WEIGHTS).resolve().is_relative_to(WEIGHTS.resolve()) for d in dirs if d != "none")


def _regex(text: str):
    try:
        rx = re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"not a regular expression: {e}") from None
    if rx.groups < 1:
        raise argparse.ArgumentTypeError("needs a capture group, e.g. '^(.+?)_\\d+$'")
    return rx


def _served_models(args) -> dict:
    """{row name: model directory} for the paths that go through a real ferserver: the image codec, and the expression layer unless none."""
    from ferwire.card import DEFAULT_MODEL_DIR

    dirs = {"fercodec-v1 (image codec)": args.model_dir or DEFAULT_MODEL_DIR}
    expression = _expression_card(args.expression_dir)
    if expression is not None:
        dirs["fercodec-v1-expr (expression layer)"] = expression.path
    return dirs


@contextmanager
def _server(args, models: dict):
    """The address of --server, or of a ferserver started on loopback for the run (stopped after it), serving the
    model directories measured (`models`, from _served_models: --model-dir and --expression-dir, not the bundled ones)."""
    if args.server:
        yield args.server
        return
    from ferserver.process import ServerProcess

    with ServerProcess("--model-dir", ",".join(str(d) for d in models.values())) as server:
        yield server.address


def run_photos(args, command: str) -> Path:
    """fereval --photos: write photos.json and photos.md in --out; returns the markdown's path."""
    from .photos import SIDES, TILTS, evaluate_photos, markdown

    faces, labels = load_split(args.split, args.data, args.limit)
    t0 = time.perf_counter()
    models = _served_models(args)
    with _server(args, models) as address:
        rows = evaluate_photos(address, faces, labels, models, seed=args.seed, tilts=args.photo_tilts or TILTS,
                               sides=args.photo_sides or SIDES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info("cpu")
    (out / "photos.json").write_text(json.dumps({"command": command, "split": args.split, "seconds": time.perf_counter() - t0,
                                                 "machine": machine, "rows": rows}, indent=1))
    (out / "photos.md").write_text(markdown(rows, command, f"{machine['processor']}, {machine['cpu_count']} cores, {machine['device']}"))
    return out / "photos.md"


def run_folder(args, command: str) -> Path:
    """fereval --folder: write folder.json and folder.md in --out; returns the markdown's path."""
    from ferwire.card import DEFAULT_MODEL_DIR, ModelCard

    from .folder import evaluate_folder, load_folder, markdown

    faces, labels, notes = load_folder(args.folder, args.detect)
    card = ModelCard.load(args.model_dir or DEFAULT_MODEL_DIR)
    t0 = time.perf_counter()
    models = _served_models(args)
    with _server(args, models) as address:
        rows = evaluate_folder(address, faces, labels, models, card, notes["missed"], _groups(notes.pop("files"), args.group_by))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info("cpu")
    (out / "folder.json").write_text(json.dumps({"command": command, "folder": str(Path(args.folder).resolve()), "faces": len(labels),
                                                 "seconds": time.perf_counter() - t0, "machine": machine, **notes, "rows": rows}, indent=1))
    (out / "folder.md").write_text(markdown(rows, labels, notes, args.folder, command, f"{machine['processor']}, {machine['cpu_count']} cores"))
    return out / "folder.md"


def _groups(files: list[str], rx) -> list[str] | None:
    """Each image's group under --group-by (its whole stem where the pattern does not match), or None without it."""
    if rx is None:
        return None
    return [m.group(1) if (m := rx.search(Path(f).stem)) else Path(f).stem for f in files]


def run_robustness(args, command: str) -> Path:
    """fereval --robustness: write robustness.json and robustness.md in --out; returns the markdown's path."""
    from ferwire.card import ModelCard

    from ..bundle import pick_device
    from .robustness import evaluate_robustness, markdown, replot

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    card = None if args.model_dir == "none" else ModelCard.load(args.model_dir)
    expression = _expression_card(args.expression_dir)
    if card is None and expression is None and not args.extra_classifier:
        raise ValueError("--model-dir none and --expression-dir none leave nothing to measure (add an --extra-classifier)")
    faces, labels = load_split(args.split, args.data, args.limit)
    deployed = {DEPLOYED: load_classifier(card.file("classifier.pt"), device)} if card is not None else {}
    classifiers = {**deployed, **{n: load_classifier(p, device) for n, p in args.extra_classifier}}
    t0 = time.perf_counter()
    columns, rows = evaluate_robustness(card, expression, faces, labels, classifiers, device, args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(device)
    (out / "robustness.json").write_text(json.dumps({"command": command, "split": args.split, "faces": len(faces), "seconds": time.perf_counter() - t0,
                                                     "machine": machine, "columns": columns, "rows": rows}, indent=1))
    (out / "robustness.md").write_text(markdown(columns, rows, command, f"{machine['processor']}, {machine['cpu_count']} cores, {device}", len(faces), SPLIT_NAMES[args.split]))
    replot(out)
    return out / "robustness.md"


def _check_up_front(args) -> None:
    """ValueError for what would fail only after minutes of measuring: --out a file, a model directory that does not load
    or is of the wrong kind (an audit found --out and --expression-dir refused once the image codec's pass was done)."""
    from ferwire.card import ModelCard

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if args.model_dir != "none":
        card = ModelCard.load(args.model_dir) if args.model_dir else None
        if card is not None and card.kind != "image":
            raise ValueError(f"--model-dir {card.path} is the {card.kind} layer; pass it as --expression-dir")
    _expression_card(args.expression_dir)


def _expression_card(path):
    """The expression layer to measure: --expression-dir, else the bundled one if present; None for "none"."""
    from ferwire.card import EXPRESSION_MODEL_DIR, ModelCard

    if path == "none" or (path is None and not EXPRESSION_MODEL_DIR.is_dir()):
        return None
    card = ModelCard.load(path or EXPRESSION_MODEL_DIR)
    if card.kind != "expression":
        raise ValueError(f"--expression-dir {card.path} holds a model of kind {card.kind!r}, not the expression layer")
    return card


def evaluate(args, command: str) -> dict:
    """Everything fereval measures, as the dict written to results.json."""
    from ferwire.card import ModelCard

    from ..bundle import keep_freed_memory, pick_device

    t0 = time.perf_counter()
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    card = ModelCard.load(args.model_dir)  # an image model: main's _check_up_front
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
        "commit": source_revision(),
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
        _check_up_front(args)
        if args.photos or args.robustness or args.folder:
            run = run_photos if args.photos else run_robustness if args.robustness else run_folder
            path = run(args, shlex.join(["fereval", *argv]))
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
    print(f"fereval: {pick_line(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
