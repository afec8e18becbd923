"""ferclient as a library: the faces in an image, and their expressions, from Python.

    from ferclient import Client

    with Client("localhost:50051") as client:
        for face in client.recognize("photo.jpg"):
            print(face.box, face.label, face.confidence)
        per_image = client.recognize_many(["a.jpg", "b.jpg"])  # faces of many images in few requests
        print(client.server_info().models[0].model_id)

The path is `ferclient send`'s (ferclient.cli is built from the same pieces): the detector, alignment onto
FER2013's frame, the edge encoder, one channel with TLS, a bearer token, round_robin and retries, and the server's
encoder pulled once when it runs another model. Settings left out are the command line's defaults, FERCODEC_*
environment variables included. Errors are FerError, with the one line `ferclient send` would print. No torch.

A Client may be shared by threads: its detector and encoder are ONNX Runtime sessions (whose run is thread-safe) and
its channel is gRPC's; a Client per thread costs about 14 MB each for nothing.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

# grpc's C core writes failed TLS handshakes to stderr in lines of its own; read when grpc is first imported (as the
# command line does). An application's own GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
log = logging.getLogger("ferclient")


class FerError(Exception):
    """What went wrong, in one line; `code` is the gRPC status's name (UNAVAILABLE, ...) when the server refused;
    `index`, the position in recognize_many()'s images of the one that could not be read (so it can be left out)."""

    def __init__(self, message: str, code: str | None = None, index: int | None = None):
        super().__init__(message)
        self.code, self.index = code, index


@dataclass(frozen=True)
class FaceResult:
    """One face's answer."""

    label: str
    confidence: float
    probabilities: dict[str, float]  # every class, in the model's order
    box: tuple[int, int, int, int] | None  # x, y, w, h in the image's pixels; None: the whole image was sent as the face
    score: float | None  # the detector's confidence (None without detection)
    bytes: int  # the face's bitstream
    bpp: float
    model: str  # the model that answered
    reconstruction_png: bytes | None = field(default=None, repr=False)  # the server's reconstruction, where asked for (image codec)

    @classmethod
    def of(cls, face, stream: bytes, r, card) -> "FaceResult":
        """From a detected face (or None), its bitstream, the server's FaceResult message and the encoder's card."""
        h, w = card.face_size
        return cls(label=r.label, confidence=r.confidence, probabilities=dict(zip(card.class_names, r.probabilities)),
                   box=None if face is None else tuple(face.box), score=None if face is None else face.score,
                   bytes=len(stream), bpp=8 * len(stream) / (h * w), model=r.model_id, reconstruction_png=r.reconstruction_png or None)

    def row(self) -> dict:
        """The JSON object `ferclient send --json` prints for this face, less "file", "latency_ms" and "model"."""
        return {"box": list(self.box) if self.box is not None else None, "score": None if self.score is None else round(self.score, 4),
                "label": self.label, "confidence": round(self.confidence, 4), "probabilities": {n: round(p, 4) for n, p in self.probabilities.items()},
                "bytes": self.bytes, "bpp": round(self.bpp, 4)}


@dataclass(frozen=True)
class SkippedFace:
    """A face found but not sent, its box's longer side (size) being under the Client's min_face."""

    box: tuple[int, int, int, int]  # x, y, w, h in the image's pixels
    score: float  # the detector's confidence
    size: int  # px, the box's longer side
    image: int = 0  # its image's position in recognize_many()'s images (0 for recognize())


@dataclass(frozen=True)
class Quality:
    """One codec quality a model offers."""

    index: int
    lambda_: float  # the weight it was trained with (proto: lambda; its meaning per kind: protos/fercodec/v1/fercodec.proto)
    mean_bpp: float  # mean bits per pixel on FER2013 PrivateTest


