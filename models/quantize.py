"""An int8 copy of an image model's classifier, for serving on a CPU.

    python -m fermodels.quantize [MODEL_DIR ...]           # default: the bundled fercodec-v1
    python -m fermodels.quantize --check [MODEL_DIR ...]   # writes nothing: int8 classifier and bf16 synthesis against float on val, and their speed

writes MODEL_DIR/classifier.int8.pt and records it in model.json ("int8"). ferserver on a CPU then classifies with
it (`--classifier-precision auto`, the default; `fp32` keeps the float network).

Why: the classifier is most of the image codec's serving cost on a CPU (two networks, each on the face and its
mirror image). Static post-training quantization (PyTorch FX, x86 backend: weights int8 per output channel,
activations int8 per tensor) runs it several times faster on 2 cores (6.8x to 9.8x in `--check`'s runs, docs/precision), with the same answers on about 99 %
of faces and the same accuracy within noise.

Calibration sees only FER2013 *train* faces, each decoded by the model's own codec at a quality drawn at random
(the inputs the server's classifier gets), with their mirror images; val and test play no part. The file is
TorchScript (a traced graph with its weights), tied by SHA-256 to the classifier.pt it was made from: ferserver
ignores it, with a warning, once classifier.pt changes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

from . import progress_bar
from .data import DATA_HELP

INT8_FILE = "classifier.int8.pt"
CALIBRATION_FACES = 2048  # FER2013 train faces, evenly spaced; each also mirrored
CALIBRATION_BATCH = 256
ENGINE = "x86"  # torch's quantized CPU engine (FBGEMM + oneDNN); where torch lacks it, the float network serves


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mirror_ensemble(members):
    """nn.Module: the members' probabilities, each averaged over the face and its mirror image, then over members:
    what ClassifierEnsemble.probabilities (or FERClassifier.probabilities for one member) answers."""
    import torch
    from torch import nn

    class MirrorEnsemble(nn.Module):
        def __init__(self):
            super().__init__()
            self.members = nn.ModuleList(members)

        def forward(self, x):
            # The face and its mirror image in one call per member, split back by view(2, -1, 7) (N stays dynamic in the
            # traced graph): about a third less time for one face than two calls, a tenth less per face at batch 32 (--check; same answers).
            both = torch.cat([x, x.flip(-1)])
            total = torch.zeros(x.shape[0], 7)
            for m in self.members:
                total = total + torch.softmax(m(both).float(), 1).view(2, -1, 7).sum(0)
            return total / (2 * len(self.members))

    return MirrorEnsemble()


def quantize(classifier, faces):
    """A traced int8 module answering as classifier.probabilities does, calibrated on faces [N,1,48,48] in [0, 1]
    (the mirror images are added here)."""
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if ENGINE not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"this torch has no {ENGINE!r} quantized engine (it has {torch.backends.quantized.supported_engines})")
    torch.backends.quantized.engine = ENGINE
    members = list(getattr(classifier, "members", [classifier]))
    if any(m.head[-1].out_features != 7 for m in members):
        raise ValueError("the int8 classifier is written for FER2013's 7 classes")
    calibration = torch.cat([faces, faces.flip(-1)])
    starts = range(0, len(calibration), CALIBRATION_BATCH)
    out = []
    # The observers' passes are most of a minute with nothing else to show for it: a bar over every member's batches.
    with warnings.catch_warnings(), progress_bar(f"int8 calibration, {len(members)} network{'s' * (len(members) > 1)}", len(members) * len(starts), "batch") as bar:
        warnings.simplefilter("ignore")  # FX quantization's deprecation notice (torch 2.x keeps it working)
        for m in members:
            m = copy.deepcopy(m).cpu().eval()
            prepared = prepare_fx(m, get_default_qconfig_mapping(ENGINE), (calibration[:8],))
            with torch.no_grad():
                for i in starts:
                    prepared(calibration[i : i + CALIBRATION_BATCH])
                    bar.update()
            out.append(convert_fx(prepared))
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(_mirror_ensemble(out).eval(), (faces[:8],)))


def calibration_faces(model_dir, count: int = CALIBRATION_FACES, seed: int = 0, data: str | None = None):
    """[count,1,48,48] float: FER2013 train faces, evenly spaced, each decoded by model_dir's codec at a random quality."""
    import numpy as np
    import torch

    from ferwire.card import ModelCard
    from ferwire.entropy import EntropyTables

    from .bundle import decoded_faces, load_torch_models
    from .data import load_split, to_tensor

    card = ModelCard.load(model_dir)
    codec, _ = load_torch_models(card)
    tables = EntropyTables.load(card.file("tables.npz"))
    x = to_tensor(load_split("train", data, limit=count)[0])
    q = np.random.default_rng(seed).integers(0, card.num_qualities, len(x))
    out = torch.empty_like(x)
    with progress_bar(f"calibration faces, decoded at {card.num_qualities} qualities", len(x)) as bar:  # one bar, not one a quality
        for k in range(card.num_qualities):
            pick = np.flatnonzero(q == k)
            if len(pick):
                out[pick] = decoded_faces(codec, tables, x[pick], k)
                bar.update(len(pick))
    return out


