r"""ferexport: turn training checkpoints into a shipped model directory (see ferwire.card).

    ferexport --codec runs/codec/best.pt --classifier runs/classifier/best.pt \
              --out models/weights/fercodec-v1
    ferexport --expression runs/expression/best.pt --name fercodec-v1-expr \
              --out models/weights/fercodec-v1-expr
    ferexport --codec models/weights/fercodec-v1 --classifier-only --ensemble \
              --classifier A.pt B.pt --out models/weights/fercodec-v1

The entropy tables are counted here, on the training split's latents
(ferwire.entropy), so export reads FER2013 and takes about two minutes. So is
the per-position scale before rounding (region-adaptive quantization): larger,
so finer steps, where the shipped classifier looks: `pooled saliency ** --region-alpha`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import CLASS_NAMES, FACE_SIZE, argtypes
from .data import DATA_HELP
from .bundle import ENTROPY_BUFFERS

REGION_ALPHA = 0.75
SALIENCY_FACES = 4096  # the first training faces: enough for a smooth map, seconds to compute


def _args(argv):
    p = argparse.ArgumentParser(prog="ferexport", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--codec", help="fertrain codec checkpoint (best.pt), or a model directory")
    what.add_argument("--expression", metavar="CHECKPOINT", help="fertrain expression checkpoint (best.pt): ship the expression layer instead")
    p.add_argument("--classifier", nargs="+", default=None, metavar="CHECKPOINT",
                   help="fertrain classifier checkpoint (or classifier.pt) to ship; required when the codec source carries none, and wins over the one it carries. "
                        "Several checkpoints of one width ship their weight average (a model soup), or with --ensemble all of them")
    p.add_argument("--ensemble", action="store_true",
                   help="ship the --classifier checkpoints as an ensemble (probabilities averaged, first one first) instead of their weight average")
    p.add_argument("--classifier-only", action="store_true",
                   help="with --codec a model directory: replace only its classifier.pt. The tables, edge encoder and model id stay, so "
                        "bitstreams and clients are unaffected; the card's metrics and temperature are cleared until make eval and calibration rerun")
    p.add_argument("--out", required=True, type=_out_dir, help="model directory to write")
    p.add_argument("--name", default=None, type=argtypes.checked(str, _id_prefix, "letters, digits, '.', '_' and '-', "
                                                                   "starting with a letter or digit, at most 123 (a model id is one folder name)"),
                   help="model id prefix; the tag's hex is appended (default fercodec-v1, or fercodec-v1-expr with --expression)")
    p.add_argument("--default-quality", type=int, default=None,
                   help="quality the client uses by default (default: that of the model directory --codec names, else the middle one)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--limit", type=argtypes.count, default=None, help="count the tables on N evenly spaced train faces only (smoke tests)")
    # nan wrote a NaN scale into tables.npz (a model that coded 7 bytes a face, at chance); a negative one inverts the saliency
    p.add_argument("--region-alpha", type=argtypes.checked(float, lambda v: 0.0 <= v < float("inf"), "a finite number >= 0"), default=REGION_ALPHA,
                   help=f"strength of region-adaptive quantization, 0 = uniform (default {REGION_ALPHA}, chosen on val)")
    return p.parse_args(argv)


def _provenance(limit: int | None) -> dict:
    """What model.json records of how it was made beside its sources: the code's commit, and a smoke-test --limit (the
    tables counted on that many faces only), which otherwise looked like a real export."""
    from . import source_revision

    return {"source_commit": source_revision(), **({"tables_limit": limit} if limit else {})}


def _out_dir(text: str) -> str:
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a model directory to write")
    return text


@contextmanager
def _staged(out: str | Path):
    """A hidden folder beside `out` to write a model directory's files into; on success they move into `out`.

    Why: an export takes minutes and used to write into `out` file by file, so an interrupt or an error (a bad
    checkpoint, a full disk) while exporting in place left a directory of two exports' files that ModelCard.load
    accepts. Now `out` changes only at the end: a new directory by one rename, an existing one by a rename per file
    with SIGINT, SIGTERM and SIGHUP held, model.json last."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the model directory's: unreadable to a server run as another user
    try:
        yield stage
        _move_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _move_in(stage: Path, out: Path) -> None:
    """stage's files into out: one rename where out does not exist yet, else a rename per file, model.json last.
    SIGINT, SIGTERM and SIGHUP wait until the files are in (a Python handler: torch's threads may receive them too)."""
    deferred: list[int] = []
    held = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    try:
        previous = {n: signal.signal(n, lambda sig, frame: deferred.append(sig)) for n in held}
    except ValueError:  # not the main thread, where no handler can be set: moved as they are
        previous = {}
    try:
        if not out.exists():
            os.rename(stage, out)
            return
        for f in sorted(stage.iterdir(), key=lambda f: f.name == "model.json"):
            os.replace(f, out / f.name)
    finally:
        for n, handler in previous.items():
            signal.signal(n, handler if handler is not None else signal.SIG_DFL)
        for n in deferred:
            signal.raise_signal(n)


