"""Expression classifier: a compact VGG-style CNN for 48x48 grayscale faces."""

from __future__ import annotations

import torch
from torch import nn

from . import CLASS_NAMES


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class FERClassifier(nn.Module):
    """Input [N,1,48,48] in [0,1]; output logits [N,7].

    Normalisation lives inside the model so that every caller (server, eval,
    joint training on decoded faces) feeds the same [0,1] pixels.
    """

    def __init__(self, width: int = 32, num_classes: int = len(CLASS_NAMES)):
        super().__init__()
        self.width = w = width  # what classifier.pt's config and fertrain's args record
        self.features = nn.Sequential(
            _block(1, w, 2),  # 24x24
            _block(w, 2 * w, 2),  # 12x12
            _block(2 * w, 4 * w, 2),  # 6x6
            _block(4 * w, 8 * w, 1),  # 3x3
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.4), nn.Linear(8 * w * 9, 256), nn.ReLU(inplace=True), nn.Dropout(0.4), nn.Linear(256, num_classes))
        self.memory_format = torch.contiguous_format  # bundle.for_inference sets channels-last

    def config(self) -> dict:
        """What classifier.pt records to rebuild it (from_checkpoint)."""
        return {"width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(((x - 0.5) / 0.25).contiguous(memory_format=self.memory_format)))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities averaged over the face and its mirror image.

        What the server and `fereval` report: expressions are left-right
        symmetric, and on PublicTest the mirror average adds about a point
        (README, Speed), for one more forward pass (one batch of 2N).
        """
        p = torch.softmax(self(torch.cat([x, x.flip(-1)])).float(), dim=1)
        return 0.5 * (p[: len(x)] + p[len(x) :])


class ClassifierEnsemble(nn.Module):
    """Several FERClassifiers answering together: their mirror-pair probabilities, averaged.

    Why: two classifiers trained apart err on different faces. On PublicTest the
    shipped pair (the distilled round-4 soup and the robust-crop `w32`) beats
    either alone by about a point, clean and at every quality, and holds up
    better on perturbed crops (docs/ensemble). It costs one more classifier pass
    on the server; the bitstream, tables and edge encoder do not change.
    """

    def __init__(self, members: list[FERClassifier]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two classifiers")
        self.members = nn.ModuleList(members)

    def config(self) -> dict:
        return {"members": [m.config() for m in self.members]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the members' mean softmax: usable wherever logits are (argmax, cross-entropy, saliency)."""
        return torch.stack([torch.softmax(m(x).float(), 1) for m in self.members]).mean(0).clamp_min(1e-12).log()

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.probabilities(x) for m in self.members]).mean(0)


def from_checkpoint(config: dict, state: dict) -> FERClassifier | ClassifierEnsemble:
    """The classifier a shipped classifier.pt describes: {"width": w} for one network, {"members": [{"width": w}, ...]} for an ensemble."""
    if "members" in config:
        clf: nn.Module = ClassifierEnsemble([FERClassifier(**c) for c in config["members"]])
    else:
        clf = FERClassifier(**config)
    clf.load_state_dict(state)
    return clf


def first_member(clf: FERClassifier | ClassifierEnsemble) -> FERClassifier:
    """clf itself, or an ensemble's first member: the network a recipe that needs one (fine-tuning, the expression
    layer's front) takes from a shipped model. fercodec-v1's first member is the classifier it shipped alone before."""
    return clf.members[0] if isinstance(clf, ClassifierEnsemble) else clf


def teacher_probabilities(clf: FERClassifier, x: torch.Tensor, shift: int = 2, batch_size: int = 512) -> torch.Tensor:
    """Softmax of `clf` averaged over 10 views of each face x [N,1,H,W] (computed on clf's device, returned on the CPU): itself and ±`shift` px
    horizontally and vertically (reflect padding), each with its mirror image.

    Why: a teacher for distillation (fertrain classifier --teacher). Ten views cost
    five times the deployed mirror pair, once per training face; on PublicTest they
    add 0.56 points over it for the classifier round 4 started from (docs/distill).
    """
    import torch.nn.functional as F

    offsets = [(0, 0), (-shift, 0), (shift, 0), (0, -shift), (0, shift)]
    h, w = x.shape[-2:]
    out = []
    dev = next(clf.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            padded = F.pad(x[i : i + batch_size].to(dev), (shift,) * 4, mode="reflect")
            views = [padded[..., shift + dy : shift + dy + h, shift + dx : shift + dx + w] for dx, dy in offsets]
            out.append(torch.stack([clf.probabilities(v) for v in views]).mean(0).cpu())
    return torch.cat(out)


def average_weights(classifiers: list[FERClassifier]) -> FERClassifier:
    """One classifier whose weights (and BatchNorm statistics) are the mean of `classifiers`'.

    A "model soup" (Wortsman et al., 2022): fine-tunes that share a starting
    point sit in one basin, so their average usually beats each of them, at
    the cost of one network at inference. `docs/decoded` measures it.
    """
    if any(isinstance(c, ClassifierEnsemble) for c in classifiers):
        raise ValueError("cannot weight-average an ensemble's members with other networks: ship them as an ensemble (ferexport --ensemble)")
    widths = sorted({c.width for c in classifiers})
    if len(widths) > 1:
        raise ValueError(f"cannot average classifiers of different widths {widths}")
    states = [c.state_dict() for c in classifiers]
    mean = {k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v for k, v in states[0].items()}
    soup = FERClassifier(widths[0])
    soup.load_state_dict(mean)
    return soup.eval()
