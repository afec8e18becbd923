"""Measuring one rate point: what every curve fereval draws is made of.

A point is a dict: codec, setting, mean whole-file bytes per face, bpp, PSNR,
MS-SSIM, and the accuracy of every classifier on the decoded faces ("accuracy"
is the first classifier's, "accuracies" all of them).
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ms_ssim

from ..data import to_tensor


OURS = "fercodec"
EXPRESSION = "fercodec-expr"  # the expression layer's points: bytes and accuracy, no image
DEPLOYED = "deployed"
# The standard MS-SSIM (5 scales, 11x11 window) needs sides above 160 px; at
# 48x48 only 3 scales (48, 24, 12) with a 3x3 window fit.
MS_SSIM_WEIGHTS = (0.2, 0.3, 0.5)
MS_SSIM_WIN = 3
MS_SSIM_NOTE = f"MS-SSIM over 3 scales (48, 24, 12 px) with weights {', '.join(map(str, MS_SSIM_WEIGHTS))}, a {MS_SSIM_WIN}x{MS_SSIM_WIN} Gaussian window (sigma 1.5), data range 1.0"


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


def rate_point(codec: str, setting, sizes, faces, labels, recon, classifiers: dict, batch_size: int) -> dict:
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

