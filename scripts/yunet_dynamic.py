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
from pathlib import Path

import onnx


def make_dynamic(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    for value in model.graph.output:  # cls_8, bbox_16, ...: [1, cells at that stride, channels]
        value.type.tensor_type.shape.dim[1].dim_param = "cells_" + value.name.split("_")[-1]
    del model.graph.value_info[:]  # intermediate shapes inferred for 640x640
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="upstream yunet_n_640_640.onnx")
    p.add_argument("dst", type=Path, help="where to write the symbolic-size copy")
    args = p.parse_args()
    make_dynamic(args.src, args.dst)
    for f in (args.src, args.dst):
        print(f"{f}: {f.stat().st_size:,} bytes, sha256 {hashlib.sha256(f.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
