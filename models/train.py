"""fertrain: train the expression classifier and the face codec on FER2013.

One loss for the codec, L = lambda_R * R + lambda_D[q] * 255^2 * MSE + lambda_C * CE,
with R in bits per pixel. lambda_C = 0 is the rate-distortion baseline; with a
classifier given, --strategy frozen fine-tunes the codec against it and
--strategy joint optimises both (arXiv 2509.17262). Two additions were tried
and dropped because val showed no gain (docs/sweep/README.md): a distillation
term KL(p(x) || p(x_hat)) and a saliency-weighted MSE.

Every epoch writes <out>/last.pt (resumable: model, optimiser, schedule, epoch,
history, torch's random state) and <out>/best.pt (best on val = PublicTest). Data order is a pure
function of --seed and the epoch, so a resumed run sees the same batches, and with the random
state dropout draws from restored it ends bit for bit where an uninterrupted run would (same
--threads); the weights' initialisation is a function of --seed too. Resuming with other
arguments is refused.

`fertrain classifier --decoded MODEL_DIR --init MODEL_DIR` fine-tunes a
classifier on what the server will feed it: each training face, uncompressed or
decoded at one of the model's qualities (chosen at random per face), through the
shipped quantizer (region scale, rounding) rather than training's additive noise.
Selection is on the mean val accuracy over uncompressed and every quality.
With --teacher MODEL, each face's target mixes its (smoothed) label with that
classifier's 10-view answer on the uncompressed face (docs/distill).

`fertrain codec --init MODEL_DIR --lambda-d <its ladder, longer> --extend-only`
adds rate points to a shipped codec and trains only theirs (gains, entropy
models): every quality it had keeps its bitstream and reconstruction (docs/ceiling).

`fertrain expression --classifier MODEL_DIR --beta B` trains the expression
layer (fermodels.expression): a feature codec on the classifier's frozen front,
distilled from its mirror-pair answer on uncompressed faces (docs/expression),
or with --teacher MODEL from another classifier's (a shipped ensemble's) answer on the same views.
Where MODEL_DIR ships an ensemble, --member K splits its network K (default 0, the first).
With --cache DIR the front's features (most of ten minutes to compute) are
kept on disk and reused by the next run with the same classifier, split, views and seed;
runs reading the same cache at once share its pages (memory-mapped).

`fertrain synthesis --from MODEL_DIR --widths 64 32` distils a thinner synthesis
transform from an image model's: on every training face (mirrored at random) at a
quality picked at random, through the shipped quantizer, it learns the shipped
transform's reconstruction, plus --alpha times the face itself. The encoder,
tables and bitstreams stay as they are; `<out>/model` is MODEL_DIR with it in
codec.pt, for `fereval --update-card` (docs/synthesis).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import argtypes, source_revision
from .data import DATA_HELP


SHARE = argtypes.checked(float, lambda v: 0.0 <= v <= 1.0, "a share between 0 and 1")  # --lambda-kd, --lambda-crowd
FRACTION = argtypes.checked(float, lambda v: 0.0 <= v < 1.0, "at least 0 and below 1")  # --warmup, --label-smoothing
WEIGHT = argtypes.checked(float, lambda v: 0.0 <= v < float("inf"), "a finite number >= 0")  # loss weights, weight decay
SEED = argtypes.checked(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1")
# What may change between a run and its resumption: where things are and how fast they run, not what is trained.
RESUMABLE_CHANGES = {"until_epoch", "threads", "device", "data", "cache", "fresh"}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after every option's help, except where the help already says its default (the word
    "default" in it) or there is nothing to show (None, a flag's False). Why: a run's length, batch and learning rate
    were in some help strings and not in others, so `fertrain classifier --help` did not say what a bare command trains."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or not action.option_strings:  # `is`: 0 == False
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


def _args(argv):
    p = argparse.ArgumentParser(prog="fertrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("classifier", "codec", "expression", "synthesis"):
        s = sub.add_parser(name, formatter_class=_DefaultsFormatter,
                           help=f"train the {name}" + (" layer (feature codec)" if name == "expression" else
                                                       " transform again, thinner, from an image model's" if name == "synthesis" else ""))
        s.add_argument("--data", default=None, help=DATA_HELP)
        s.add_argument("--out", required=True, help="run directory for checkpoints and log.jsonl")
        s.add_argument("--epochs", type=argtypes.count, default=30, help="length of the schedule")
        s.add_argument("--until-epoch", type=argtypes.count, default=None, help="stop after this epoch (resume later with the same command)")
        s.add_argument("--batch-size", type=argtypes.count, default=64, help="faces per step")
        s.add_argument("--lr", type=argtypes.rate, default=1e-3, help="peak learning rate of the one-cycle schedule")
        s.add_argument("--seed", type=SEED, default=0, help="initial weights, batch order and augmentation")
        s.add_argument("--threads", type=argtypes.threads, default=0, help="torch CPU threads (0: torch's own choice; runs on different thread "
                                                                              "counts are not bit-identical)")
        if name == "synthesis":  # the shipped quantizer (numpy) runs in every step: train_synthesis refuses cuda with that reason
            s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                           help="cpu or auto (default), both the CPU: every step runs the shipped quantizer, which is numpy, so cuda is refused")
        else:
            s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="cpu, cuda or auto (default): cuda where there is one")
        s.add_argument("--limit", type=argtypes.count, default=None, help="use only N evenly spaced train and val faces (smoke tests)")
        s.add_argument("--fresh", action="store_true", help="ignore an existing last.pt instead of resuming")
        s.add_argument("--warmup", type=FRACTION, default=0.05, help="fraction of all steps spent warming the learning rate up")
        s.add_argument("--weight-decay", type=WEIGHT, default=0.0, help="decoupled weight decay (AdamW) when > 0; 0 keeps plain Adam, as every shipped run used")
        s.add_argument("--member", type=int, default=0, metavar="K",
                       help="where a classifier given (--init, --classifier) ships an ensemble: which of its networks to take, from 0 (default: the first)")
    c = sub.choices["classifier"]
    c.add_argument("--width", type=argtypes.count, default=32, help="channels of the first conv block, doubled per block")
    c.add_argument("--label-smoothing", type=FRACTION, default=0.1, help="share of each target spread over the classes")
    c.add_argument("--init", default=None, help="start from this classifier: a fertrain checkpoint, classifier.pt or a model directory")
    c.add_argument("--decoded", default=None, metavar="MODEL_DIR",
                   help="train on uncompressed faces and this model's decoded faces at every quality, one picked at random per face")
    c.add_argument("--teacher", default=None, metavar="MODEL",
                   help="distil from this classifier (checkpoint, classifier.pt or model directory): its answer on the uncompressed face, "
                        "averaged over 10 views, is part of every view's target")
    c.add_argument("--lambda-kd", type=SHARE, default=0.5, help="with --teacher: the teacher's share of the target (the rest: the label, smoothed)")
    c.add_argument("--crowd-votes", default=None, metavar="FILE",
                   help="FER+ crowd votes for FER2013's faces (scripts/ferplus_votes.py): part of each training face's target is their distribution")
    c.add_argument("--lambda-crowd", type=SHARE, default=0.5, help="with --crowd-votes: the crowd's share of the target, on faces that have votes")
    c.add_argument("--robust", action="store_true",
                   help="also train (and select on val) on a realistic-crop copy of every face: offset, zoom, tilt, blur, lighting, "
                        "JPEG source, occlusion (fermodels.perturb.RANDOM_MIX), decoded like the originals with --decoded")
    k = sub.choices["codec"]
    k.add_argument("--n", type=argtypes.count, default=64, help="transform channels")
    k.add_argument("--m", type=argtypes.count, default=96, help="latent channels")
    k.add_argument("--lambda-r", type=WEIGHT, default=1.0, help="weight of the rate term (bpp)")
    k.add_argument("--lambda-d", type=argtypes.rate, nargs="+", default=None, help="distortion weight per quality, each > 0 (default: the codec's ladder)")
    k.add_argument("--lambda-c", type=WEIGHT, default=0.0, help="weight of the classifier's cross-entropy on decoded faces (default 0: none)")
    k.add_argument("--classifier", default=None, help="classifier for --lambda-c > 0: a fertrain checkpoint, classifier.pt or a model directory")
    k.add_argument("--strategy", choices=("frozen", "joint"), default="frozen", help="with --lambda-c: keep the classifier frozen (default) or train it too")
    k.add_argument("--init", default=None, help="start the codec from this checkpoint or model directory (fine-tuning); a longer --lambda-d extends its rate ladder")
    k.add_argument("--extend-only", action="store_true",
                   help="with --init and a longer --lambda-d: train only the added qualities' gains and entropy models; the transforms "
                        "and --init's qualities stay as they are, so their bitstreams and reconstructions do not change")
    e = sub.choices["expression"]
    e.add_argument("--classifier", required=True, help="classifier to split and distil from: a fertrain checkpoint, classifier.pt or a model directory")
    e.add_argument("--beta", type=WEIGHT, default=2e-5, help="weight of the rate term, per bit of a face (KL and CE are in nats; 2e-5: the shipped layer's 32 bytes)")
    e.add_argument("--channels", type=argtypes.count, default=64, help="latent channels")
    e.add_argument("--hidden", type=argtypes.count, default=256, help="channels of the edge bottleneck's hidden layer (layers trained before this flag: 96)")
    e.add_argument("--front-blocks", type=argtypes.checked(int, lambda v: 1 <= v <= 4, "1, 2, 3 or 4"), default=4, help="the classifier's conv blocks that run on the edge before the bottleneck (3: up to 128 x 6 x 6; 4: all, 256 x 3 x 3)")
    e.add_argument("--views", type=argtypes.count, default=4, help="versions of each training face whose features are cached: itself and V-1 random shifts")
    e.add_argument("--teacher", default=None, metavar="MODEL",
                   help="distil from this classifier's mirror-pair answer on each cached view (a model directory's ensemble: all its members "
                        "averaged, as its server answers); default: the split classifier itself, from the cached features")
    t = sub.choices["synthesis"]
    t.add_argument("--from", dest="source", required=True, metavar="MODEL_DIR", help="the image model whose synthesis transform to distil")
    t.add_argument("--widths", type=argtypes.count, nargs=2, default=(64, 32), metavar=("S1", "S2"),
                   help="the new transform's two hidden widths (the shipped codec's were 64 64)")
    t.add_argument("--alpha", type=WEIGHT, default=0.5, help="weight of the MSE to the face itself, beside the MSE to the source's reconstruction")
    for s in (c, e):
        s.add_argument("--extra-folder", default=None, metavar="DIR",
                       help="also train on these labelled photos (one subfolder per class, as fereval --folder reads them), each face found and "
                            "aligned as ferclient send does; photos with no face found are left out (docs/webfaces)")
    e.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the front's features here and reuse them when the classifier, faces, --views, --seed and --front-blocks match (4 views: 1 GB with 4 blocks, 2 GB with 3)")
    args = p.parse_args(argv)
    if getattr(args, "cache", None) and Path(args.cache).exists() and not Path(args.cache).is_dir():  # FileExistsError after the setup
        p.error(f"--cache {args.cache} is a file, not a folder")
    if args.until_epoch and args.until_epoch > args.epochs:
        p.error(f"--until-epoch {args.until_epoch} is beyond --epochs {args.epochs}")
    # a setting given without what it goes with was taken and ignored (an audit, 2026-12-08)
    for flag, dest, needs, have in (("--lambda-kd", "lambda_kd", "--teacher", "teacher"), ("--lambda-crowd", "lambda_crowd", "--crowd-votes", "crowd_votes"),
                                    ("--strategy joint", "strategy", "--lambda-c above 0", "lambda_c")):
        if getattr(args, dest, None) != sub.choices[args.what].get_default(dest) and not getattr(args, have, None):
            p.error(f"{flag} goes with {needs}")
    return args


def _load_state(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _log(out: Path, row: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _param_groups(model):
    """(the parameters to clip, Adam's groups) over `model`'s trainable parameters.

    Transforms and gains are clipped; the entropy models' density parameters are
    not (clipping the sum would let the large distortion gradient starve them)
    and their quantiles only follow the auxiliary loss; both take 3x the learning rate.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    main = [p for n, p in named if not n.startswith("entropy.")]
    density = [p for n, p in named if n.startswith("entropy.") and not n.endswith("quantiles")]
    aux = [p for n, p in named if n.endswith("quantiles")]
    return main, [{"params": main}, {"params": density, "lr_scale": 3.0}, {"params": aux, "lr_scale": 3.0}]


def _loop(args, model_parts, step_fn, eval_fn, params, score_key, higher_better, views=None, targets=None):
    """Shared epoch loop: resume, deterministic order, progress bar, checkpoints.

    `views(faces uint8 [N,H,W]) -> [N,V,H,W]` replaces the plain [N,1,H,W] tensors
    that step_fn and eval_fn see (the decoded fine-tune's V versions of each face).
    `targets(faces uint8, labels int64) -> tensor` replaces the training labels step_fn sees
    (distillation's soft targets); val keeps the labels.
    """
    import torch
    from tqdm import tqdm

    from .bundle import keep_freed_memory, pick_device
    from .data import load_split, to_tensor

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run's checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(pick_device(args.device))
    keep_freed_memory()
    xtr, ytr = load_split("train", args.data, args.limit)
    if getattr(args, "extra_folder", None):
        xtr, ytr = _with_folder(xtr, ytr, args.extra_folder)
    xva, yva = load_split("val", args.data, args.limit)
    views = views or to_tensor
    ytr = targets(xtr, torch.from_numpy(ytr)) if targets else torch.from_numpy(ytr)
    xtr = views(xtr)
    if dev.type == "cuda":  # on a GPU the training set lives on it: a CPU gather and copy per step would bound the step
        xtr, ytr = xtr.to(dev), ytr.to(dev)
    xva, yva = views(xva).to(dev), torch.from_numpy(yva).to(dev)
    for m in model_parts.values():
        m.to(dev)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay) if args.weight_decay > 0 else torch.optim.Adam(params, lr=args.lr)
    max_lr = [args.lr * g.get("lr_scale", 1.0) for g in opt.param_groups]
    steps_per_epoch = max(1, len(xtr) // args.batch_size)
    total = args.epochs * steps_per_epoch
    # OneCycleLR divides by zero when warm-up lasts exactly 1 step or all of them (tiny smoke runs): keep it between.
    warmup = min(max(args.warmup, 1.5 / total), (total - 0.5) / total)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=warmup)
    start, best, history = 0, None, []
    commit = source_revision()  # the code this run trained with, kept in its checkpoints
    last = out / "last.pt"
    if last.exists() and not args.fresh:
        ck = _load_state(last)
        _check_resumable(last, ck.get("args", {}), vars(args))
        if ck["epoch"] >= args.epochs:
            print(f"fertrain: {last} is a finished run ({ck['epoch']} epoch{'s' if ck['epoch'] != 1 else ''}; the best is {out / 'best.pt'}): nothing to do "
                  f"(--fresh starts over)", file=sys.stderr)
            return ck["history"]
        for k, m in model_parts.items():
            m.load_state_dict(ck["models"][k])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if "rng" in ck:  # dropout draws from torch's global generator: as it stood at the epoch's end, so a resumed run is exact
            torch.set_rng_state(ck["rng"])
        start, best, history = ck["epoch"], ck["best"], ck["history"]
        if args.until_epoch and start >= args.until_epoch:  # it printed "resuming" and did nothing
            print(f"fertrain: {last} has {start} of {args.epochs} epochs, --until-epoch {args.until_epoch}: nothing to do "
                  f"(leave out --until-epoch, or raise it, to go on)", file=sys.stderr)
            return history
        print(f"resuming {last} at epoch {start + 1}/{args.epochs}", file=sys.stderr)
    else:
        (out / "log.jsonl").unlink(missing_ok=True)  # a run started over (--fresh): its log starts over too, not after the old one's
    gen = torch.Generator().manual_seed(args.seed)
    stop, epoch_times = min(args.epochs, args.until_epoch or args.epochs), []  # this process's epochs, a resume's loading not among them
    for epoch in range(start, stop):
        started = time.monotonic()
        gen.manual_seed(args.seed * 1000 + epoch)
        for m in model_parts.values():
            m.train()
        order = torch.from_numpy(_order(len(xtr), args.seed, epoch))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", dynamic_ncols=True, mininterval=5)
        t0, sums = time.time(), {}
        for i in bar:
            idx = order[i * args.batch_size : (i + 1) * args.batch_size].to(xtr.device)
            stats = step_fn(xtr[idx].to(dev), ytr[idx].to(dev), i, gen, opt)
            sched.step()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v / (i + 1):.4g}" for k, v in sums.items()}, refresh=False)
        for m in model_parts.values():
            m.eval()
        with torch.no_grad():
            val = eval_fn(xva, yva)
        row = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 1), "lr": sched.get_last_lr()[0], **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()}, **{f"val_{k}": v for k, v in val.items()}}
        history.append(row)
        _log(out, row)
        print(json.dumps(row), file=sys.stderr)
        score = val[score_key]
        improved = best is None or (score > best if higher_better else score < best)
        if improved:
            best = score
        state = {"models": {k: m.state_dict() for k, m in model_parts.items()}, "args": vars(args), "commit": commit}
        if improved:
            torch.save({**state, "epoch": epoch + 1, "val": val}, out / "best.pt")
        torch.save({**state, "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch + 1, "best": best, "history": history,
                    "rng": torch.get_rng_state()}, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(last)
        epoch_times.append(time.monotonic() - started)
        print(_progress_line(epoch + 1, args.epochs, stop, epoch_times), file=sys.stderr)
    return history


def _duration(seconds: float) -> str:
    """'41 s', '18 min', '2 h 05 min': as precise as an estimate from a few epochs is."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _progress_line(epoch: int, epochs: int, stop: int, times: list[float], now: float | None = None) -> str:
    """The stderr line after each epoch: how long it took (checkpoints included) and, from the mean of this process's
    epoch times, how long the run has left and when it should end. Why: the bars show one epoch's progress and the JSON
    line one epoch's seconds, so the length of a 30-epoch run was left to arithmetic."""
    line = f"epoch {epoch}/{epochs} done in {_duration(times[-1])}"
    left = stop - epoch
    if left <= 0:
        took = f"{len(times)} epoch{'s' if len(times) > 1 else ''} in {_duration(sum(times))} here"
        return line + (f"; stopping at --until-epoch {stop} ({took}; rerun without it to go on)" if stop < epochs else f"; the run is complete ({took})")
    seconds = left * sum(times) / len(times)
    end = time.localtime((time.time() if now is None else now) + seconds)
    until = f", to --until-epoch {stop}" if stop < epochs else ""
    return line + f"; about {_duration(seconds)} left ({left} epoch{'s' if left > 1 else ''}{until}; ends about " \
                  f"{time.strftime('%a %H:%M' if seconds > 20 * 3600 else '%H:%M', end)})"


def _check_resumable(last: Path, before: dict, now: dict) -> None:
    """ValueError when this run's arguments differ from those last.pt was trained with (beyond RESUMABLE_CHANGES).

    Why: resuming restored the optimiser and schedule of the first arguments and trained on the data of the second
    (another --limit, --seed or --lr took effect in part), then failed in torch's scheduler, and the checkpoint claimed
    arguments it had never wholly used."""
    def norm(v):
        return list(v) if isinstance(v, tuple) else v

    changed = [k for k in sorted(now) if k in before and k not in RESUMABLE_CHANGES and norm(before[k]) != norm(now[k])]
    if changed:
        said = ", ".join(f"{'the subcommand' if k == 'what' else '--' + k.replace('_', '-')} {before[k]!r} there, {now[k]!r} now" for k in changed)
        raise ValueError(f"{last} was trained with other arguments ({said}): rerun with its arguments to resume, "
                         f"or start over with --fresh or another --out")


def _with_folder(faces, labels, folder):
    """FER2013's training faces and labels with a folder of labelled photos' faces appended, found and aligned as
    `ferclient send` finds them (fermodels.evaluation.folder.load_folder). Why: FER2013 alone is one collection's
    48x48 crops; faces from photos, cut by the product's own detector, are what the server will be sent."""
    from .evaluation.folder import load_folder

    t0 = time.time()
    extra, extra_labels, notes = load_folder(folder, detect=True, flag="--extra-folder")
    keep = np.setdiff1d(np.arange(len(extra)), np.asarray(notes["missed"], dtype=np.int64))
    print(f"--extra-folder {folder}: {len(keep)} faces added to {len(faces)} ({len(extra) - len(keep)} photos with no face found left out, "
          f"{len(notes['unreadable'])} unreadable; {time.time() - t0:.0f} s)", file=sys.stderr)
    return np.concatenate([faces, extra[keep]]), np.concatenate([labels, extra_labels[keep].astype(labels.dtype)])


def _one_classifier(src, member: int = 0):
    """The one network a recipe trains from: src's classifier, or member `member` of an ensemble (with a note saying so)."""
    from .bundle import load_classifier
    from .classifier import ClassifierEnsemble

    clf = load_classifier(src)
    if not isinstance(clf, ClassifierEnsemble):
        if member:
            raise ValueError(f"--member {member}: {src} holds one classifier, not an ensemble (its only member is 0)")
        return clf
    if not 0 <= member < len(clf.members):
        raise ValueError(f"--member {member}: {src} ships an ensemble of {len(clf.members)} classifiers (members 0 to {len(clf.members) - 1})")
    which = "its first member" if member == 0 else f"its member {member}"
    print(f"fertrain: {src} ships an ensemble of {len(clf.members)} classifiers; using {which}", file=sys.stderr)
    return clf.members[member]


def train_classifier(args):
    import torch
    import torch.nn.functional as F

    from .bundle import pick_device
    from .classifier import FERClassifier
    from .data import augment

    dev = pick_device(args.device)  # where the decoded views and the teacher's answers are computed too
    if args.init:
        model = _one_classifier(args.init, args.member).train()
        args.width = model.width
    else:
        model = FERClassifier(width=args.width)
    views = _decoded_views(args.decoded, dev) if args.decoded else None
    if args.robust:
        views = _robust_views(views, args.seed)
    crowd = _crowd_votes(args.crowd_votes, args.lambda_crowd, args.data, args.limit) if args.crowd_votes else None
    targets = _soft_targets(args.teacher, args.lambda_kd, args.label_smoothing, dev, crowd)

    def step(x, y, i, gen, opt):
        if x.shape[1] > 1:  # one version of each face: uncompressed or one quality
            pick = torch.randint(0, x.shape[1], (len(x),), generator=gen).to(x.device)
            x = x[torch.arange(len(x), device=x.device), pick].unsqueeze(1)
        logits = model(augment(x, gen))
        loss = F.cross_entropy(logits, y)  # y: soft targets, label smoothing included
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y.argmax(1)).float().mean().item()}  # against the target's top class

    def accuracy(x, y):
        pred = torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
        return (pred == y).float().mean().item()

    def evaluate(x, y):
        if x.shape[1] == 1:
            return {"acc": accuracy(x, y)}
        half = x.shape[1] // 2 if args.robust else x.shape[1]  # --robust: the second half are the perturbed copies
        res = {}
        for prefix, start in [("", 0)] + ([("perturbed_", half)] if args.robust else []):
            res[f"{prefix}acc"] = accuracy(x[:, start : start + 1], y)
            res.update({f"{prefix}q{v - 1}_acc": accuracy(x[:, start + v : start + v + 1], y) for v in range(1, half)})
        res["mean_acc"] = sum(res.values()) / len(res)
        return res

    return _loop(args, {"classifier": model}, step, evaluate, list(model.parameters()), "mean_acc" if views else "acc", True, views, targets)


