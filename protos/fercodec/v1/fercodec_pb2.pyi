from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecognizeRequest(_message.Message):
    __slots__ = ("faces", "return_reconstruction", "request_id", "unchanged_faces")
    FACES_FIELD_NUMBER: _ClassVar[int]
    RETURN_RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FACES_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedScalarFieldContainer[bytes]
    return_reconstruction: bool
    request_id: str
    unchanged_faces: int
    def __init__(self, faces: _Optional[_Iterable[bytes]] = ..., return_reconstruction: _Optional[bool] = ..., request_id: _Optional[str] = ..., unchanged_faces: _Optional[int] = ...) -> None: ...

class FaceResult(_message.Message):
    __slots__ = ("label", "confidence", "probabilities", "reconstruction_png", "quality", "bitstream_bytes", "bits_per_pixel", "model_id")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_PNG_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_PIXEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    reconstruction_png: bytes
    quality: int
    bitstream_bytes: int
    bits_per_pixel: float
    model_id: str
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., reconstruction_png: _Optional[bytes] = ..., quality: _Optional[int] = ..., bitstream_bytes: _Optional[int] = ..., bits_per_pixel: _Optional[float] = ..., model_id: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "max_faces")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    max_faces: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., max_faces: _Optional[int] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("request_id", "results", "model_id", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[FaceResult]
    model_id: str
    error: Error
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[FaceResult, _Mapping]]] = ..., model_id: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Quality(_message.Message):
    __slots__ = ("index", "mean_bits_per_pixel")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LAMBDA_FIELD_NUMBER: _ClassVar[int]
    MEAN_BITS_PER_PIXEL_FIELD_NUMBER: _ClassVar[int]
    index: int
    mean_bits_per_pixel: float
    def __init__(self, index: _Optional[int] = ..., mean_bits_per_pixel: _Optional[float] = ..., **kwargs) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "model_tag", "version", "input_height", "input_width", "qualities", "default_quality", "class_names", "bitstream_version", "device", "kind", "other_models", "temperature", "prior_correction", "train_prior", "classifier_precision", "synthesis_precision")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_TAG_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    QUALITIES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_QUALITY_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    BITSTREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OTHER_MODELS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    PRIOR_CORRECTION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_PRIOR_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_PRECISION_FIELD_NUMBER: _ClassVar[int]
    SYNTHESIS_PRECISION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_tag: int
    version: str
    input_height: int
    input_width: int
    qualities: _containers.RepeatedCompositeFieldContainer[Quality]
    default_quality: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    bitstream_version: int
    device: str
    kind: str
    other_models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    temperature: float
    prior_correction: float
    train_prior: _containers.RepeatedScalarFieldContainer[float]
    classifier_precision: str
    synthesis_precision: str
    def __init__(self, model_id: _Optional[str] = ..., model_tag: _Optional[int] = ..., version: _Optional[str] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., qualities: _Optional[_Iterable[_Union[Quality, _Mapping]]] = ..., default_quality: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., bitstream_version: _Optional[int] = ..., device: _Optional[str] = ..., kind: _Optional[str] = ..., other_models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., temperature: _Optional[float] = ..., prior_correction: _Optional[float] = ..., train_prior: _Optional[_Iterable[float]] = ..., classifier_precision: _Optional[str] = ..., synthesis_precision: _Optional[str] = ...) -> None: ...

class GetEncoderRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class EncoderFile(_message.Message):
    __slots__ = ("name", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class EncoderManifest(_message.Message):
    __slots__ = ("model_id", "model_tag", "version", "kind", "files", "bundle_sha256", "total_bytes")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_TAG_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_tag: int
    version: str
    kind: str
    files: _containers.RepeatedCompositeFieldContainer[EncoderFile]
    bundle_sha256: str
    total_bytes: int
    def __init__(self, model_id: _Optional[str] = ..., model_tag: _Optional[int] = ..., version: _Optional[str] = ..., kind: _Optional[str] = ..., files: _Optional[_Iterable[_Union[EncoderFile, _Mapping]]] = ..., bundle_sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("name", "offset", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    data: bytes
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class EncoderChunk(_message.Message):
    __slots__ = ("manifest", "chunk")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    manifest: EncoderManifest
    chunk: FileChunk
    def __init__(self, manifest: _Optional[_Union[EncoderManifest, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...
