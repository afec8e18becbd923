"""ferclient send image.jpg [more.jpg ...]: faces in, expressions out.

Errors are one line on stderr each; the other files still get their results;
the exit status is 1 when anything failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .faces import DETECT_THRESHOLD, MIN_FACE

DEFAULT_SERVER = "localhost:50051"


def _pixels(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text}")
    return v


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v


def _args(argv):
    p = argparse.ArgumentParser(prog="ferclient", description="Send faces as learned bitstreams to a fercodec server.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send", help="detect, encode and send the faces in images")
    s.add_argument("images", nargs="+", help="image files (anything Pillow reads)")
    s.add_argument("--server", default=os.environ.get("FERCODEC_SERVER", DEFAULT_SERVER), help=f"host:port (env FERCODEC_SERVER, default {DEFAULT_SERVER})")
    s.add_argument("--quality", type=int, default=None, help="codec quality index (default: the model's default)")
    s.add_argument("--no-detect", action="store_true", help="each image is already a face crop")
    s.add_argument("--min-face", type=_pixels, default=MIN_FACE, metavar="PX",
                   help=f"skip faces whose box is smaller than PX on its longer side, with a note (default {MIN_FACE})")
    s.add_argument("--detect-threshold", type=_fraction, default=DETECT_THRESHOLD, metavar="T",
                   help=f"face detector confidence needed to count as a face, 0..1 (default {DETECT_THRESHOLD:g})")
    s.add_argument("--no-align", action="store_true", help="crop the detector's box as it is instead of levelling the eyes on FER2013's landmarks")
    s.add_argument("--reconstruct", metavar="DIR", default=None, help="save the server's reconstructions as PNG in DIR")
    s.add_argument("--json", action="store_true", help="one JSON object per face per line")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    s.add_argument("--model", "--model-dir", dest="model_dir", default=None,
                   help="model directory or bundled name: fercodec-v1 (default; the image codec) or fercodec-v1-expr "
                        "(the expression layer: fewest bytes, no reconstruction)")
    i = sub.add_parser("info", help="print what the server runs")
    i.add_argument("--server", default=os.environ.get("FERCODEC_SERVER", DEFAULT_SERVER))
    i.add_argument("--timeout", type=float, default=10.0)
    return p.parse_args(argv)


def _err(msg: str) -> None:
    print(f"ferclient: {msg}", file=sys.stderr)


def _rpc_error(e, server: str, timeout: float) -> str:
    import grpc

    code = e.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach server at {server} ({e.details()})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"deadline exceeded: no answer from {server} within {timeout:g}s"
    return f"server refused the request: {code.name}: {e.details()}"


def _prepare(path: str, args, encoder, detector):
    """(faces, bitstreams) for one image, faces being None for --no-detect; raises ImageError/ValueError with a one-line reason."""
    import numpy as np

    from .faces import align, box_crop, load_rgb, to_gray, whole

    rgb, scale = load_rgb(path)
    gray = to_gray(rgb)
    size = encoder.card.face_size[0]
    if args.no_detect:
        return [None], encoder.encode(whole(gray, size)[None], args.quality)
    found = detector.detect(rgb)
    shown = [f.rescaled(scale) for f in found]  # in the file's own pixels, which a large JPEG was not decoded at
    for f in shown:
        if f.size < args.min_face:
            _err("{}: skipped a face at box=[{},{},{},{}]: {} px is below --min-face {}".format(path, *f.box, f.size, args.min_face))
    keep = [k for k, f in enumerate(shown) if f.size >= args.min_face]
    if not keep:
        if found:
            raise ValueError(f"no face of at least {args.min_face} px (lower --min-face to classify smaller ones)")
        raise ValueError("no face found (pass --no-detect if the image is already a face crop, or lower --detect-threshold)")
    cut = box_crop if args.no_align else align
    return [shown[k] for k in keep], encoder.encode(np.stack([cut(gray, found[k], size) for k in keep]), args.quality)


def send(args) -> int:
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    from .encoder import FaceEncoder
    from .faces import FaceDetector, ImageError

    try:
        encoder = FaceEncoder(args.model_dir)
        encoder.check_quality(args.quality)
        detector = None if args.no_detect else FaceDetector(args.detect_threshold)
    except (OSError, ValueError) as e:
        _err(str(e))
        return 2
    if args.reconstruct and encoder.card.kind == "expression":
        _err(f"model {encoder.card.model_id} is the expression layer: it sends no image, so there is nothing to --reconstruct; use --model fercodec-v1")
        return 2
    if args.reconstruct:
        Path(args.reconstruct).mkdir(parents=True, exist_ok=True)
    names = encoder.card.class_names
    h, w = encoder.card.face_size
    failed = 0
    pending = []  # (path, faces, bitstreams, future, t0, done-time holder)
    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.FerCodecStub(channel)
        # Encode every file and put its request on the wire before waiting for any answer.
        for path in args.images:
            try:
                faces, streams = _prepare(path, args, encoder, detector)
            except (ImageError, ValueError) as e:
                _err(f"{path}: {e}")
                failed += 1
                continue
            done = {}
            t0 = time.perf_counter()
            fut = stub.Recognize.future(pb.RecognizeRequest(faces=streams, return_reconstruction=bool(args.reconstruct)), timeout=args.timeout)
            fut.add_done_callback(lambda f, d=done: d.setdefault("t", time.perf_counter()))
            pending.append((path, faces, streams, fut, t0, done))
        for path, faces, streams, fut, t0, done in pending:
            try:
                reply = fut.result()
            except grpc.RpcError as e:
                _err(f"{path}: {_rpc_error(e, args.server, args.timeout)}")
                failed += 1
                continue
            latency_ms = (done.get("t", time.perf_counter()) - t0) * 1000.0
            for k, (face, stream, r) in enumerate(zip(faces, streams, reply.results)):
                box = None if face is None else face.box
                row = {
                    "file": path,
                    "box": list(box) if box is not None else None,
                    "score": None if face is None else round(face.score, 4),
                    "label": r.label,
                    "confidence": round(r.confidence, 4),
                    "probabilities": {n: round(p, 4) for n, p in zip(names, r.probabilities)},
                    "bytes": len(stream),
                    "bpp": round(8 * len(stream) / (h * w), 4),
                    "latency_ms": round(latency_ms, 2),
                    "model": r.model_id,
                }
                if args.reconstruct:
                    (Path(args.reconstruct) / f"{Path(path).stem}_face{k}.png").write_bytes(r.reconstruction_png)
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    box_s = "whole image" if box is None else "box=[{},{},{},{}] face {:.2f}".format(*box, face.score)
                    print(f"{path}  {box_s}  {r.label} {r.confidence:.2f}  {row['bytes']} B  {row['bpp']:.3f} bpp  {latency_ms:.1f} ms", flush=True)
    return 1 if failed else 0


def info(args) -> int:
    import grpc
    from google.protobuf import json_format

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    with grpc.insecure_channel(args.server) as channel:
        try:
            reply = pb_grpc.FerCodecStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=args.timeout)
        except grpc.RpcError as e:
            _err(_rpc_error(e, args.server, args.timeout))
            return 1
    print(json.dumps(json_format.MessageToDict(reply, preserving_proto_field_name=True), indent=2))
    return 0


def main(argv=None) -> int:
    args = _args(argv)
    try:
        return send(args) if args.command == "send" else info(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