def _robust_views(views, seed: int):
    """Wrap a views function (None: the face alone) so each face also brings its realistic-crop copy's views: [N, 2V, H, W]."""
    import torch

    from .data import to_tensor
    from .perturb import random_perturbations

    inner = views or to_tensor

    def both(faces):
        return torch.cat([inner(faces), inner(random_perturbations(faces, seed))], 1)

    return both


def _crowd_votes(path, share, data, limit):
    """(share, votes [N,7]) for FER2013's training faces, row for row with the archive's."""
    from .data import load_crowd_votes

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"--lambda-crowd is the crowd's share of the target, between 0 and 1 (got {share})")
    return share, load_crowd_votes(path, "train", limit, data)


def _soft_targets(teacher_src, share, smoothing, device="cpu", crowd=None):
    """(faces, labels) -> training targets [N,7]: the label smoothed by `smoothing` (what
    cross-entropy's label_smoothing does), and with a teacher, (1 - share) of that plus
    share * the teacher's 10-view answer on the uncompressed face. With crowd = (c, votes), each FER2013 face
    with votes then takes (1 - c) of that plus c * its crowd's vote distribution (faces appended by
    --extra-folder, and faces FER+ dropped, keep the rest).

    Cross-entropy against this mix equals the weighted sum of the label's and the
    teacher's cross-entropies. FER2013's labels are noisy (human accuracy about
    65 %), and the teacher's answer says how ambiguous each face is.
    """
    import torch
    import torch.nn.functional as F

    from . import CLASS_NAMES
    from .bundle import load_classifier
    from .data import to_tensor

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"--lambda-kd is the teacher's share of the target, between 0 and 1 (got {share})")
    teacher = load_classifier(teacher_src, device) if teacher_src else None
    classes = len(CLASS_NAMES)

    def targets(faces, labels):
        smoothed = F.one_hot(labels, classes).float() * (1 - smoothing) + smoothing / classes
        if teacher is not None:
            answer = _teacher_answers(teacher, to_tensor(faces)).to(labels.device)
            smoothed = (1 - share) * smoothed + share * answer
        if crowd is not None:
            c, votes = crowd
            v = torch.zeros_like(smoothed)
            v[: len(votes)] = torch.from_numpy(votes).to(v.device)
            total = v.sum(1, keepdim=True)
            has = total > 0
            print(f"crowd votes: {int(has.sum())} of {len(faces)} training faces, share {c}", file=sys.stderr)
            smoothed = torch.where(has, (1 - c) * smoothed + c * v / total.clamp_min(1), smoothed)
        return smoothed

    return targets


