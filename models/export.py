"""ferexport: turn training checkpoints into a shipped model directory (see bundle.py).

    ferexport --codec runs/codec/best.pt --classifier runs/classifier/best.pt \
              --out models/weights/fercodec-v1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from . import CLASS_NAMES, FACE_SIZE
from .bundle import ENTROPY_BUFFERS


def _args(argv):
    p = argparse.ArgumentParser(prog="ferexport", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", required=True, help="fertrain codec checkpoint (best.pt)")
    p.add_argument("--classifier", required=True, help="fertrain classifier checkpoint (best.pt)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--name", default="fercodec-v1", help="model id prefix; the tag's hex is appended")
    p.add_argument("--default-quality", type=int, default=None, help="quality the client uses by default (default: the middle one)")
    return p.parse_args(argv)


def export(codec_ck: str, classifier_ck: str, out: str | Path, name: str = "fercodec-v1", default_quality: int | None = None) -> dict:
    import torch

    from .classifier import FERClassifier
    from .codec import FaceCodec

    ck = torch.load(codec_ck, map_location="cpu", weights_only=False)
    a = ck["args"]
    state = ck["models"]["codec"]
    lambdas = tuple(float(v) for v in state["lambdas"].tolist())
    codec = FaceCodec(n=a["n"], m=a["m"], lambdas=lambdas)
    codec.load_state_dict(state)
    codec.eval()
    tables = codec.entropy_tables()  # runs update(): CDFs are built once, here, and shipped

    # A joint checkpoint carries its own classifier; it wins over --classifier.
    joint = "classifier" in ck["models"]
    cck = ck if joint else torch.load(classifier_ck, map_location="cpu", weights_only=False)
    width = cck["args"].get("width", 32)
    clf = FERClassifier(width=width)
    clf.load_state_dict(cck["models"]["classifier"])

    h = hashlib.sha256()
    for k in sorted(tables):
        h.update(np.ascontiguousarray(tables[k]).tobytes())
    for v in codec.g_a.state_dict().values():
        h.update(v.numpy().tobytes())
    tag = int.from_bytes(h.digest()[:2], "big")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "tables.npz", **tables)
    # update()'s CDF buffers are left out: tables.npz is their one shipped copy.
    weights = {k: v for k, v in codec.state_dict().items() if not k.endswith(ENTROPY_BUFFERS)}
    torch.save({"config": {"n": a["n"], "m": a["m"], "lambdas": lambdas}, "state_dict": weights}, out / "codec.pt")
    torch.save({"config": {"width": width}, "state_dict": clf.state_dict()}, out / "classifier.pt")
    # The torch.export-based exporter (the TorchScript one is deprecated); batch is dynamic.
    x = torch.rand(1, 1, FACE_SIZE, FACE_SIZE)
    program = torch.onnx.export(
        codec.g_a, (x,), input_names=["face"], output_names=["latent"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=18, dynamo=True, verbose=False
    )
    program.save(str(out / "encoder.onnx"))
    meta = {
        "model_id": f"{name}-{tag:04x}",
        "model_tag": tag,
        "version": "1",
        "face_size": [FACE_SIZE, FACE_SIZE],
        "class_names": list(CLASS_NAMES),
        "lambdas": list(lambdas),
        "default_quality": len(lambdas) // 2 if default_quality is None else default_quality,
        "sources": {"codec": str(codec_ck), "classifier": str(codec_ck if joint else classifier_ck)},
        "metrics": {},
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv=None) -> int:
    args = _args(argv)
    try:
        meta = export(args.codec, args.classifier, args.out, args.name, args.default_quality)
    except FileNotFoundError as e:
        print(f"ferexport: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: model {meta['model_id']} (tag {meta['model_tag']:#06x})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
