"""fercodec bitstream, format version 1 (docs/bitstream.md is the spec).

Imports numpy, zlib and constriction only: the edge client encodes with it and
the server decodes with it, so both ends run the very same integer code.

    byte 0        version (high nibble) | quality index (low nibble)
    bytes 1-2     model tag, uint16 big-endian (refuses faces encoded for another model)
    bytes 3..     face height, face width: unsigned LEB128 varints (1 byte each below 128)
    next 3 bytes  CRC-32 of (header bytes + symbol indices as int32 LE), low 24 bits
    rest          range-coded symbols, channel-major, then escaped values; zero-padded to 4 bytes by the decoder

Framing at 48x48: 8 bytes (0.028 bpp). The checksum covers the decoded symbols,
so a corrupted payload or a desynchronised decode is caught, not returned as garbage.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
CRC_BYTES = 3
MAX_SIDE = 1024  # larger declared sides are refused before anything is allocated
ESCAPE_LIMIT = 1 << 20  # escaped indices are clipped to +-this; 22 bypass bits at most
_ESCAPE_BITS = 22


class BitstreamError(ValueError):
    """A bitstream the decoder refuses. `kind` maps to a gRPC status on the server."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind  # "invalid" | "precondition" | "exhausted"


@dataclass(frozen=True)
class Header:
    version: int
    quality: int
    model_tag: int
    height: int
    width: int
    size: int  # header bytes, checksum included


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for _ in range(3):  # 21 bits is far above MAX_SIDE; longer is malformed
        if pos >= len(data):
            raise BitstreamError("bitstream truncated inside the header")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos
    raise BitstreamError("malformed size field in the header")


class EntropyTables:
    """Per-quality gains, medians and integer pmfs exported by FaceCodec.entropy_tables()."""

    def __init__(self, arrays: dict[str, np.ndarray], stride: int = 8):
        self.gain = np.asarray(arrays["gain"], np.float32)
        self.inv_gain = np.asarray(arrays["inv_gain"], np.float32)
        self.medians = np.asarray(arrays["medians"], np.float32)
        self.offsets = np.asarray(arrays["offsets"], np.int32)
        self.lengths = np.asarray(arrays["lengths"], np.int32)
        self.pmf = np.asarray(arrays["pmf"], np.uint32)
        self.stride = stride
        self.num_qualities, self.channels = self.gain.shape
        self._models: dict[int, list] = {}

    @classmethod
    def load(cls, path: str | Path) -> "EntropyTables":
        with np.load(path) as z:
            return cls({k: z[k] for k in z.files})

    def models(self, q: int) -> list:
        """constriction models per channel (regular bins + escape bin), built once per quality."""
        if q not in self._models:
            import constriction

            cat = constriction.stream.model.Categorical
            self._models[q] = [cat(self.pmf[q, c, : int(self.lengths[q, c]) + 1].astype(np.float64), perfect=False) for c in range(self.channels)]
        return self._models[q]

    def quantize(self, y: np.ndarray, q: int) -> np.ndarray:
        """Analysis output [M,h,w] -> symbol indices (int32; outside 0..length-1 they are escaped)."""
        g, med, off = self.gain[q][:, None, None], self.medians[q][:, None, None], self.offsets[q][:, None, None]
        idx = np.rint(y * g - med) - off
        return np.clip(idx, -ESCAPE_LIMIT, ESCAPE_LIMIT).astype(np.int32)

    def dequantize(self, idx: np.ndarray, q: int) -> np.ndarray:
        """Symbol indices [..., M,h,w] -> latent in the gain domain (what synthesis takes)."""
        return (idx + self.offsets[q][:, None, None]).astype(np.float32) + self.medians[q][:, None, None]


def _header_bytes(quality: int, model_tag: int, height: int, width: int) -> bytes:
    return bytes([(FORMAT_VERSION << 4) | quality]) + model_tag.to_bytes(2, "big") + _varint(height) + _varint(width)


def _checksum(head: bytes, idx: np.ndarray) -> bytes:
    crc = zlib.crc32(idx.astype("<i4").tobytes(), zlib.crc32(head))
    return (crc & 0xFFFFFF).to_bytes(CRC_BYTES, "big")


def _escape_code(idx: int, length: int) -> int:
    """Out-of-range index -> non-negative integer (zig-zag around the table), as CompressAI does."""
    return -2 * idx - 1 if idx < 0 else 2 * (idx - length)


def _escape_value(code: int, length: int) -> int:
    return -(code + 1) // 2 if code % 2 else code // 2 + length


def _range_code(idx: np.ndarray, tables: "EntropyTables", q: int) -> bytes:
    import constriction

    uniform = constriction.stream.model.Uniform
    enc = constriction.stream.queue.RangeEncoder()
    lengths = tables.lengths[q]
    escapes = []
    for c, model in enumerate(tables.models(q)):
        sym = idx[c].reshape(-1)
        n = int(lengths[c])
        out = (sym < 0) | (sym >= n)
        if out.any():
            escapes += [_escape_code(int(v), n) for v in sym[out]]
            sym = np.where(out, n, sym)
        enc.encode(sym.astype(np.int32), model)
    # Escaped values follow all channels, Elias-gamma style: bit count, then the bits.
    for code in escapes:
        k = (code + 1).bit_length()
        enc.encode(np.array([k - 1], np.int32), uniform(_ESCAPE_BITS))
        if k > 1:
            enc.encode(np.array([code + 1 - (1 << (k - 1))], np.int32), uniform(1 << (k - 1)))
    return enc.get_compressed().tobytes()