@dataclass(frozen=True)
class ServedModel:
    """One model a server decodes (GetModelInfo's ModelInfo)."""

    model_id: str
    model_tag: int  # the 16-bit tag its bitstreams carry
    kind: str  # "image" (reconstructed, then classified) or "expression" (classified without pixels)
    version: str
    input_size: tuple[int, int]  # height, width of a face
    qualities: tuple[Quality, ...]
    default_quality: int
    class_names: tuple[str, ...]  # FaceResult.probabilities' order
    bitstream_version: int
    device: str  # cpu or cuda
    classifier_precision: str | None  # "int8" or "fp32"; None for the expression layer
    synthesis_precision: str | None  # "bf16" or "fp32"; None for the expression layer
    temperature: float  # calibration: probabilities = softmax((log p - prior_correction * log train_prior) / temperature)
    prior_correction: float
    train_prior: tuple[float, ...]

    @classmethod
    def of(cls, m) -> "ServedModel":
        return cls(model_id=m.model_id, model_tag=m.model_tag, kind=m.kind, version=m.version, input_size=(m.input_height, m.input_width),
                   qualities=tuple(Quality(q.index, _f32(getattr(q, "lambda")), _f32(q.mean_bits_per_pixel)) for q in m.qualities),
                   default_quality=m.default_quality, class_names=tuple(m.class_names), bitstream_version=m.bitstream_version,
                   device=m.device, classifier_precision=m.classifier_precision or None, synthesis_precision=m.synthesis_precision or None,
                   temperature=_f32(m.temperature), prior_correction=_f32(m.prior_correction), train_prior=tuple(_f32(v) for v in m.train_prior))


@dataclass(frozen=True)
class ServerInfo:
    """What a server runs (`ferclient info`): models[0] is its first model, the one GetEncoder("") gives; the others
    follow in its order. A face encoded for any of them is decoded."""

    models: tuple[ServedModel, ...]

    @property
    def device(self) -> str:
        return self.models[0].device

    def model(self, model_id: str) -> ServedModel | None:
        """The served model of this id, or None."""
        return next((m for m in self.models if m.model_id == model_id), None)


def prepare(rgb: np.ndarray, scale: float, encoder, detector, quality: int | None, min_face: int, align: bool = True):
    """(faces, bitstreams, skipped) for one image's pixels: faces [None] where detector is None (the image is the face
    crop), else the detected faces of at least min_face px in the image's own pixels (scale: how many of them one of
    rgb's spans), aligned (or box-cropped) and encoded; skipped, the smaller ones. faces is empty when none is left."""
    from .faces import align as aligned
    from .faces import box_crop, to_gray, whole

    gray = to_gray(rgb)
    size = encoder.card.face_size[0]
    if detector is None:
        _a_face_crop(gray, min_face)
        return [None], encoder.encode(whole(gray, size)[None], quality), []
    found = detector.detect(rgb)
    shown = [f.rescaled(scale) for f in found]  # in the file's own pixels, which a large JPEG was not decoded at
    keep = [k for k, f in enumerate(shown) if f.size >= min_face]
    skipped = [f for f in shown if f.size < min_face]
    if not keep:
        return [], [], skipped
    cut = aligned if align else box_crop
    return [shown[k] for k in keep], encoder.encode(np.stack([cut(gray, found[k], size) for k in keep]), quality), skipped


FLAT_LEVELS = 6  # grey levels: an image spanning fewer is one flat colour (JPEG's ripples on a blank one included)


def _a_face_crop(gray: np.ndarray, min_face: int) -> None:
    """ImageError where an image given as a face crop (no detection) cannot be one: smaller than min_face px on its
    longer side, as a detected face would be skipped, or one flat colour. Each was labelled (a 1x1 px image, a black
    one: "sad 0.51"), a confident-looking answer about nothing."""
    from .faces import ImageError

    h, w = gray.shape
    if max(h, w) < min_face:
        raise ImageError(f"{w}x{h} px is smaller than the minimum face size, {min_face} px: too small to classify")
    if int(gray.max()) - int(gray.min()) < FLAT_LEVELS:
        raise ImageError("the image is one flat colour: there is no face in it to classify")