def write(model_dir, data: str | None = None) -> dict:
    """Quantize model_dir's classifier, save INT8_FILE beside it, record it in model.json; returns the record."""
    import torch

    from ferwire.card import ModelCard

    from .bundle import load_classifier

    card = ModelCard.load(model_dir)
    if card.kind != "image":
        raise ValueError(f"{model_dir}: only an image model has a classifier to quantize (this is {card.kind!r})")
    faces = calibration_faces(model_dir, data=data)
    module = quantize(load_classifier(card.path), faces)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(module, str(card.path / INT8_FILE))
    record = {"file": INT8_FILE, "classifier_sha256": _sha256(card.path / "classifier.pt"), "engine": ENGINE,
              "calibration": f"{len(faces)} FER2013 train faces, evenly spaced, decoded at random qualities, and their mirror images",
              "torch": torch.__version__.split("+")[0]}
    meta_path = card.path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["int8"] = record
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return record


def load(card, log=None):
    """The int8 classifier of an image model directory, as an object with .probabilities(x) like the float one;
    None when it has none, when torch lacks the engine, or when classifier.pt changed since it was made (log says why)."""
    import torch

    meta = json.loads((card.path / "model.json").read_text()).get("int8")
    if not meta:
        return None
    path = card.path / meta["file"]
    why = None
    if ENGINE not in torch.backends.quantized.supported_engines:
        why = f"this torch has no {ENGINE!r} quantized engine"
    elif not path.is_file():
        why = f"{path} is missing"
    elif _sha256(card.path / "classifier.pt") != meta.get("classifier_sha256"):
        why = f"{path} was made from another classifier.pt (run python -m fermodels.quantize {card.path})"
    if why:
        if log:
            log(f"{card.model_id}: serving the float classifier: {why}")
        return None
    try:
        with warnings.catch_warnings():  # TorchScript's deprecation notice, once per load
            warnings.simplefilter("ignore", FutureWarning)
            torch.backends.quantized.engine = ENGINE
            return Int8Classifier(torch.jit.load(str(path), map_location="cpu"))
    except (RuntimeError, OSError) as e:  # a torch that can no longer run it
        if log:
            log(f"{card.model_id}: serving the float classifier: {path} does not load ({str(e).splitlines()[0][:200]})")
        return None


class Int8Classifier:
    """The traced int8 module behind the float classifier's interface (probabilities of [N,1,H,W] faces in [0, 1])."""

    precision = "int8"

    def __init__(self, module):
        import torch

        self.module = module
        with torch.no_grad():  # TorchScript profiles a graph's first runs: have them here, not on the first request
            for n in (1, 1, 8, 8):
                module(torch.zeros(n, 1, 48, 48))

    def probabilities(self, x):
        return self.module(x.contiguous())


WARMUP_CALLS = 5