def _range_decode(payload: bytes, tables: "EntropyTables", q: int, shape: tuple[int, int, int]) -> np.ndarray:
    import constriction

    uniform = constriction.stream.model.Uniform
    pad = (-len(payload)) % 4
    words = np.frombuffer(payload + b"\0" * pad, dtype="<u4").astype(np.uint32)
    dec = constriction.stream.queue.RangeDecoder(words)
    m, h, w = shape
    out = np.zeros((m, h * w), np.int32)
    lengths = tables.lengths[q]
    for c, model in enumerate(tables.models(q)):
        out[c] = dec.decode(model, h * w)
    for c, j in zip(*np.nonzero(out == lengths[:, None])):
        k = int(dec.decode(uniform(_ESCAPE_BITS), 1)[0]) + 1
        code = (1 << (k - 1)) + (int(dec.decode(uniform(1 << (k - 1)), 1)[0]) if k > 1 else 0) - 1
        out[c, j] = _escape_value(code, int(lengths[c]))
    return out.reshape(shape)


def encode(y: np.ndarray, q: int, tables: EntropyTables, model_tag: int, height: int, width: int) -> bytes:
    """Analysis output y [M, height/stride, width/stride] -> one self-describing bitstream."""
    if not 0 <= q < tables.num_qualities:
        raise BitstreamError(f"quality {q} out of range 0..{tables.num_qualities - 1}")
    idx = tables.quantize(y, q)
    payload = _range_code(idx, tables, q)
    # The range coder emits whole 32-bit words; drop trailing bytes whenever the
    # zero-padded stream still decodes to the same symbols (checked here, so the
    # server's identical decoder cannot disagree).
    for cut in (3, 2, 1):
        if len(payload) >= cut and _decodes_to(payload[:-cut], tables, q, idx):
            payload = payload[:-cut]
            break
    head = _header_bytes(q, model_tag, height, width)
    return head + _checksum(head, idx) + payload


def _decodes_to(payload: bytes, tables: EntropyTables, q: int, idx: np.ndarray) -> bool:
    try:
        return np.array_equal(_range_decode(payload, tables, q, idx.shape), idx)
    except Exception:  # constriction refuses some shortened payloads outright
        return False


def parse_header(data: bytes) -> Header:
    if len(data) < 1 + 2 + 2 + CRC_BYTES:
        raise BitstreamError(f"bitstream truncated: {len(data)} bytes, a header needs at least {1 + 2 + 2 + CRC_BYTES}")
    version, quality = data[0] >> 4, data[0] & 0x0F
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported bitstream format version {version} (this server reads version {FORMAT_VERSION})")
    tag = int.from_bytes(data[1:3], "big")
    height, pos = _read_varint(data, 3)
    width, pos = _read_varint(data, pos)
    if pos + CRC_BYTES > len(data):
        raise BitstreamError("bitstream truncated inside the header")
    return Header(version, quality, tag, height, width, pos + CRC_BYTES)


def decode(data: bytes, tables: EntropyTables, model_tag: int, face_size: tuple[int, int]) -> tuple[Header, np.ndarray]:
    """Bitstream -> (header, symbol indices [M,h,w]). Raises BitstreamError, never returns unchecked symbols."""
    h = parse_header(data)
    if h.model_tag != model_tag:
        raise BitstreamError(f"face encoded for model tag {h.model_tag:#06x}, this server runs {model_tag:#06x}; update the client's model", "precondition")
    if h.quality >= tables.num_qualities:
        raise BitstreamError(f"unknown quality {h.quality}: this model has qualities 0..{tables.num_qualities - 1}")
    if max(h.height, h.width) > MAX_SIDE:
        raise BitstreamError(f"header declares a {h.height}x{h.width} face, larger than the {MAX_SIDE}x{MAX_SIDE} limit", "exhausted")
    if (h.height, h.width) != tuple(face_size):
        raise BitstreamError(f"header declares a {h.height}x{h.width} face; this model takes {face_size[0]}x{face_size[1]}")
    shape = (tables.channels, h.height // tables.stride, h.width // tables.stride)
    try:
        idx = _range_decode(data[h.size :], tables, h.quality, shape)
    except Exception as e:  # constriction refuses some corrupt payloads outright
        raise BitstreamError(f"payload cannot be entropy-decoded ({e})") from None
    if _checksum(data[: h.size - CRC_BYTES], idx) != data[h.size - CRC_BYTES : h.size]:
        raise BitstreamError("checksum mismatch: the bitstream is corrupted or does not belong to these tables")
    return h, idx
