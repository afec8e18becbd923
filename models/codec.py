"""The face codec: a 1-channel factorized-prior autoencoder with a quality knob.

Why factorized and not hyperprior: a factorized prior codes every latent with a
fixed per-channel table, so the decoder recovers exactly the coded symbols
whatever its thread count, batch size or device (a hyperprior recomputes its
tables in floating point and can silently desynchronise; ../shared/NOTES.md).

Why one model for all qualities: shared analysis/synthesis transforms, and per
quality a learned gain vector on the latent (Cui et al., "Asymmetric gained
deep image compression", CVPR 2021) plus its own entropy model. One network to
train, ship and load. The shipped coding tables are counted, not learned
(ferwire.entropy); the learned densities give the training loss its rate.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

with warnings.catch_warnings():  # CompressAI 1.2.8 calls torch.jit.script on import, which torch 2.14 deprecates: noise in every tool's output
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck
    from compressai.layers import GDN

# Rate-distortion weights per quality, CompressAI's convention:
# loss = bpp + lambda * 255^2 * MSE. Low index = fewer bits.
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.05)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class SubPixelConv(nn.Module):
    """A _deconv layer as the convolution it equals: a 3x3 convolution to 4x the channels, then pixel_shuffle(2).

    Output pixel (2i + r, 2j + s) of the transposed convolution reads input pixels i-1..i+1 (j-1..j+1) through kernel
    taps 4, 2, 0 for an even row (column) and -, 3, 1 for an odd one (- a zero tap): one 3x3 kernel per output phase,
    so the same output within float rounding, for 36 multiply-adds per channel pair and pixel where the transposed
    one needs 25. Why: oneDNN runs the synthesis' last layer (64 -> 1 channel, 24x24 -> 48x48) far better as a
    convolution: bfloat16 synthesis 0.121 -> 0.097 ms per face at batch 32 (python -m fermodels.quantize --check,
    2-core AMD EPYC, docs/precision). The wider layers before it ran slower this way, and keep theirs."""

    TAPS = ((4, 2, 0), (None, 3, 1))  # [output phase][input offset -1, 0, +1] -> the transposed kernel's tap

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        if (deconv.kernel_size, deconv.stride, deconv.padding, deconv.output_padding) != ((5, 5), (2, 2), (2, 2), (1, 1)):
            raise ValueError(f"SubPixelConv takes a 5x5, stride 2, padding 2, output_padding 1 transposed convolution, not {deconv}")
        cin, cout = deconv.weight.shape[:2]
        w = deconv.weight.new_zeros(cout, 2, 2, cin, 3, 3)  # [out channel, row phase, column phase, in channel, 3, 3]
        for r, rows in enumerate(self.TAPS):
            for s, cols in enumerate(self.TAPS):
                for dy, ky in enumerate(rows):
                    for dx, kx in enumerate(cols):
                        if ky is not None and kx is not None:
                            w[:, r, s, :, dy, dx] = deconv.weight[:, :, ky, kx].t()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1)  # pixel_shuffle's channel order: c * 4 + r * 2 + s
        with torch.no_grad():
            self.conv.weight.copy_(w.reshape(4 * cout, cin, 3, 3))
            self.conv.bias.copy_(deconv.bias.repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.conv(x), 2)


class FixedGDN(nn.Module):
    """A trained GDN (or inverse GDN) layer with its parameters fixed: x * rsqrt (sqrt) of beta + gamma * x^2, as a 1x1
    convolution whose weights are the reparametrized gamma and beta, computed once. The same arithmetic as CompressAI's
    GDN, bit for bit. Why: GDN re-derives gamma and beta from their training parametrization on every call (eight small
    tensor ops a layer), which at the server's batch of one face cost about a fifth of the synthesis transform."""

    def __init__(self, gdn: GDN):
        super().__init__()
        c = gdn.beta.numel()
        self.inverse = gdn.inverse
        self.conv = nn.Conv2d(c, c, 1)
        with torch.no_grad():
            self.conv.weight.copy_(gdn.gamma_reparam(gdn.gamma).reshape(c, c, 1, 1))
            self.conv.bias.copy_(gdn.beta_reparam(gdn.beta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.conv(x**2)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


class Analysis(nn.Module):
    """x [N,1,H,W] in [0,1] -> y [N,M,H/8,W/8]. This half is exported to ONNX for the edge."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.net = nn.Sequential(_conv(1, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def synthesis_transform(m: int, s1: int, s2: int) -> nn.Sequential:
    """Latent [N,m,h,w] -> face [N,1,8h,8w]: three transposed convolutions, inverse GDN between them, hidden widths s1, s2."""
    return nn.Sequential(_deconv(m, s1), GDN(s1, inverse=True), _deconv(s1, s2), GDN(s2, inverse=True), _deconv(s2, 1))


class FaceCodec(nn.Module):
    stride = 8

    def __init__(self, n: int = 64, m: int = 96, lambdas: tuple[float, ...] = DEFAULT_LAMBDAS, synthesis: tuple[int, int] | None = None):
        """synthesis: the synthesis transform's two hidden widths (default n and n). A thinner one, distilled from a
        trained codec's (`fertrain synthesis`), decodes the same bitstreams: the analysis half and the tables stay."""
        super().__init__()
        self.n, self.m = n, m
        self.synthesis_widths = tuple(synthesis or (n, n))
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32))
        q = len(lambdas)
        self.g_a = Analysis(n, m)
        self.g_s = synthesis_transform(m, *self.synthesis_widths)
        # A sqrt(2) step per quality: doubling lambda halves the MSE-optimal step^2.
        init = torch.tensor([0.5 * math.log(2.0) * (i - (q - 1)) for i in range(q)])
        self.log_gain = nn.Parameter(init[:, None].repeat(1, m))
        self.log_inv_gain = nn.Parameter(-init[:, None].repeat(1, m))
        # init_scale 10 (CompressAI's default) starts the densities ~10x wider than
        # these latents; on a short CPU schedule narrowing them costs epochs.
        self.entropy = nn.ModuleList(EntropyBottleneck(m, init_scale=2.0) for _ in range(q))

    def config(self) -> dict:
        """What codec.pt records to rebuild this network (fermodels.bundle); synthesis only where it is not the default."""
        c = {"n": self.n, "m": self.m, "lambdas": tuple(float(v) for v in self.lambdas.tolist())}
        if self.synthesis_widths != (self.n, self.n):
            c["synthesis"] = list(self.synthesis_widths)
        return c

    @property
    def num_qualities(self) -> int:
        return len(self.entropy)

    def _gain(self, q: int) -> torch.Tensor:
        return self.log_gain[q].exp().view(1, -1, 1, 1)

    def _inv_gain(self, q: int) -> torch.Tensor:
        return self.log_inv_gain[q].exp().view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor, q: int) -> dict[str, torch.Tensor]:
        """Training/eval pass: noisy (train) or rounded (eval) latents and their likelihoods."""
        y = self.g_a(x) * self._gain(q)
        y_hat, likelihoods = self.entropy[q](y)
        return {"x_hat": self.synthesize(y_hat, q), "likelihoods": likelihoods, "y_hat": y_hat}

    def synthesize(self, y_hat: torch.Tensor, q: int) -> torch.Tensor:
        """Dequantised latent (gain domain) -> reconstruction in [0,1], in the synthesis transform's dtype: float32, or
        bfloat16 (channels-last) where fermodels.bundle.for_inference made it so."""
        y = y_hat * self._inv_gain(q)
        dtype = self.g_s[0].weight.dtype
        if dtype != y.dtype:
            y = y.to(dtype, memory_format=torch.channels_last)
        return self.g_s(y).clamp_(0.0, 1.0)

    def reconstruct(self, symbols: np.ndarray, tables, q: int) -> torch.Tensor:
        """Integer symbols [N,M,h,w] of quality q -> faces [N,1,H,W] float32: the server's decoder after the range coder
        (the tables' dequantization, ferwire.entropy, then synthesis), on this module's device.

        A bfloat16 synthesis (ferserver's --synthesis-precision bf16; docs/precision) is on a CPU with native bfloat16
        about 3x faster than float32; pixels move by under 0.01 and labels agree on about 98.5 % of faces."""
        y = torch.from_numpy(tables.dequantize(symbols, q)).to(self.lambdas.device)
        return self.synthesize(y, q).float().contiguous()

    @torch.no_grad()
    def start_from(self, src: "FaceCodec") -> None:
        """Copy a trained codec whose rate ladder begins this one's: transforms, and per quality its
        gains and density parameters. A quality beyond src's ladder (fine-tuning toward higher rates) starts
        from src's last one: its densities, and gains moved by the sqrt(2) step per doubling of lambda (as __init__)."""
        k = src.num_qualities
        if (src.n, src.m, src.synthesis_widths) != (self.n, self.m, self.synthesis_widths) or k > self.num_qualities:
            raise ValueError(f"cannot start a codec (n={self.n}, m={self.m}, synthesis {self.synthesis_widths}, {self.num_qualities} qualities) "
                             f"from one with n={src.n}, m={src.m}, synthesis {src.synthesis_widths}, {k} qualities")
        if not torch.allclose(self.lambdas[:k], src.lambdas):
            raise ValueError(f"lambda ladder {self.lambdas.tolist()} does not begin with the source's {src.lambdas.tolist()}")
        self.g_a.load_state_dict(src.g_a.state_dict())
        self.g_s.load_state_dict(src.g_s.state_dict())
        for q in range(self.num_qualities):
            s = min(q, k - 1)
            step = 0.5 * math.log2(float(self.lambdas[q] / src.lambdas[s])) * math.log(2.0)
            self.log_gain[q] = src.log_gain[s] + step
            self.log_inv_gain[q] = src.log_inv_gain[s] - step
            mine = dict(self.entropy[q].named_parameters())
            for name, value in src.entropy[s].named_parameters():
                mine[name].copy_(value)
            if q >= k:  # the medians live in the gain domain: move them with the gain
                mine["quantiles"].mul_(math.exp(step))

    def aux_loss(self) -> torch.Tensor:
        return sum(eb.loss() for eb in self.entropy)

    @torch.no_grad()
    def quantizer(self) -> dict[str, np.ndarray]:
        """Per quality: the gains and the learned medians that centre the symbols.

        With the analysis transform, this fixes every symbol a face is coded as;
        the tables that code them are counted on the training set at export time
        (ferwire.entropy). The learned densities here only estimate the rate in training.
        """
        return {
            "gain": self.log_gain.exp().cpu().numpy().astype(np.float32),
            "medians": torch.stack([eb.quantiles[:, 0, 1] for eb in self.entropy]).cpu().numpy().astype(np.float32),
        }


def rate_bpp(likelihoods: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Estimated bits per pixel of a batch from the entropy model's likelihoods."""
    return likelihoods.log2().sum().neg() / num_pixels