def pixels(image: Any) -> tuple[np.ndarray, float]:
    """(uint8 [H, W, 3], scale) of what recognize() takes: a path, an image file's bytes, a Pillow image, or a
    uint8 array ([H, W] or [H, W, 1] gray, [H, W, 3] RGB or [H, W, 4] RGBA). ImageError with one line otherwise."""
    from .faces import ImageError, _rgb8, load_rgb

    if isinstance(image, (str, Path, bytes)):
        return load_rgb(image, warn=lambda note: log.warning("%s: %s", _name(image), note))
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise ImageError(f"empty: an array of shape {list(image.shape)}")
        if image.dtype != np.uint8:
            raise ImageError(f"an array image must be uint8, got {image.dtype}")
        if image.ndim == 3 and image.shape[-1] == 1:  # OpenCV's and many loaders' gray: [H, W, 1]
            image = image[..., 0]
        if image.ndim == 2:
            return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=-1)), 1.0
        if image.ndim == 3 and image.shape[-1] in (3, 4):
            return np.ascontiguousarray(image[..., :3]), 1.0
        raise ImageError(f"an array image must be [H, W], [H, W, 1], [H, W, 3] (RGB) or [H, W, 4], got shape {list(image.shape)}")
    if hasattr(image, "getexif") and hasattr(image, "mode"):  # a Pillow image: turned upright as a file would be
        from PIL import ImageOps

        if 0 in image.size:
            raise ImageError(f"empty: a {image.size[0]}x{image.size[1]} image")
        try:
            return _rgb8(ImageOps.exif_transpose(image)), 1.0
        except (OSError, ValueError) as e:  # a closed image ("Operation on closed image"), a file behind it cut short
            raise ImageError(f"cannot read the Pillow image ({e})") from None
    raise ImageError(f"cannot read an object of type {type(image).__name__} as an image: give a path, bytes, a file object, a Pillow image or a uint8 array")


def _as_bytes(image: Any) -> Any:
    """An open binary file or io.BytesIO (read once, from where it stands), a bytearray or a memoryview as the bytes
    pixels() reads (a pulled encoder reads an image twice); anything else as it is."""
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    if hasattr(image, "read") and not hasattr(image, "getexif"):
        import io

        if isinstance(image, io.TextIOBase):
            raise FerError("a file object must be opened in binary mode ('rb'), not as text")
        try:
            data = image.read()
        except (OSError, ValueError) as e:  # closed, or not readable
            raise FerError(f"cannot read the file object ({e})") from None
        if not isinstance(data, bytes):
            raise FerError(f"a file object must be opened in binary mode ('rb'): its read() gave {type(data).__name__}")
        return data
    return image


def _f32(v: float) -> float:
    """A proto float (float32) as its shortest decimal: 0.0018, not 0.0017999999690800905."""
    return float(str(np.float32(v)))


def _name(image: Any) -> str:
    """What an error says the image was: a path (its last 80 characters of a long one), or the kind of object."""
    if isinstance(image, (str, Path)):
        text = str(image).encode("unicode_escape").decode("ascii")  # one line, whatever the string holds
        return text if len(text) <= 80 else "..." + text[-77:]
    return f"<{type(image).__name__}>"