def _id_prefix(name: str) -> bool:
    """Whether name, with the tag's hex appended, is a model id a client can pull (ferwire.card.valid_model_id)."""
    from ferwire.card import valid_model_id

    return valid_model_id(f"{name}-0000")


def _stale_note(out: Path, meta_before: dict | None, meta: dict) -> str | None:
    """What an export into an existing model directory left behind that described the model it replaced."""
    if meta_before is None:
        return None
    gone = [k for k in ("metrics", "temperature", "prior_correction") if meta_before.get(k) and not meta.get(k)]
    stale = [f"model.json's {', '.join(gone)} (the previous model's: rerun make eval and calibration)"] if gone else []
    if meta_before.get("prior_correction") and meta.get("prior_correction"):
        stale.append("model.json's prior_correction, kept (chosen with the previous classifier: rerun calibration)")
    if (out / "MODEL_CARD.md").is_file() and meta_before.get("metrics"):
        stale.append("MODEL_CARD.md's measured figures")
    if meta_before.get("int8") and (out / meta_before["int8"].get("file", "")).is_file():
        stale.append(f"{meta_before['int8']['file']} (the previous classifier's: ferserver serves the float one until python -m fermodels.quantize runs)")
    return f"{out} now holds a new model; stale or cleared: " + "; ".join(stale) if stale else None


def _previous(model_dir: str | Path) -> dict | None:
    """The raw model.json of a model directory (the one an export replaces, or re-exports), if it has one."""
    try:
        return json.loads((Path(model_dir) / "model.json").read_text())
    except (OSError, ValueError):
        return None


def saliency_map(clf, faces):
    """Mean |d CE / d pixel| of `clf` over `faces` [N,1,H,W] (against its own answer), made
    mirror-symmetric, blurred 5x5 and scaled to mean 1: where the classifier looks, on average."""
    import torch
    import torch.nn.functional as F

    clf.eval()
    total = torch.zeros(faces.shape[-2:])
    for i in range(0, len(faces), 256):
        x = faces[i : i + 256].clone().requires_grad_(True)
        logits = clf(x)
        F.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
        total += x.grad.abs().sum((0, 1))
    s = 0.5 * (total + total.flip(-1))
    s = F.avg_pool2d(s[None, None], 5, stride=1, padding=2, count_include_pad=False)[0, 0]
    return (s / s.mean()).numpy()


