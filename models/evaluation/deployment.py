"""Our points, through the deployment path: the edge client's ONNX encoder and range coder, the server's bitstream decoder.

The bytes are real bitstreams and the accuracy is what the server would report:
the image codec's faces are synthesised and classified, the expression layer's
latents are classified without pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import progress_bar
from .measure import DEPLOYED, EXPRESSION, OURS, rate_point


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


def codec_accuracy(card, faces, labels, q: int, device="cpu", batch_size=256, models=None) -> float:
    """The deployed classifier's accuracy on faces sent at quality q, without the image-quality measures of a rate point.
    `models` (codec, classifier, encoder) skips loading them again on every call."""
    from ferclient.encoder import FaceEncoder

    from ..bundle import load_torch_models
    from .measure import classifier_accuracy

    codec, deployed, encoder = models or (*load_torch_models(card, device), FaceEncoder(card.path, threads=torch.get_num_threads()))
    with progress_bar(f"{OURS} q{q}", len(faces)) as bar:
        _, recon = _reconstruct(encoder, codec, faces, q, batch_size, bar)
    return classifier_accuracy(deployed, recon, labels, batch_size)


def evaluate_codec(card, faces, labels, qualities=None, device="cpu", batch_size=256, extra_classifiers: dict | None = None) -> list[dict]:
    """One point per quality of the model in `card`, through the deployment path.

    "accuracy" is the deployment classifier's; "accuracies" adds every extra
    classifier's, keyed by name, with the deployment one as "deployed".
    """
    from ferclient.encoder import FaceEncoder

    from ..bundle import load_torch_models

    codec, deployed = load_torch_models(card, device)
    encoder = FaceEncoder(card.path, threads=torch.get_num_threads())
    classifiers = {DEPLOYED: deployed, **(extra_classifiers or {})}
    qualities = range(card.num_qualities) if qualities is None else qualities
    points = []
    with progress_bar(OURS, len(qualities) * len(faces)) as bar:
        for q in qualities:
            sizes, recon = _reconstruct(encoder, codec, faces, q, batch_size, bar)
            points.append({"quality": q, "lambda": card.lambdas[q], **rate_point(OURS, q, sizes, faces, labels, recon, classifiers, batch_size)})
    return points


def evaluate_expression(card, faces, labels, device="cpu", batch_size=256) -> list[dict]:
    """The expression layer's one point, through its deployment path: edge encoder -> bitstreams -> server decoder -> probabilities."""
    from ferclient.encoder import FaceEncoder
    from ferwire.bitstream import decode

    from ..bundle import load_expression

    expr = load_expression(card, device)
    encoder = FaceEncoder(card.path, threads=torch.get_num_threads())
    sizes, correct = [], 0
    with progress_bar(EXPRESSION, len(faces)) as bar, torch.inference_mode():
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