class Client:
    """A connection to ferserver and the edge half of its model: `recognize(image)` -> list[FaceResult],
    `recognize_many(images)` -> one such list per image, `server_info()` -> ServerInfo.

    server: host:port or dns:///name:port (default $FERCODEC_SERVER, else localhost:50051). model: a bundled name
    (fercodec-v1, the default; fercodec-v1-expr), a model directory, or the id of a model the server runs (pulled).
    token: the bearer token itself (token_file: a file holding it). tls_ca, tls_cert, tls_key: PEM files, as the
    command line's --tls-* flags. timeout: seconds per request. pull=False never downloads an encoder.
    """

    def __init__(self, server: str | None = None, *, model: str | None = None, quality: int | None = None, timeout: float | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None, token: str | None = None,
                 token_file: str | None = None, plaintext_token: bool = False, detect_threshold: float | None = None,
                 min_face: int | None = None, align: bool = True, pull: bool = True):
        import grpc

        from . import channel as channel_mod
        from . import cli
        from .faces import FaceDetector

        given = {"--server": server, "--model": model, "--quality": quality, "--timeout": timeout, "--tls-ca": tls_ca, "--tls-cert": tls_cert,
                 "--tls-key": tls_key, "--token-file": token_file, "--detect-threshold": detect_threshold, "--min-face": min_face}
        argv = ["send", "-", *[f"{flag}={v}" for flag, v in given.items() if v is not None]]  # "=": a value may start with "-"
        argv += [flag for flag, on in (("--plaintext-token", plaintext_token), ("--no-align", not align), ("--no-pull", not pull)) if on]
        self.args = cli.parser(error=_raise).parse_args(argv)  # the command line's checks and defaults, the environment's included
        self.args.token = token
        try:
            self.encoder = cli._load_encoder(self.args, note=log.info)
            self.encoder.check_quality(self.args.quality)
            self.detector = FaceDetector(self.args.detect_threshold)
            self.channel = channel_mod.open_channel(self.args, warn_faces=lambda msg: warnings.warn(msg, stacklevel=4))  # at the caller's line
        except channel_mod.ChannelSettingError as e:
            raise FerError(_keywords(str(e))) from None
        except ConnectionError as e:
            raise FerError(f"cannot pull model {self.args.model_dir}: {e}", "UNAVAILABLE") from None
        except (OSError, ValueError) as e:
            raise FerError(_keywords(str(e))) from None
        except grpc.RpcError as e:
            raise FerError(f"cannot pull model {self.args.model_dir}: {_keywords(channel_mod.rpc_error_message(e, self.args))}", e.code().name) from None
        from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

        self._stub, self._swap, self._closed = pb_grpc.FerCodecStub(self.channel), {}, False

    @property
    def model(self) -> str:
        """The id of the model faces are encoded for (the server's, once it was pulled)."""
        return self.encoder.card.model_id

    def recognize(self, image: Any, *, detect: bool = True, reconstruct: bool = False,
                  on_skipped: Callable[[SkippedFace], None] | None = None) -> list[FaceResult]:
        """Every face in image (a path, an image file's bytes or a binary file object, a Pillow image or a uint8 array), in the detector's
        order (largest first); [] when there is none of at least min_face px. detect=False: the image is
        already a face crop. reconstruct: each result carries the server's reconstruction as PNG (image codec).
        on_skipped: called with each face under min_face before anything is sent (send's note on stderr); a callback
        rather than a field or a Client attribute, so the result stays a plain list and no state outlives the call."""
        return self._recognize([image], [_name(image)], detect, reconstruct, on_skipped, many=False)[0]

    def recognize_many(self, images: Iterable[Any], *, detect: bool = True, reconstruct: bool = False,
                       on_skipped: Callable[[SkippedFace], None] | None = None) -> list[list[FaceResult]]:
        """recognize() for each image, one list per image in order, the faces of all going together in requests of
        up to 32 (send's batching, cli._Reply), at most 64 on the wire at once: one round trip for a few images, not one
        each. Every image is read and encoded before anything is sent, so an unreadable one raises FerError naming it
        (`images[3] (photo.jpg): ...`, its position in FerError.index) and no request has been made; any later failure
        raises too, with no partial results. SkippedFace.image says which image a skipped face is in."""
        if isinstance(images, (str, bytes, bytearray, memoryview, Path, np.ndarray)) or hasattr(images, "getexif") or hasattr(images, "read"):
            raise FerError(f"recognize_many takes a list of images, got one {type(images).__name__}: give [image], or call recognize(image)")
        images = list(images)
        return self._recognize(images, [f"images[{k}] ({_name(im)})" for k, im in enumerate(images)], detect, reconstruct, on_skipped, many=True)

    def server_info(self) -> ServerInfo:
        """The models the server runs (GetModelInfo, what `ferclient info` prints); errors as FerError with info's line."""
        import grpc

        from fercodec.v1 import fercodec_pb2 as pb

        from . import channel as channel_mod

        if self._closed:
            raise FerError("this Client is closed")
        try:
            reply = channel_mod.unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), self.args.timeout)
        except grpc.RpcError as e:
            raise FerError(_keywords(channel_mod.rpc_error_message(e, self.args)), e.code().name) from None
        return ServerInfo(tuple(ServedModel.of(m) for m in (reply, *reply.other_models)))

    def _recognize(self, images: list, labels: list[str], detect: bool, reconstruct: bool, on_skipped, many: bool) -> list[list[FaceResult]]:
        """recognize() and recognize_many(): labels name each image in errors; many sets FerError.index."""
        from . import cli

        if self._closed:
            raise FerError("this Client is closed")
        if isinstance(detect, str) or isinstance(reconstruct, str):  # detect="no" would read as True
            raise FerError(f"detect and reconstruct are True or False, got {detect!r} and {reconstruct!r}")
        images = [_as_bytes(im) for im in images]
        if reconstruct and self.encoder.card.kind == "expression":
            raise FerError(f"model {self.model} is the expression layer: it sends no image, so there is nothing to reconstruct")
        detector, held = self.detector if detect else None, {}

        def encoded(k: int, encoder) -> tuple:
            """(encoder, faces, streams, skipped) of images[k]. One image's pixels are held for a pulled encoder to encode
            again; many images are read again then, rather than all held in memory at once."""
            from .faces import ImageError

            try:
                rgb, scale = held[k] if k in held else pixels(images[k])
                if not many:
                    held[k] = rgb, scale
                return encoder, *prepare(rgb, scale, encoder, detector, self.args.quality, self.args.min_face, not self.args.no_align)
            except ImageError as e:  # unreadable, or (detect=False) too small or flat to be a face
                raise FerError(f"{labels[k]}: {e}", index=k if many else None) from None

        prepared = [encoded(k, self.encoder) for k in range(len(images))]  # a bad image fails here, before any request
        if on_skipped is not None:
            for k, (*_, skipped) in enumerate(prepared):
                for f in skipped:
                    on_skipped(SkippedFace(tuple(f.box), float(f.score), int(f.size), k))
        out: list[list[FaceResult]] = [[] for _ in images]
        limit, group, n = cli.IN_FLIGHT * cli.FACES_PER_REQUEST, [], 0  # a group's faces go as one cli._Reply: at most IN_FLIGHT requests
        for k, p in enumerate(prepared):
            if group and n + len(p[2]) > limit:
                self._send(group, prepared, encoded, labels, reconstruct, out)
                group, n = [], 0
            group.append(k)
            n += len(p[2])
        if n:
            self._send(group, prepared, encoded, labels, reconstruct, out)
        return out

    def _send(self, group: list[int], prepared: list, encoded, labels: list[str], reconstruct: bool, out: list) -> None:
        """Send the faces of the images in group (consecutive positions) as one cli._Reply, and put each image's results
        in out; a refusal for a model the server does not run pulls its encoder once and sends the group again."""
        import grpc

        from . import channel as channel_mod
        from . import cli

        for k in group:  # encoded before an earlier group swapped the encoder for the server's
            if prepared[k][0] is not self.encoder and prepared[k][2]:
                prepared[k] = encoded(k, self.encoder)

        def again(encoder):
            for k in group:
                prepared[k] = encoded(k, encoder)
            return None, [s for k in group for s in prepared[k][2]], None

        label = labels[group[0]] if len(group) == 1 else f"images[{group[0]}:{group[-1] + 1}]"
        try:
            try:
                sent = cli._Reply(self._stub, [s for k in group for s in prepared[k][2]], reconstruct, self.args.timeout)
                reply = sent.result()
            except grpc.RpcError as e:
                if self.args.no_pull or not cli._unknown_model(e):
                    raise
                self.encoder, _, sent = cli._resend(self.args, self._swap, self.encoder, self.channel, self._stub, again, reconstruct, note=log.info)
                reply = sent.result()
        except (grpc.RpcError, ValueError) as e:
            if self._closed:  # close() from another thread: grpc's "Cannot invoke RPC: Channel closed!" or CANCELLED
                raise FerError(f"{label}: this Client was closed before the answer came", "CANCELLED") from None
            if isinstance(e, grpc.RpcError):
                raise FerError(f"{label}: {_keywords(channel_mod.rpc_error_message(e, self.args))}", e.code().name) from None
            raise FerError(f"{label}: {e}") from None  # the server's model could not be pulled
        except OSError as e:
            raise FerError(f"{label}: {e}") from None
        results = iter(reply.results)
        for k in group:
            encoder, faces, streams, _ = prepared[k]
            out[k] = [FaceResult.of(f, s, r, encoder.card) for f, s, r in zip(faces, streams, results)]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_KEYWORD = {"--model": "model=", "--model-dir": "model=", "--no-pull": "pull=False", "--no-align": "align=False",
            **{f"--{k.replace('_', '-')}": f"{k}=" for k in ("tls_ca", "tls_cert", "tls_key", "token_file", "plaintext_token",
                                                              "timeout", "quality", "min_face", "detect_threshold", "server")}}


def _keywords(message: str) -> str:
    """A message of the command line's, the client's flags named as Client's keywords (--tls-ca -> tls_ca=, --no-pull ->
    pull=False): a library user has no --token-file to give. Other flags (the server's: --host) stay as they are."""
    return re.sub(r"(?<![\w-])--[a-z][a-z-]*", lambda m: _KEYWORD.get(m.group(0), m.group(0)), message)


def _raise(message: str):
    """argparse's error(), for the library: FerError instead of usage text and SystemExit, naming the keyword
    (quality) where argparse names the flag (argument --quality)."""
    raise FerError(re.sub(r"argument --([a-z-]+)(/--[a-z-]+)*", lambda m: m.group(1).replace("-", "_"), message))