def _teacher_answers(teacher, x, batch: int = 512):
    """teacher_probabilities (10 views) of faces x [N,1,H,W], a batch at a time under a tqdm bar as --decoded's decoding has.
    Why: on every training face it takes minutes, and it showed nothing between its first line and its last."""
    import torch
    from tqdm import tqdm

    from .classifier import teacher_probabilities

    return torch.cat([teacher_probabilities(teacher, x[i : i + batch], batch_size=batch)
                      for i in tqdm(range(0, len(x), batch), desc=f"teacher: 10 views of {len(x)} faces", unit="batch", file=sys.stderr, mininterval=5)])


def _decoded_views(model_dir, device="cpu"):
    """faces uint8 [N,H,W] -> [N, 1 + Q, H, W]: uncompressed, then decoded at each quality of `model_dir`."""
    import torch

    from ferwire.card import ModelCard
    from ferwire.entropy import EntropyTables

    from .bundle import decoded_faces, load_torch_models
    from .data import to_tensor

    card = ModelCard.load(model_dir)
    codec, _ = load_torch_models(card, device)
    tables = EntropyTables.load(card.file("tables.npz"))

    def views(faces):
        x = to_tensor(faces)
        return torch.stack([x[:, 0], *(decoded_faces(codec, tables, x, q, desc=f"decoding {len(x)} faces at q{q}")[:, 0] for q in range(card.num_qualities))], 1)

    return views


