"""A shipped model directory's torch side: loading its networks, and the helpers the tools share.

What a model directory holds, and its model.json, are ferwire.card's (ModelCard).
Torch and CompressAI are imported by the functions that need them, not at import.
"""

from __future__ import annotations

from pathlib import Path

from ferwire.card import ModelCard

ENTROPY_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


def pick_device(name: str) -> str:
    """cpu, cuda or auto (CUDA when torch sees one) -> a torch device name; ValueError for CUDA without a GPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name} asked for, but torch sees no CUDA device")
    return name


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 convolutions in hardware (AVX512-BF16 or AMX), as oneDNN reports it.

    Why ask: where it is emulated, bfloat16 runs slower than float32, so ferserver's `--synthesis-precision auto`
    uses it only where this is true."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Ask glibc to keep freed blocks up to `limit` bytes instead of returning them to the OS.

    Why: batches of activations are tens of MB, above glibc's mmap threshold, so
    every forward pass mmaps fresh pages and the kernel zeroes them again: a third
    of fereval's CPU time was system time. Same effect as MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_, at the price of a resident set that stays at its peak.
    False (and nothing changed) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))


def checkpoint(path: str | Path) -> dict:
    """torch.load of a shipped checkpoint (tensors, numbers, strings only); ValueError naming the file when it is not
    one: a copy cut short gave ferserver a 45-line traceback from torch's zip reader."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's messages run to paragraphs; their first line says enough
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise ValueError(f"{path} is not a torch checkpoint of plain tensors ({type(e).__name__}: {first})") from None
    if not isinstance(ck, dict):
        raise ValueError(f"{path} holds a {type(ck).__name__}, not a checkpoint")
    return ck


