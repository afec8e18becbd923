"""The expression layer: a feature codec that sends what the classifier needs, not pixels.

Why: the image codec's transforms cap accuracy at low rates. At q0's gains
even its unquantized latent loses 3.3 points on val (docs/ceiling), so no
entropy coding can bring a 100-byte face within a point of uncompressed.
Coding for machines instead: the edge runs the shipped classifier's conv
blocks on the face and on its mirror image (all four by default, down to
256 x 3 x 3; `front_blocks`), and a small bottleneck maps both to a C x h x w
latent. The mirror pair is what the server averages over for image
qualities; here it reaches the server inside the latent. The server
dequantizes the latent, rebuilds the face's and the mirror's feature maps, and
averages the classifier's remaining blocks and head over the two
(ExpressionDecoder). Splitting after the last block rather than the third cuts
what the layer loses to its teacher on val from 0.8-1.5 points to 0.1-0.4,
at about half the bytes (docs/expression).

Training (`fertrain expression`) keeps the front, the remaining blocks and the
head frozen (the front's features are computed once) and trains the
bottleneck, the decoder's first layers and the entropy model. The loss is

    0.8 * KL(teacher || student) + 0.2 * CE(labels) + beta * bits per face

where the teacher is the classifier's mirror-pair answer on the uncompressed
face. The decoder sees rounded latents (straight-through), and the rate comes
from CompressAI's noisy factorized density. The bitstream is the image
codec's (ferwire.bitstream), with its own tables and model tag.

What it gives up: the server gets no image back (a request for a
reconstruction is refused), and the edge runs about 10x the image encoder's
multiply-adds (docs/expression).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .classifier import FERClassifier
from .codec import EntropyBottleneck  # CompressAI's, imported there without its import-time warning

# The classifier's blocks that run on the edge, for a config that records none (every layer before --front-blocks):
# three, 48x48 -> 128 x 6 x 6. Four ends at 256 x 3 x 3, before the head.
FRONT_BLOCKS = 3


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.25  # FERClassifier's own input normalisation


class ExpressionEncoder(nn.Module):
    """Face [N,1,48,48] in [0,1] -> latent [N,C,h,w] (3x3 after four blocks): the edge half, exported to ONNX."""

    def __init__(self, front: nn.Sequential, channels: int, hidden: int, front_channels: int):
        super().__init__()
        self.front = front
        self.bottleneck = nn.Sequential(nn.Conv2d(2 * front_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen front on the face and on its mirror image (what training caches).

        Two calls rather than one on a doubled batch: ONNX export keeps the batch dynamic."""
        x = _normalise(x)
        return self.front(x), self.front(x.flip(-1))

    def from_features(self, f: torch.Tensor, f_mirror: torch.Tensor) -> torch.Tensor:
        # Flipping the mirror image's features back lines both maps up on the same face positions.
        return self.bottleneck(torch.cat([f, f_mirror.flip(-1)], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_features(*self.features(x))


class ExpressionDecoder(nn.Module):
    """Dequantized latent [N,C,h,w] -> log class probabilities [N,7]: the server half.

    It rebuilds two feature maps, one for the face and one for its mirror image,
    runs the classifier's remaining blocks (none by default) and head on both (one batch of 2N), and
    averages the two softmaxes: the mirror-pair answer the server gives for image
    qualities, built into the decoder. With the classifier's own weights in that
    tail (kept frozen in training), a latent that carried both maps exactly would
    reproduce the classifier's uncompressed answer.
    """

    def __init__(self, tail: nn.Module, head: nn.Module, channels: int, front_channels: int):
        super().__init__()
        self.front_channels = front_channels
        c2 = 2 * front_channels
        self.net = nn.Sequential(nn.Conv2d(channels, c2, 1), nn.ReLU(inplace=True), nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(inplace=True))
        self.tail, self.head = tail, head
        self.memory_format = torch.contiguous_format  # bundle.for_inference sets channels-last

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        g = self.net(y_hat.contiguous(memory_format=self.memory_format))
        face, mirror = g[:, : self.front_channels], g[:, self.front_channels :].flip(-1)
        p = torch.softmax(self.head(self.tail(torch.cat([face, mirror]))).float(), dim=1)
        return p.view(2, -1, p.shape[1]).mean(0).clamp_min(1e-8).log()  # (face + mirror) / 2; traced with any batch size


class ExpressionCodec(nn.Module):
    """Encoder, decoder and the training-time entropy model; one quality (one rate weight, `beta`)."""

    # hidden=96: what a config written before the width was configurable (fercodec-v1-expr-140f) means;
    # new layers record theirs (fertrain expression --hidden, default 256).
    def __init__(self, channels: int = 64, beta: float = 2e-5, width: int = 32, hidden: int = 96, front_blocks: int = FRONT_BLOCKS):
        super().__init__()
        self.channels, self.width, self.hidden, self.front_blocks = channels, width, hidden, front_blocks
        self.register_buffer("lambdas", torch.tensor([beta], dtype=torch.float32))
        clf = FERClassifier(width)
        if not 1 <= front_blocks <= len(clf.features):
            raise ValueError(f"front_blocks must be 1 to {len(clf.features)}, got {front_blocks}")
        front_channels = clf.features[front_blocks - 1][0].out_channels
        self.encoder = ExpressionEncoder(clf.features[:front_blocks], channels, hidden, front_channels)
        self.decoder = ExpressionDecoder(clf.features[front_blocks:], clf.head, channels, front_channels)
        self.entropy = EntropyBottleneck(channels, init_scale=2.0)

    @classmethod
    def from_classifier(cls, clf: FERClassifier, channels: int, beta: float, hidden: int, front_blocks: int) -> "ExpressionCodec":
        """Front, remaining blocks and head copied from a trained classifier; bottleneck and entropy model fresh."""
        codec = cls(channels, beta, clf.width, hidden, front_blocks)
        codec.encoder.front.load_state_dict(clf.features[:front_blocks].state_dict())
        codec.decoder.tail.load_state_dict(clf.features[front_blocks:].state_dict())
        codec.decoder.head.load_state_dict(clf.head.state_dict())
        return codec

    def round_latent(self, y: torch.Tensor) -> torch.Tensor:
        """Round around the learned medians, passing gradients straight through (what the decoder sees in training)."""
        med = self.entropy._get_medians()
        return y + (torch.round(y - med) + med - y).detach()

    @torch.no_grad()
    def quantizer(self) -> dict[str, np.ndarray]:
        """Gains (all 1: one rate point) and medians, as ferwire.entropy.EntropyTables.fit takes them."""
        med = self.entropy.quantiles[:, 0, 1].cpu().numpy().astype(np.float32)
        return {"gain": np.ones((1, self.channels), np.float32), "medians": med[None]}

    def probabilities(self, symbols: np.ndarray, tables) -> torch.Tensor:
        """Integer symbols [N,C,6,6] -> class probabilities [N,7]: the server's path after the range coder."""
        y_hat = torch.from_numpy(tables.dequantize(symbols, 0)).to(self.lambdas.device)
        return self.decoder(y_hat).exp()

    def config(self) -> dict:
        return {"channels": self.channels, "beta": float(self.lambdas[0]), "width": self.width, "hidden": self.hidden, "front_blocks": self.front_blocks}


class OnnxExpressionDecoder:
    """ExpressionCodec.probabilities run by ONNX Runtime: the same network (the decoder exported once, at load, from the
    loaded weights), the same answers within float rounding, for ferserver on a CPU.

    Why: a lone face's decoder is a dozen small operations, and PyTorch's per-operation cost and OpenMP wake-ups were
    most of its time; ONNX Runtime runs the same graph several times faster for one face and faster at every batch size
    measured (docs/expression, "Serving the expression layer"). One session per thread count that ferserver's Threads
    picks (a lone face after a pause runs on one thread), so that policy stays in one place: the count torch was just
    given is the session used. Exporting needs the `onnx` package (ferserver's install has it)."""

    def __init__(self, codec: ExpressionCodec, latent_shape: tuple[int, int, int], threads: int):
        import io
        import warnings

        import onnxruntime as ort

        buf = io.BytesIO()
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():  # the exporter's notices, at every start
            warnings.simplefilter("ignore")
            torch.onnx.export(codec.decoder.eval(), (torch.zeros(1, *latent_shape),), buf, input_names=["y"], output_names=["log_p"],
                              dynamic_axes={"y": {0: "n"}, "log_p": {0: "n"}}, dynamo=False)
        graph = buf.getvalue()
        self.sessions = {}
        for n in sorted({1, max(1, threads)}):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = n, 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sessions[n] = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])

    def probabilities(self, symbols: np.ndarray, tables) -> torch.Tensor:
        """Integer symbols [N,C,h,w] -> class probabilities [N,7], as ExpressionCodec.probabilities."""
        session = self.sessions.get(torch.get_num_threads()) or self.sessions[max(self.sessions)]
        log_p = session.run(None, {"y": tables.dequantize(symbols, 0).astype(np.float32, copy=False)})[0]
        return torch.from_numpy(np.exp(log_p))