def region_scale(saliency: np.ndarray, stride: int, alpha: float) -> np.ndarray:
    """Per-latent-position scale before rounding: the saliency, blended 1:3 with a flat map and
    averaged over each position's stride x stride pixels, to the power alpha, geometric mean 1."""
    h, w = saliency.shape
    pooled = (0.25 + 0.75 * saliency).reshape(h // stride, stride, w // stride, stride).mean((1, 3))
    scale = pooled**alpha
    return (scale / np.exp(np.log(scale).mean())).astype(np.float32)


def _latents(codec, faces: np.ndarray) -> np.ndarray:
    import torch
    from tqdm import tqdm

    from .data import to_tensor

    with torch.inference_mode():
        return np.concatenate([codec.g_a(to_tensor(faces[i : i + 512])).numpy() for i in tqdm(range(0, len(faces), 512), desc="train latents", unit="batch", file=sys.stderr)])


def _classifier(sources: list, ensemble: bool):
    """The classifier to ship from checkpoints: one, their weight average, or (ensemble) all of them."""
    from .bundle import load_classifier
    from .classifier import ClassifierEnsemble, average_weights

    nets = [load_classifier(p) for p in sources]
    if ensemble:  # an ensemble among them adds its members
        nets = [m for n in nets for m in getattr(n, "members", [n])]
        if len(nets) < 2:
            raise ValueError("--ensemble needs at least two --classifier checkpoints")
        return ClassifierEnsemble(nets).eval()
    return nets[0] if len(nets) == 1 else average_weights(nets)


def replace_classifier(model_dir: str | Path, classifier_src: list, out: str | Path, ensemble: bool = False, default_quality: int | None = None) -> dict:
    """A copy of model_dir (or model_dir itself, when out is it) with a new classifier.pt and nothing else changed
    but the card: its sources name the new checkpoints, its metrics and temperature, which were the old
    classifier's, are cleared, and its default quality is default_quality when given."""
    import torch

    src, out = Path(model_dir), Path(out)
    if not (src / "model.json").is_file():
        raise ValueError(f"--classifier-only needs --codec to be a model directory; {src} has no model.json")
    if not classifier_src:
        raise ValueError("--classifier-only needs --classifier")
    clf = _classifier(classifier_src, ensemble)  # before any file changes: a bad checkpoint leaves the model as it was
    meta = json.loads((src / "model.json").read_text())
    if default_quality is not None and not 0 <= default_quality < len(meta["lambdas"]):
        raise ValueError(f"--default-quality must be 0 to {len(meta['lambdas']) - 1}, got {default_quality}")
    with _staged(out) as stage:
        if out.resolve() != src.resolve():
            shutil.copytree(src, stage, dirs_exist_ok=True)
        torch.save({"config": clf.config(), "state_dict": clf.state_dict()}, stage / "classifier.pt")
        # A member that is this directory's own classifier is recorded by what it was made from.
        own = {(src / "classifier.pt").resolve(), src.resolve()}
        members = []
        for c in classifier_src:
            record = meta.get("sources", {}).get("classifier", str(c)) if Path(c).resolve() in own else str(c)
            members += record["ensemble"] if ensemble and isinstance(record, dict) and "ensemble" in record else [record]
        meta["sources"] = {**meta.get("sources", {}), "classifier": _classifier_record(members, ensemble)}
        meta["metrics"] = {}
        meta.pop("temperature", None)
        if default_quality is not None:
            meta["default_quality"] = default_quality
        (stage / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def export(codec_src: str, classifier_src: str | list[str] | None, out: str | Path, name: str = "fercodec-v1", default_quality: int | None = None,
           data: str | None = None, limit: int | None = None, region_alpha: float = REGION_ALPHA, ensemble: bool = False) -> dict:
    import torch
    from tqdm import tqdm

    from ferwire.entropy import EntropyTables

    from .bundle import load_training_models
    from .data import load_split, to_tensor

    codec, clf = load_training_models(codec_src)
    if default_quality is None and Path(codec_src).is_dir():  # re-exporting a model keeps the quality its clients use
        kept = (_previous(codec_src) or {}).get("default_quality")
        default_quality = kept if isinstance(kept, int) and 0 <= kept < codec.num_qualities else None
    if default_quality is not None and not 0 <= default_quality < codec.num_qualities:  # written as given, and loaded, before
        raise ValueError(f"--default-quality must be 0 to {codec.num_qualities - 1} ({codec.num_qualities} qualities), got {default_quality}")
    # A joint checkpoint or a model directory carries a classifier; --classifier replaces it
    # (e.g. one fine-tuned on this codec's decoded faces: fertrain classifier --decoded),
    # and several replace it with their weight average, or with --ensemble with all of them.
    classifier_src = [classifier_src] if isinstance(classifier_src, (str, Path)) else classifier_src
    if classifier_src:
        clf = _classifier(classifier_src, ensemble)
    elif clf is None:
        raise ValueError(f"{codec_src} carries no classifier: pass --classifier")
    faces, _ = load_split("train", data, limit)
    scale = region_scale(saliency_map(clf, to_tensor(faces[:SALIENCY_FACES])), codec.stride, region_alpha)
    tables = EntropyTables.fit(_latents(codec, faces), **codec.quantizer(), scale=scale,
                               progress=lambda it: tqdm(it, desc="entropy tables", unit="quality", file=sys.stderr))
    arrays = tables.arrays()
    tag = _tag(arrays, codec.g_a.state_dict())

    lambdas = tuple(float(v) for v in codec.lambdas.tolist())
    meta = {
        "model_id": f"{name}-{tag:04x}",
        "model_tag": tag,
        "version": "2",
        "face_size": [FACE_SIZE, FACE_SIZE],
        "class_names": list(CLASS_NAMES),
        "lambdas": list(lambdas),
        "default_quality": len(lambdas) // 2 if default_quality is None else default_quality,
        "region_alpha": region_alpha,
        "sources": _sources(codec_src, classifier_src, ensemble),
        **_provenance(limit),
        "metrics": {},
    }
    with _staged(out) as stage:
        tables.save(stage / "tables.npz")
        save_codec(codec, stage / "codec.pt")
        torch.save({"config": clf.config(), "state_dict": clf.state_dict()}, stage / "classifier.pt")
        _save_onnx(codec.g_a, stage / "encoder.onnx")
        (stage / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def save_codec(codec, path: Path) -> None:
    """codec.pt: the codec's config and weights, less the training-time entropy models' CDF buffers (tables.npz codes the bitstream)."""
    import torch

    weights = {k: v for k, v in codec.state_dict().items() if not k.endswith(ENTROPY_BUFFERS)}
    torch.save({"config": codec.config(), "state_dict": weights}, path)


def _tag(arrays: dict, encoder_state: dict) -> int:
    """16 bits of SHA-256 over the tables and the edge encoder's weights: what the bitstream header names."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    for v in encoder_state.values():
        h.update(v.numpy().tobytes())
    return int.from_bytes(h.digest()[:2], "big")


def _save_onnx(module, path: Path) -> None:
    import torch

    # The torch.export-based exporter (the TorchScript one is deprecated); batch is dynamic.
    x = torch.rand(1, 1, FACE_SIZE, FACE_SIZE)
    program = torch.onnx.export(
        module, (x,), input_names=["face"], output_names=["latent"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=18, dynamo=True, verbose=False
    )
    program.save(str(path))


def export_expression(src: str, out: str | Path, name: str = "fercodec-v1-expr", data: str | None = None, limit: int | None = None) -> dict:
    """A `fertrain expression` checkpoint -> an expression-layer model directory (kind "expression", one quality)."""
    import torch
    from tqdm import tqdm

    from ferwire.entropy import EntropyTables

    from .data import load_split, to_tensor
    from .expression import ExpressionCodec

    if not Path(src).is_file():
        raise FileNotFoundError(f"no expression checkpoint at {src}")
    ck = torch.load(src, map_location="cpu", weights_only=False)
    if "expression" not in ck.get("models", {}):
        raise ValueError(f"{src} is not a fertrain expression checkpoint")
    state, args = ck["models"]["expression"], ck["args"]
    # A checkpoint from before --hidden or --front-blocks lacks them: ExpressionCodec's defaults say what they were.
    codec = ExpressionCodec(args["channels"], float(state["lambdas"][0]), args["width"], **{k: args[k] for k in ("hidden", "front_blocks") if k in args})
    codec.load_state_dict(state)
    codec.eval()
    faces, _ = load_split("train", data, limit)
    with torch.inference_mode():
        latents = np.concatenate([codec.encoder(to_tensor(faces[i : i + 512])).numpy() for i in tqdm(range(0, len(faces), 512), desc="train latents", unit="batch", file=sys.stderr)])
    tables = EntropyTables.fit(latents, **codec.quantizer())
    arrays = tables.arrays()
    tag = _tag(arrays, codec.encoder.state_dict())
    weights = {k: v for k, v in codec.state_dict().items() if not k.endswith(ENTROPY_BUFFERS)}
    meta = {
        "model_id": f"{name}-{tag:04x}",
        "model_tag": tag,
        "kind": "expression",
        "version": "2",
        "face_size": [FACE_SIZE, FACE_SIZE],
        "class_names": list(CLASS_NAMES),
        "lambdas": [float(codec.lambdas[0])],
        "default_quality": 0,
        "sources": {"expression": str(src), "classifier": args["classifier"], **({"member": args["member"]} if args.get("member") else {}),
                    **({"teacher": args["teacher"]} if args.get("teacher") else {})},
        "metrics": {},
        **_provenance(limit),
    }
    with _staged(out) as stage:
        tables.save(stage / "tables.npz")
        torch.save({"config": codec.config(), "state_dict": weights}, stage / "expression.pt")
        _save_onnx(codec.encoder, stage / "encoder.onnx")
        (stage / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _classifier_record(names: list, ensemble: bool):
    """model.json's record of the classifier: a checkpoint, a list of them (their weight average) or {"ensemble": [...]}."""
    return {"ensemble": names} if ensemble else names[0] if len(names) == 1 else names


def _sources(codec_src, classifier_src, ensemble: bool = False) -> dict:
    """Where the weights came from; re-exporting a model directory keeps that model's record."""
    if Path(codec_src).is_dir():
        sources = json.loads((Path(codec_src) / "model.json").read_text()).get("sources", {})
    else:
        sources = {"codec": str(codec_src), "classifier": str(codec_src)}
    if not classifier_src:
        return sources
    return {**sources, "classifier": _classifier_record([str(p) for p in classifier_src], ensemble)}


def main(argv=None) -> int:
    args = _args(argv)
    before = _previous(args.out)
    if before is None and args.classifier_only and args.codec:  # a copy of --codec's directory, card and all
        before = _previous(args.codec)
    try:
        if args.classifier_only and not args.codec:
            raise ValueError("--classifier-only replaces the classifier of the model directory --codec names")
        if args.expression:
            meta = export_expression(args.expression, args.out, args.name or "fercodec-v1-expr", args.data, args.limit)
        elif args.classifier_only:
            meta = replace_classifier(args.codec, args.classifier, args.out, args.ensemble, args.default_quality)
        else:
            meta = export(args.codec, args.classifier, args.out, args.name or "fercodec-v1", args.default_quality, args.data, args.limit, args.region_alpha, args.ensemble)
    except (OSError, ValueError) as e:
        print(f"ferexport: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the files move in with SIGINT held: the directory is either as it was or the new model
        done = _previous(args.out) != before
        print(f"ferexport: interrupted; {args.out} {'holds the new model (it was moved in)' if done else 'is unchanged'}", file=sys.stderr)
        return 130
    print(f"wrote {args.out}: model {meta['model_id']} (tag {meta['model_tag']:#06x})")
    note = _stale_note(Path(args.out), before, meta)
    if note:
        print(note, file=sys.stderr)
    if not args.expression:  # the int8 copy is made from the classifier.pt just written, in its own step (docs/precision)
        print(f"next, for ferserver's int8 classifier on a CPU: python -m fermodels.quantize {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