def ms_per_face(f, x, repeats: int, bar=None) -> float:
    """Median milliseconds per face of f(x) over `repeats` timed calls, after WARMUP_CALLS untimed ones (each call
    ticks `bar`, a tqdm bar, where given)."""
    import time

    import numpy as np

    for _ in range(WARMUP_CALLS):
        f(x)
        if bar is not None:
            bar.update()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t0)
        if bar is not None:
            bar.update()
    return 1000 * float(np.median(times)) / len(x)


def check(model_dir, data: str | None = None, batch: int = 32, repeats: int = 30, limit: int | None = None) -> dict:
    """ferserver's reduced precisions on a CPU against float, on FER2013 val (PublicTest), with milliseconds per face at
    `batch` and for one face alone (median of `repeats` timed calls after warm-up, this process's torch threads):
    - the int8 classifier against the float one (as ferserver runs it: folded, channels-last), uncompressed and decoded
      at the default quality: the same label and accuracy;
    - bfloat16 synthesis (--synthesis-precision) against float32, both read by the int8 classifier at the default quality;
      each timed as ferserver runs it on a CPU (fermodels.bundle.for_inference)."""
    import numpy as np
    import torch

    from ferwire.card import ModelCard
    from ferwire.entropy import EntropyTables

    from .bundle import bf16_native, for_inference, load_classifier, load_torch_models
    from .data import load_split, to_tensor

    card = ModelCard.load(model_dir)
    int8 = load(card, lambda m: print(m, file=sys.stderr))
    if int8 is None:
        raise ValueError(f"{card.path} has no usable int8 classifier")
    fp32 = for_inference(load_classifier(card.path))
    x, y = load_split("val", data, limit=limit)
    x = to_tensor(x)
    codec, _ = load_torch_models(card)
    fast = for_inference(codec, bf16=True)  # as ferserver holds it for bf16 synthesis: bfloat16 weights, channels-last
    served32 = for_inference(codec, channels_last=False)  # and for float32 synthesis on a CPU
    tables, q = EntropyTables.load(card.file("tables.npz")), card.default_quality
    out = {"model": card.model_id, "faces": len(x), "threads": torch.get_num_threads(), "bf16_native": bf16_native()}
    # Two bars, for the two silent stretches of about half a minute each: the passes over val (every face 9 times: the
    # encoder, 3 syntheses, 5 classifier passes) and the timed calls (8 timings, each warm-up and repeats).
    passes = progress_bar(f"--check: passes over {len(x)} val faces", 9 * len(x))

    def run(f, v):
        parts = []
        for i in range(0, len(v), 256):
            parts.append(f(v[i : i + 256]))
            passes.update(len(parts[-1]))
        return torch.cat(parts)

    with passes, torch.no_grad():
        z = tables.symbols(run(codec.g_a, x).numpy(), q)
        views = {"uncompressed": x, f"q{q}": run(lambda s: codec.reconstruct(s, tables, q), z)}
        for name, v in views.items():
            p32, p8 = run(fp32.probabilities, v).numpy(), run(int8.probabilities, v).numpy()
            out[name] = {"same_label": float((p8.argmax(1) == p32.argmax(1)).mean()), "accuracy_fp32": float((p32.argmax(1) == y).mean()),
                         "accuracy_int8": float((p8.argmax(1) == y).mean()), "mean_abs_diff": float(np.abs(p8 - p32).mean())}
        r32, r16 = views[f"q{q}"], run(lambda s: fast.reconstruct(s, tables, q), z)
        p32, p16 = run(int8.probabilities, r32).numpy(), run(int8.probabilities, r16).numpy()
        out["synthesis"] = {"quality": q, "same_label": float((p16.argmax(1) == p32.argmax(1)).mean()), "accuracy_fp32": float((p32.argmax(1) == y).mean()),
                            "accuracy_bf16": float((p16.argmax(1) == y).mean()), "max_abs_pixel_diff": float((r16 - r32).abs().max())}
    with progress_bar("--check: timing", 8 * (WARMUP_CALLS + repeats), "call") as timing, torch.no_grad():
        b = x[:batch]
        out["ms_per_face_fp32"], out["ms_per_face_int8"] = ms_per_face(fp32.probabilities, b, repeats, timing), ms_per_face(int8.probabilities, b, repeats, timing)
        out["ms_one_face_fp32"], out["ms_one_face_int8"] = ms_per_face(fp32.probabilities, x[:1], repeats, timing), ms_per_face(int8.probabilities, x[:1], repeats, timing)
        zb = z[:batch]
        out["synthesis"]["ms_per_face_fp32"] = ms_per_face(lambda s: served32.reconstruct(s, tables, q), zb, repeats, timing)
        out["synthesis"]["ms_per_face_bf16"] = ms_per_face(lambda s: fast.reconstruct(s, tables, q), zb, repeats, timing)
        out["synthesis"]["ms_one_face_fp32"] = ms_per_face(lambda s: served32.reconstruct(s, tables, q), z[:1], repeats, timing)
        out["synthesis"]["ms_one_face_bf16"] = ms_per_face(lambda s: fast.reconstruct(s, tables, q), z[:1], repeats, timing)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fermodels.quantize", description=__doc__.splitlines()[0])
    p.add_argument("model_dirs", nargs="*", default=["fercodec-v1"], help="image model directories or bundled names (default fercodec-v1)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--check", action="store_true", help="write nothing: compare the int8 classifier and bfloat16 synthesis with float on val, and time them")
    args = p.parse_args(argv)
    from ferwire.card import ModelCard

    for d in args.model_dirs:
        try:
            card = ModelCard.load(d)
            if args.check:
                r = check(card.path, args.data)
                print(f"{r['model']}: {r['faces']} val faces, {r['threads']} torch threads")
                for name in [k for k, v in r.items() if isinstance(v, dict) and k != "synthesis"]:
                    v = r[name]
                    print(f"  {name}: same label {100 * v['same_label']:.2f} %, accuracy float {100 * v['accuracy_fp32']:.2f} % / int8 "
                          f"{100 * v['accuracy_int8']:.2f} %, mean |dp| {v['mean_abs_diff']:.4f}")
                print(f"  ms per face at batch 32 (face and mirror, every member): float {r['ms_per_face_fp32']:.2f}, int8 {r['ms_per_face_int8']:.2f} "
                      f"({r['ms_per_face_fp32'] / r['ms_per_face_int8']:.1f}x); one face alone: float {r['ms_one_face_fp32']:.2f}, "
                      f"int8 {r['ms_one_face_int8']:.2f}")
                v = r["synthesis"]
                print(f"  synthesis at q{v['quality']}, read by the int8 classifier: bfloat16 against float32: same label {100 * v['same_label']:.2f} %, "
                      f"accuracy {100 * v['accuracy_fp32']:.2f} % / {100 * v['accuracy_bf16']:.2f} %, largest pixel difference {v['max_abs_pixel_diff']:.4f}")
                print(f"  synthesis ms per face at batch 32, as ferserver runs it: float32 {v['ms_per_face_fp32']:.3f}, bfloat16 {v['ms_per_face_bf16']:.3f} "
                      f"({v['ms_per_face_fp32'] / v['ms_per_face_bf16']:.1f}x; this CPU's bfloat16 is {'native' if r['bf16_native'] else 'emulated'}); "
                      f"one face alone: float32 {v['ms_one_face_fp32']:.3f}, bfloat16 {v['ms_one_face_bf16']:.3f}")
                continue
            record = write(card.path, args.data)
        except (OSError, ValueError, RuntimeError) as e:  # one line, exit 2, as fertrain, ferexport and fereval answer a user's error
            print(f"fermodels.quantize: {e}" if str(d) in str(e) else f"fermodels.quantize: {d}: {e}", file=sys.stderr)  # the path once
            return 2
        except KeyboardInterrupt:  # a traceback, and death by the signal, before (the model directory is written last, whole)
            print("fermodels.quantize: interrupted", file=sys.stderr)
            return 130
        print(f"wrote {card.path / record['file']} ({(card.path / record['file']).stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