def _load_entropy_coded(card: ModelCard, name: str, cls):
    """cls(**config) from <model dir>/name, whose weights lack only the training entropy models' CDF buffers."""
    ck = checkpoint(card.file(name))
    try:
        model = cls(**ck["config"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{card.file(name)} has no {cls.__name__} config: {e}") from None
    missing, unexpected = model.load_state_dict(ck["state_dict"], strict=False)
    if unexpected or any(not k.endswith(ENTROPY_BUFFERS) for k in missing):
        raise ValueError(f"{card.file(name)} does not match {cls.__name__}: missing {missing}, unexpected {unexpected}")
    return model


def load_torch_models(card: ModelCard, device: str = "cpu"):
    """(codec, classifier) in eval mode on `device`. Imports torch and CompressAI."""
    from .classifier import from_checkpoint
    from .codec import FaceCodec

    codec = _load_entropy_coded(card, "codec.pt", FaceCodec)
    ck = checkpoint(card.file("classifier.pt"))
    try:
        clf = from_checkpoint(ck["config"], ck["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:  # RuntimeError: load_state_dict's mismatched shapes
        raise ValueError(f"{card.file('classifier.pt')} is not a classifier this version builds: {str(e).splitlines()[0][:160]}") from None
    return codec.to(device).eval(), clf.to(device).eval()


def for_inference(net, channels_last: bool = True, bf16: bool = False):
    """A copy of net (a classifier, an ensemble, an expression codec, the image codec for synthesis on a CPU) to serve
    with fixed weights: every BatchNorm folded into the convolution before it, the image codec's synthesis with its
    GDN parameters computed once (fermodels.codec.FixedGDN) and its last layer as the convolution it equals
    (fermodels.codec.SubPixelConv), and the convolutions run channels-last. The same answers within float rounding
    (tests/models/test_bundle.py). channels_last=False keeps the memory layout: what the image codec's float32
    synthesis wants on a CPU. bf16: the image codec's synthesis weights in bfloat16, once, rather than cast on every
    call as autocast would (ferserver's --synthesis-precision bf16; channels-last, the layout oneDNN's bfloat16
    kernels want).

    Why: on 2 CPU cores oneDNN runs these small convolutions faster channels-last, and folding drops a pass over
    each activation. scripts/bench.py at 32 in flight, before and after, back to back on one VM: the image codec's
    classify stage 8.3 -> 5.4 ms per face (the shipped ensemble, mirror pairs), the expression layer's 0.50 -> 0.45.
    Not for training: the folded network has no BatchNorm to update, and its state_dict is not a shipped checkpoint's.
    """
    import copy

    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from .codec import GDN, FaceCodec, FixedGDN, SubPixelConv  # CompressAI's GDN, imported there without its import-time warning

    out = copy.deepcopy(net).eval()
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    if isinstance(out, FaceCodec):
        out.g_s = nn.Sequential(*(FixedGDN(m) if isinstance(m, GDN) else m for m in out.g_s))
        out.g_s[-1] = SubPixelConv(out.g_s[-1])
        if bf16:
            out.g_s.to(torch.bfloat16)
    elif bf16:
        raise ValueError(f"bf16 is for the image codec's synthesis, not a {type(net).__name__}")
    if not channels_last:
        return out
    for m in out.modules():
        if hasattr(m, "memory_format"):  # the networks that turn their input channels-last themselves
            m.memory_format = torch.channels_last
    return out.to(memory_format=torch.channels_last)


def load_expression(card: ModelCard, device: str = "cpu"):
    """The ExpressionCodec of an expression-layer directory, in eval mode on `device`."""
    from .expression import ExpressionCodec

    return _load_entropy_coded(card, "expression.pt", ExpressionCodec).to(device).eval()


def load_training_models(source: str | Path):
    """(codec, classifier or None) from a fertrain checkpoint or a shipped model directory, on the CPU.

    What ferexport starts from: a joint (strategy B) checkpoint carries its
    classifier, a codec-only one does not.
    """
    import torch

    from .classifier import FERClassifier
    from .codec import FaceCodec

    if Path(source).is_dir():
        return load_torch_models(ModelCard.load(source))
    if not Path(source).is_file():
        raise FileNotFoundError(f"no checkpoint or model directory at {source}")
    try:
        ck = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as e:  # torch's messages run to paragraphs; their first line says enough
        raise ValueError(f"{source} is not a torch checkpoint ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]})") from None
    try:
        state, args = ck["models"]["codec"], ck["args"]
        codec = FaceCodec(n=args["n"], m=args["m"], lambdas=tuple(float(v) for v in state["lambdas"].tolist()), synthesis=args.get("synthesis"))
        codec.load_state_dict(state)
        clf = None
        if "classifier" in ck["models"]:
            clf = FERClassifier(width=args.get("width", 32))
            clf.load_state_dict(ck["models"]["classifier"])
    except (KeyError, TypeError, AttributeError, RuntimeError) as e:  # a classifier's checkpoint given as a codec: KeyError 'codec'
        raise ValueError(f"{source} holds no fertrain codec checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         "give a `fertrain codec` checkpoint or a model directory") from None
    return codec.eval(), clf


def decoded_faces(codec, tables, x, q: int, batch_size: int = 512, desc: str | None = None):
    """What the server reconstructs from faces x [N,1,H,W] in [0,1] at quality q (computed on the codec's device, returned on the CPU).

    The same quantizer as the bitstream (region scale, rounding, clipping); the
    range coder in between is lossless, so it is skipped. The client's encoder
    is ONNX, which can round a rare latent differently; `fereval` measures the
    real round trip.
    """
    import torch
    from tqdm import tqdm

    out = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", disable=desc is None, mininterval=5):
            y = codec.g_a(x[i : i + batch_size].to(codec.lambdas.device)).cpu().numpy()
            out.append(codec.reconstruct(tables.symbols(y, q), tables, q).cpu())
    return torch.cat(out)


def load_classifier(path, device="cpu"):
    """An FERClassifier (or ClassifierEnsemble) from a fertrain checkpoint ({"models": {"classifier"}, "args"}), a shipped
    classifier.pt ({"config", "state_dict"}) or a model directory (its classifier.pt)."""
    from .classifier import from_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / "classifier.pt"
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    ck = checkpoint(path)
    try:
        if "state_dict" in ck:
            config, state = ck["config"], ck["state_dict"]
        else:
            config, state = {"width": ck["args"].get("width", 32)}, ck["models"]["classifier"]
        clf = from_checkpoint(config, state)
    except (KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise ValueError(f"{path} holds no FERClassifier ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return clf.to(device).eval()