def train_codec(args):
    import torch
    import torch.nn.functional as F

    from .bundle import load_training_models
    from .codec import DEFAULT_LAMBDAS, FaceCodec, rate_bpp
    from .data import augment

    lambdas = tuple(args.lambda_d) if args.lambda_d else DEFAULT_LAMBDAS
    if args.init:  # a checkpoint or a model directory; --lambda-d may extend its ladder upward
        src, _ = load_training_models(args.init)
        args.n, args.m, args.synthesis = src.n, src.m, list(src.synthesis_widths)  # what ferexport rebuilds the codec from
        codec = FaceCodec(src.n, src.m, lambdas if args.lambda_d else tuple(src.lambdas.tolist()), synthesis=src.synthesis_widths)
        codec.start_from(src)
    else:
        codec = FaceCodec(n=args.n, m=args.m, lambdas=lambdas)
    parts = {"codec": codec}
    trained = list(range(codec.num_qualities))
    if args.extend_only:
        first = src.num_qualities if args.init else codec.num_qualities
        if first >= codec.num_qualities:
            raise ValueError("--extend-only needs --init and a --lambda-d ladder longer than its")
        codec.requires_grad_(False)
        keep = (torch.arange(codec.num_qualities) >= first).float()[:, None]
        for gains in (codec.log_gain, codec.log_inv_gain):
            gains.requires_grad_(True).register_hook(lambda g: g * keep)  # rows of --init's qualities never move (Adam's moments stay 0)
        for q in range(first, codec.num_qualities):
            codec.entropy[q].requires_grad_(True)
        trained = trained[first:]
    clf = None
    if args.classifier and args.lambda_c == 0:  # the classifier was loaded for nothing: a rate-distortion codec came out
        raise ValueError(f"--classifier is read only with --lambda-c > 0 (the weight of its cross-entropy); with --lambda-c 0 "
                         f"this trains a plain rate-distortion codec (--strategy {args.strategy} needs a --lambda-c)")
    if args.lambda_c > 0:
        if not args.classifier:
            raise ValueError("--lambda-c > 0 needs --classifier CHECKPOINT")
        clf = _one_classifier(args.classifier, args.member).train()
        args.width = clf.width  # a joint checkpoint carries the classifier; ferexport rebuilds it from this
        if args.strategy == "joint":
            parts["classifier"] = clf
        else:
            clf.eval().requires_grad_(False)
    main, params = _param_groups(codec)
    if args.strategy == "joint" and clf is not None:
        params.append({"params": list(clf.parameters())})
    q_count = codec.num_qualities

    def step(x, y, i, gen, opt):
        q = trained[i % len(trained)]  # every trained quality gets every len(trained)-th batch
        x = augment(x, gen)
        out = codec(x, q)
        bpp = rate_bpp(out["likelihoods"], x.shape[0] * x.shape[-2] * x.shape[-1])
        mse = F.mse_loss(out["x_hat"], x)
        loss = args.lambda_r * bpp + codec.lambdas[q] * 255**2 * mse
        stats = {"bpp": bpp.item(), "psnr": (-10 * torch.log10(mse)).item()}
        if clf is not None:
            if args.strategy == "frozen":
                clf.eval()
            ce = F.cross_entropy(clf(out["x_hat"]), y)
            if args.strategy == "joint":
                # Half the classifier's signal from uncompressed faces, so the joint
                # classifier stays accurate on them (the paper's claim, measured by fereval).
                ce = 0.5 * (ce + F.cross_entropy(clf(x), y))
            loss = loss + args.lambda_c * ce
            stats["ce"] = ce.item()
        opt.zero_grad(set_to_none=True)
        (loss + codec.aux_loss()).backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        opt.step()
        stats["loss"] = loss.item()
        return stats

    def evaluate(x, y):
        res, total = {}, 0.0
        if clf is not None:
            res["clean_acc"] = sum((clf(x[i : i + 512]).argmax(1) == y[i : i + 512]).sum().item() for i in range(0, len(x), 512)) / len(x)
        for q in range(q_count):
            bpps, mses, correct, ce = [], [], 0, 0.0
            for i in range(0, len(x), 512):
                xb = x[i : i + 512]
                out = codec(xb, q)
                bpps.append(rate_bpp(out["likelihoods"], xb.numel()).item() * len(xb))
                mses.append(F.mse_loss(out["x_hat"], xb, reduction="none").mean((1, 2, 3)))
                if clf is not None:
                    logits = clf(out["x_hat"])
                    correct += (logits.argmax(1) == y[i : i + 512]).sum().item()
                    ce += F.cross_entropy(logits, y[i : i + 512], reduction="sum").item()
            bpp, mse = sum(bpps) / len(x), torch.cat(mses)
            res[f"q{q}_bpp"] = bpp
            res[f"q{q}_psnr"] = (-10 * torch.log10(mse.clamp_min(1e-10))).mean().item()
            if clf is not None:
                res[f"q{q}_acc"] = correct / len(x)
            total += args.lambda_r * bpp + codec.lambdas[q].item() * 255**2 * mse.mean().item() + args.lambda_c * ce / len(x)
        res["loss"] = total / q_count
        return res

    return _loop(args, parts, step, evaluate, params, "loss", False)


