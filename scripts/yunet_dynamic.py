"""Derive the shipped face detector from YuNet's upstream ONNX file: the same graph and weights, input height and width made symbolic.

The upstream file declares a fixed 640x640 input. OpenCV's FaceDetectorYN reshapes its network to each photo
(padded to a multiple of 32); ONNX Runtime keeps declared sizes, and padding every photo to 640x640 costs 2-4x the
time and moves detections near the padding's edge. With symbolic sizes ONNX Runtime runs the photo's own padded
size and reproduces FaceDetectorYN to 2e-5 px (tests/client/test_faces.py). Needs the `onnx` package (the train extra):

    python scripts/yunet_dynamic.py UPSTREAM.onnx models/weights/face-detector/yunet_n_dynamic.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def make_dynamic(src: Path, dst: Path) -> None:
    """ValueError when src is not an ONNX model whose inputs are 4-D images, as YuNet's [1, 3, 640, 640] is."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(src))
    except DecodeError as e:
        raise ValueError(f"{src} is not an ONNX model ({e})") from None
    if not model.graph.input or any(len(v.type.tensor_type.shape.dim) != 4 for v in model.graph.input):
        raise ValueError(f"{src} is not YuNet's graph: it has no 4-D image input")
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    for value in model.graph.output:  # cls_8, bbox_16, ...: [1, cells at that stride, channels]
        value.type.tensor_type.shape.dim[1].dim_param = "cells_" + value.name.split("_")[-1]
    del model.graph.value_info[:]  # intermediate shapes inferred for 640x640
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="upstream yunet_n_640_640.onnx")
    p.add_argument("dst", type=Path, help="where to write the symbolic-size copy")
    args = p.parse_args(argv)
    if not args.src.is_file():
        p.error(f"{args.src}: no such file")
    if not args.dst.parent.is_dir():
        p.error(f"{args.dst}: no folder {args.dst.parent} to write it into")
    try:
        make_dynamic(args.src, args.dst)
    except ModuleNotFoundError as e:  # the base install has no onnx
        print(f"yunet_dynamic: needs the `onnx` package (the train extra: pip install 'fercodec[train]'); {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"yunet_dynamic: {e}", file=sys.stderr)
        return 2
    for f in (args.src, args.dst):
        print(f"{f}: {f.stat().st_size:,} bytes, sha256 {hashlib.sha256(f.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