KD_SHARE = 0.8  # the expression layer's loss: KD_SHARE * KL(teacher || student) + (1 - KD_SHARE) * CE


def _shifted_views(x, count: int, seed: int, batch: int = 512):
    """Yield (start, view, faces [n,1,H,W]) over faces x [N,1,H,W] in batches: view 0 is the face itself, the others
    shifted up to 3 px (reflect padding), a pure function of seed. The expression layer's cached features and
    its teacher's answers are computed on the same views."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    h, w = x.shape[-2:]
    gen = torch.Generator().manual_seed(seed)
    shifts = torch.randint(-3, 4, (count, len(x), 2), generator=gen)
    shifts[0] = 0
    for i in tqdm(range(0, len(x), batch), desc=f"{count} views", unit="batch", file=sys.stderr, mininterval=5):
        xb = F.pad(x[i : i + batch], (3, 3, 3, 3), mode="reflect")
        for v in range(count):
            d = shifts[v, i : i + batch] + 3
            rows = torch.arange(h)[None, :] + d[:, 1:2]
            cols = torch.arange(w)[None, :] + d[:, 0:1]
            yield i, v, xb[torch.arange(len(d))[:, None, None], 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def _disk_cached(cache: str | None, prefix: str, what: str, key: list, module, compute):
    """compute(), or its result kept in `cache` under a hash of `key` (arrays and strings) and `module`'s weights."""
    import hashlib

    import torch

    if cache is None:
        return compute()
    h = hashlib.sha1()
    for part in key:
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else str(part).encode())
    for t in module.state_dict().values():
        h.update(t.detach().cpu().numpy().tobytes())
    path = Path(cache) / f"{prefix}-{h.hexdigest()[:16]}.pt"
    if path.exists():
        print(f"{what}: reusing {path}", file=sys.stderr)
        return torch.load(path, mmap=True)  # pages shared by runs reading the same cache at once
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return out


def _front_views(encoder, count: int, seed: int, cache: str | None = None):
    """faces uint8 [N,H,W] -> the expression encoder's frozen front features [N, count, 2, C, h, w] (float16):
    per view (_shifted_views) the face's and its mirror image's.

    With `cache`, the features are kept in that directory under a hash of the front's weights, the faces,
    count and seed, and reused: computing them takes most of ten minutes on one CPU thread."""
    import torch

    from .data import to_tensor

    def compute(faces):
        out = None
        with torch.inference_mode():
            for i, v, xv in _shifted_views(to_tensor(faces), count, seed):
                f, f_mirror = encoder.features(xv)
                if out is None:
                    out = torch.empty((len(faces), count, 2, *f.shape[1:]), dtype=torch.float16)
                out[i : i + len(xv), v, 0], out[i : i + len(xv), v, 1] = f.half(), f_mirror.half()
        return out

    return lambda faces: _disk_cached(cache, "front", "front features", [f"{count} {seed} {faces.shape}", faces], encoder.front, lambda: compute(faces))


def _teacher_views(teacher, count: int, seed: int, cache: str | None = None):
    """faces uint8 [N,H,W] -> teacher's mirror-pair probabilities [N, count, 7] on the views _front_views caches
    (an ensemble: its members' answers averaged, as a server running it answers). Kept in `cache` like the features."""
    import torch

    from . import CLASS_NAMES
    from .data import to_tensor

    def compute(faces):
        out = torch.empty((len(faces), count, len(CLASS_NAMES)))
        with torch.inference_mode():
            for i, v, xv in _shifted_views(to_tensor(faces), count, seed):
                out[i : i + len(xv), v] = teacher.probabilities(xv).float()
        return out

    return lambda faces: _disk_cached(cache, "teacher", "teacher answers", [f"{count} {seed} {faces.shape}", faces], teacher, lambda: compute(faces))


def train_expression(args):
    import torch
    import torch.nn.functional as F

    from .expression import ExpressionCodec

    clf = _one_classifier(args.classifier, args.member)
    args.width = clf.width
    codec = ExpressionCodec.from_classifier(clf, args.channels, args.beta, args.hidden, args.front_blocks)
    frozen = (codec.encoder.front, codec.decoder.tail, codec.decoder.head)  # the classifier's own layers
    for m in frozen:  # eval: BatchNorm uses (and keeps) the classifier's statistics, also while the front's features are cached
        m.requires_grad_(False).eval()
    teacher = torch.nn.Sequential(codec.decoder.tail, codec.decoder.head)  # the classifier's own layers, frozen: no copy needed
    main, params = _param_groups(codec)
    # --teacher: its answers on every cached view, computed once; training rows then carry (label, row) to look them up
    answers, val_answers = None, None
    if args.teacher:
        from .bundle import load_classifier
        from .data import load_split

        teacher_clf = load_classifier(args.teacher)
        answers_of = _teacher_views(teacher_clf, args.views, args.seed, args.cache)
        val_answers = _teacher_views(teacher_clf, 1, args.seed, args.cache)(load_split("val", args.data, args.limit)[0])[:, 0]  # val: the face itself

        def labels_and_rows(faces, labels):
            nonlocal answers
            answers = answers_of(faces)
            return torch.stack([labels, torch.arange(len(labels))], 1)
    else:
        labels_and_rows = None

    def objective(kd, ce, bits):
        return KD_SHARE * kd + (1 - KD_SHARE) * ce + args.beta * bits

    @torch.no_grad()
    def pair_answer(f, f_mirror):
        return 0.5 * (teacher(f).softmax(1) + teacher(f_mirror).softmax(1))

    def set_modes():
        for m in frozen:  # BatchNorm keeps the classifier's statistics, dropout stays off
            m.eval()

    def losses(f, f_mirror, y, target):
        y_lat = codec.encoder.from_features(f, f_mirror)
        _, likelihoods = codec.entropy(y_lat)
        log_p = codec.decoder(codec.round_latent(y_lat))
        bits = likelihoods.log2().sum().neg() / len(f)
        kd = F.kl_div(log_p, target, reduction="batchmean")
        ce = F.nll_loss(log_p, y)
        return objective(kd, ce, bits), {"kd": kd.item(), "ce": ce.item(), "bits": bits.item()}

    def step(x, y, i, gen, opt):
        set_modes()
        n = len(x)
        v = torch.randint(0, x.shape[1], (n,), generator=gen)
        m = torch.randint(0, 2, (n,), generator=gen)
        rows = torch.arange(n)
        f, f_mirror = x[rows, v, m].float(), x[rows, v, 1 - m].float()
        if answers is None:
            target = pair_answer(f, f_mirror)
        else:
            y, target = y[:, 0], answers[y[:, 1].cpu(), v].float().to(f.device)
        loss, stats = losses(f, f_mirror, y, target)
        opt.zero_grad(set_to_none=True)
        (loss + codec.entropy.loss()).backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        opt.step()
        return {"loss": loss.item(), **stats}

    def evaluate(x, y):
        """Val with the shipped quantizer: rounded latents, their estimated bytes (no container) and accuracy."""
        sums = {"loss": 0.0, "kd": 0.0, "ce": 0.0, "correct": 0.0, "teacher_correct": 0.0, "bytes": 0.0}
        for i in range(0, len(x), 512):
            f, f_mirror, yb = x[i : i + 512, 0, 0].float(), x[i : i + 512, 0, 1].float(), y[i : i + 512]
            target = pair_answer(f, f_mirror) if val_answers is None else val_answers[i : i + 512].float().to(f.device)
            y_lat = codec.encoder.from_features(f, f_mirror)
            y_hat, likelihoods = codec.entropy(y_lat, training=False)
            log_p = codec.decoder(y_hat)
            kd = F.kl_div(log_p, target, reduction="sum").item()
            ce = F.nll_loss(log_p, yb, reduction="sum").item()
            bits = likelihoods.log2().sum().neg().item()
            sums["loss"] += objective(kd, ce, bits)
            sums["kd"] += kd
            sums["ce"] += ce
            sums["bytes"] += bits / 8
            sums["correct"] += (log_p.argmax(1) == yb).sum().item()
            sums["teacher_correct"] += (target.argmax(1) == yb).sum().item()
        res = {k: v / len(x) for k, v in sums.items() if "correct" not in k}
        res["acc"], res["teacher_acc"] = sums["correct"] / len(x), sums["teacher_correct"] / len(x)
        return res

    return _loop(args, {"expression": codec}, step, evaluate, params, "loss", False, _front_views(codec.encoder, args.views, args.seed, args.cache), labels_and_rows)


def _thinned(g_s, m: int, s1: int, s2: int):
    """A synthesis transform of widths s1, s2 started from g_s (wider or as wide): each hidden layer keeps the channels
    the layer after it reads most strongly (largest squared weights), with their weights and GDN parameters."""
    import torch

    from .codec import synthesis_transform

    new = synthesis_transform(m, s1, s2)
    k1 = g_s[2].weight.detach().pow(2).sum((1, 2, 3)).argsort(descending=True)[:s1].sort().values  # ConvTranspose2d weight: [in, out, k, k]
    k2 = g_s[4].weight.detach().pow(2).sum((1, 2, 3)).argsort(descending=True)[:s2].sort().values
    with torch.no_grad():
        new[0].weight.copy_(g_s[0].weight[:, k1])
        new[0].bias.copy_(g_s[0].bias[k1])
        new[2].weight.copy_(g_s[2].weight[k1][:, k2])
        new[2].bias.copy_(g_s[2].bias[k2])
        new[4].weight.copy_(g_s[4].weight[k2])
        new[4].bias.copy_(g_s[4].bias)
        for gdn, keep in ((1, k1), (3, k2)):  # GDN's stored (reparametrized) beta and gamma are elementwise: select, then reparametrize
            new[gdn].beta.copy_(g_s[gdn].beta[keep])
            new[gdn].gamma.copy_(g_s[gdn].gamma[keep][:, keep])
    return new


def train_synthesis(args):
    import shutil

    import torch
    import torch.nn.functional as F

    from ferwire.card import ModelCard
    from ferwire.entropy import EntropyTables

    from .bundle import load_torch_models
    from .codec import FaceCodec
    from .export import save_codec

    if args.device == "cuda":  # it was replaced by cpu without a word
        raise ValueError("synthesis trains on the CPU: every step runs the shipped quantizer, which is numpy, between the source's "
                         "encoder and both synthesis transforms; drop --device cuda")
    args.device = "cpu"  # auto too: see above
    card = ModelCard.load(args.source)
    if card.kind == "expression":
        raise ValueError(f"{args.source} is an expression layer: it has no synthesis transform")
    source, _ = load_torch_models(card)
    tables = EntropyTables.load(card.file("tables.npz"))
    for p in source.parameters():
        p.requires_grad_(False)
    s1, s2 = args.widths
    student = _thinned(source.g_s, source.m, s1, s2)
    inv_gain = source.log_inv_gain.exp()  # [quality, channel]
    nq = source.num_qualities

    def synthesis_input(x, q):
        """Faces [N,1,H,W] and their qualities [N] -> what the server's synthesis reads for each (the shipped quantizer)."""
        y, qs = source.g_a(x).numpy(), q.numpy()
        z = np.empty_like(y)
        for k in np.unique(qs):  # one call per quality present, not per face
            z[qs == k] = tables.dequantize(tables.symbols(y[qs == k], int(k)), int(k))
        return torch.from_numpy(z) * inv_gain[q][:, :, None, None]

    def step(x, _y, _i, gen, opt):
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        q = torch.randint(0, nq, (len(x),), generator=gen)
        with torch.no_grad():
            yhat = synthesis_input(x, q)
            target = source.g_s(yhat)
        out = student(yhat)
        loss = F.mse_loss(out, target) + args.alpha * F.mse_loss(out, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    fixed = {}  # quality -> (val's synthesis input, the source's reconstruction, its PSNR): the source is frozen, so once a run

    def evaluate(xva, _yva):
        r, losses = {}, []
        for q in range(nq):
            if q not in fixed:
                yhat = synthesis_input(xva, torch.full((len(xva),), q))
                target = source.g_s(yhat).clamp(0, 1)
                fixed[q] = (yhat, target, _psnr(target, xva))
            yhat, target, r[f"source_psnr_q{q}"] = fixed[q]
            out = student(yhat).clamp(0, 1)
            losses.append(F.mse_loss(out, target).item() + args.alpha * F.mse_loss(out, xva).item())
            r[f"psnr_q{q}"], r[f"psnr_to_source_q{q}"] = _psnr(out, xva), _psnr(out, target)
        return {"loss": float(np.mean(losses)), **r}

    _loop(args, {"synthesis": student}, step, evaluate, student.parameters(), "loss", False)
    codec = FaceCodec(source.n, source.m, tuple(source.lambdas.tolist()), synthesis=(s1, s2))
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("g_s.")}
    state.update({f"g_s.{k}": v for k, v in _load_state(Path(args.out) / "best.pt")["models"]["synthesis"].items()})
    codec.load_state_dict(state)
    model = Path(args.out) / "model"
    shutil.copytree(card.path, model, dirs_exist_ok=True)
    save_codec(codec, model / "codec.pt")
    meta = json.loads((model / "model.json").read_text())
    meta["sources"]["synthesis"] = {"from": str(args.source), "widths": [s1, s2], "run": str(args.out)}
    # The bitstreams are the source's (bits per pixel, bytes and the uncompressed accuracy still hold); what the decoded
    # faces measured does not: it was kept, and read as this transform's (an audit, 2026-12-08).
    cleared = [k for k in ("psnr", "accuracy") if meta.get("metrics", {}).pop(k, None) is not None]
    (model / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {model}: {card.model_id} with a synthesis transform of widths {s1}, {s2} (fereval --model-dir {model} measures it)"
          + (f"; model.json's {' and '.join(cleared)} per quality cleared, and MODEL_CARD.md's figures are the source's until "
             f"fereval --model-dir {model} --update-card measures them" if cleared else ""), file=sys.stderr)


def _psnr(a, b) -> float:
    """Mean PSNR (dB) over faces in [0,1]."""
    import torch

    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def main(argv=None) -> int:
    args = _args(argv)
    import torch

    torch.manual_seed(args.seed)  # before any model is built: the weights' initialisation follows --seed too
    try:
        if args.what == "classifier":
            train_classifier(args)
        elif args.what == "expression":
            train_expression(args)
        elif args.what == "synthesis":
            train_synthesis(args)
        else:
            train_codec(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"fertrain: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = (Path(args.out) / "last.pt").is_file()
        print("fertrain: interrupted; " + ("rerun the same command to resume from last.pt" if resumable else
                                           "no epoch had finished, so there is nothing to resume: rerun to start again"), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
