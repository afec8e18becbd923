"""fercodec bitstream, format version 2 (docs/bitstream.md is the spec).

Imports numpy, zlib and constriction only (or, without constriction, ferwire.rangecoder to encode): the edge client encodes with it and
the server decodes with it, so both ends run the very same integer code.

    byte 0        version (high nibble) | quality index (low nibble)
    bytes 1-2     model tag, uint16 big-endian (refuses faces encoded for another model)
    bytes 3-5     CRC-32 of (bytes 0-2 + symbols as int32 LE), low 24 bits
    rest          range-coded symbols (context-adaptive tables, entropy.py), then escaped values;
                  zero-padded to 4 bytes by the decoder

Framing: 6 bytes (0.021 bpp at 48x48). The face size is the model's (the tag
names the model), so it is not sent. The checksum covers the decoded symbols,
so a corrupted payload or a desynchronised decode is caught, not returned as garbage.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

from .entropy import ACTIVITY_CAP, ConstantRun, EntropyTables

FORMAT_VERSION = 2
CRC_BYTES = 3
HEADER_BYTES = 1 + 2 + CRC_BYTES
_ESCAPE_BITS = 22  # escaped symbols are clipped to +-2^20 (entropy.ESCAPE_LIMIT)


class BitstreamError(ValueError):
    """A bitstream the decoder refuses. `kind` maps to a gRPC status on the server."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind  # "invalid" | "precondition"


@dataclass(frozen=True)
class Header:
    version: int
    quality: int
    model_tag: int


def _header_bytes(quality: int, model_tag: int) -> bytes:
    return bytes([(FORMAT_VERSION << 4) | quality]) + model_tag.to_bytes(2, "big")


def _checksum(head: bytes, idx: np.ndarray) -> bytes:
    crc = zlib.crc32(idx.astype("<i4").tobytes(), zlib.crc32(head))
    return (crc & 0xFFFFFF).to_bytes(CRC_BYTES, "big")


def _escape_code(idx: int, length: int) -> int:
    """Out-of-range index -> non-negative integer (zig-zag around the table), as CompressAI does."""
    return -2 * idx - 1 if idx < 0 else 2 * (idx - length)


def _escape_value(code: int, length: int) -> int:
    return -(code + 1) // 2 if code % 2 else code // 2 + length


def _range_code(z: np.ndarray, tables: EntropyTables, q: int, merge_runs: bool = True) -> bytes:
    """Symbols [M,h,w] of quality q -> the range coder's words. merge_runs=False codes group by group: the same bits
    (tests/wire), in more calls."""
    enc = _encoder()
    symbols = z.reshape(tables.channels, -1).astype(np.int64)
    activity = np.zeros(tables.positions, np.int64)
    escapes = []
    for step in tables.steps(q) if merge_runs else tables.plan(q):
        if isinstance(step, ConstantRun):
            if (symbols[step.merged.channels] == step.merged.lo).all():  # nothing escapes: the whole run in one call
                enc.encode_categorical(np.zeros(len(step.merged.channels) * tables.positions, np.int32), tables.context_rows(step.merged, activity))
                activity += step.added
                continue
            groups = step.groups
        else:
            groups = (step,)
        for g in groups:
            zg = symbols[g.channels]
            coded = zg - g.lo
            out = (coded < 0) | (coded >= g.width)
            if out.any():  # row-major within the group: the order the decoder meets them in
                escapes += [_escape_code(v, n) for v, n in zip(coded[out].tolist(), np.broadcast_to(g.width, coded.shape)[out].tolist())]
                coded = np.where(out, g.width, coded)
            enc.encode_categorical(coded.ravel().astype(np.int32), tables.context_rows(g, activity))
            activity += np.where(out, ACTIVITY_CAP, np.minimum(np.abs(zg), ACTIVITY_CAP)).sum(0)
    # Escaped values follow all channels, Elias-gamma style: bit count, then the bits.
    for code in escapes:
        k = (code + 1).bit_length()
        enc.encode_uniform(k - 1, _ESCAPE_BITS)
        if k > 1:
            enc.encode_uniform(code + 1 - (1 << (k - 1)), 1 << (k - 1))
    return enc.get_compressed().astype("<u4").tobytes()


@functools.lru_cache(maxsize=None)
def has_constriction() -> bool:
    """Whether constriction is installed: it has no wheel for ARM Linux, where the client encodes with
    ferwire.rangecoder instead (the same words) and the server cannot run."""
    try:
        import constriction  # noqa: F401
    except ImportError:
        return False
    return True


class _ConstrictionEncoder:
    """constriction's RangeEncoder behind ferwire.rangecoder.RangeEncoder's methods."""

    def __init__(self):
        import constriction

        self._model, self._uniform = constriction.stream.model.Categorical(perfect=False), constriction.stream.model.Uniform
        self._enc = constriction.stream.queue.RangeEncoder()

    def encode_categorical(self, symbols: np.ndarray, rows: np.ndarray) -> None:
        self._enc.encode(symbols, self._model, rows)

    def encode_uniform(self, symbol: int, size: int) -> None:
        self._enc.encode(np.array([symbol], np.int32), self._uniform(size))

    def get_compressed(self) -> np.ndarray:
        return self._enc.get_compressed()


def _encoder():
    if has_constriction():
        return _ConstrictionEncoder()
    from .rangecoder import RangeEncoder

    return RangeEncoder()


def _range_decode_many(payloads: list[bytes], tables: EntropyTables, q: int, merge_runs: bool = True,
                       guess_final_run: bool = False) -> list[np.ndarray | Exception]:
    """Range-decode payloads of quality q -> symbols [M,h,w] per payload, or the exception its decoding raised.

    The faces step through the coding plan in lockstep: one context computation per step for all of them. Each face's
    symbols are what decoding it alone gives; a payload that fails fails alone. A constant run (ferwire.entropy.ConstantRun)
    is decoded in one call on the guess that none of its symbols escapes; a face for which one does is decoded again,
    group by group (merge_runs=False).

    guess_final_run: where the plan ends with a constant run, a face with no escape before it is not decoded further:
    its run is taken to be all regular symbols. Nothing follows the run in such a stream but what the coder flushed,
    so only the checksum can tell a wrong guess; the caller must check it and decode again without the guess
    (decode_many does). Why: the run is 2,304 of a face's 3,456 symbols at q5 and carries 0.05 bits on average, and no
    run of 2,000 val faces escaped at any quality (scripts/entropy_stats.py); decoding it was about 40 % of the range
    decoder's time per face."""
    import constriction

    categorical, uniform = constriction.stream.model.Categorical(perfect=False), constriction.stream.model.Uniform
    n = len(payloads)
    decoders = [constriction.stream.queue.RangeDecoder(np.frombuffer(p + b"\0" * ((-len(p)) % 4), dtype="<u4").astype(np.uint32)) for p in payloads]
    z = np.empty((n, tables.channels, tables.positions), np.int64)
    activity = np.zeros((n, tables.positions), np.int64)
    escaped: list[list] = [[] for _ in range(n)]
    failed: dict[int, Exception] = {}  # a failed face decodes nothing more; its rows stay zero and are never returned
    again: list[int] = []  # faces whose constant run escaped: decoded group by group below

    def decode_each(rows: np.ndarray, symbols: int, skip: frozenset = frozenset()) -> np.ndarray:
        """rows: [faces, symbols, bins], or [symbols, bins] the same for every face. Faces in skip decode nothing (zeros)."""
        coded = np.zeros((n, symbols), np.int64)
        for i, dec in enumerate(decoders):
            if i not in failed and i not in skip:
                try:
                    coded[i] = dec.decode(categorical, rows if rows.ndim == 2 else rows[i])
                except Exception as e:  # constriction refuses some corrupt payloads outright
                    failed[i] = e
        return coded

    steps = tables.steps(q) if merge_runs else tables.plan(q)
    for step in steps:
        if isinstance(step, ConstantRun):
            guessed = frozenset(i for i in range(n) if not escaped[i]) if guess_final_run and step is steps[-1] else frozenset()
            if len(guessed) == n:  # every face's run guessed: no rows to gather
                z[:, step.merged.channels] = step.merged.lo
                activity += step.added
                continue
            coded = decode_each(tables.context_rows(step.merged, activity), len(step.merged.channels) * tables.positions, guessed)
            for i in np.flatnonzero(coded.any(1)):
                if i not in failed:
                    again.append(int(i))
                    failed[int(i)] = RuntimeError("decoded group by group")  # stops decoding it here
            z[:, step.merged.channels] = step.merged.lo
            activity += step.added
            continue
        g = step
        coded = decode_each(tables.context_rows(g, activity), len(g.channels) * tables.positions).reshape(n, len(g.channels), -1)
        activity += g.contribution[np.arange(len(g.channels))[:, None], coded].sum(1)
        z[:, g.channels] = coded + g.lo
        esc = coded == g.width
        if esc.any():
            for i in np.flatnonzero(esc.any((1, 2))):
                escaped[i].append((g, esc[i]))
    redone = dict(zip(again, _range_decode_many([payloads[i] for i in again], tables, q, merge_runs=False))) if again else {}
    out: list = []
    for i, dec in enumerate(decoders):
        try:
            if i in redone:
                out.append(redone[i])
                continue
            if i in failed:
                raise failed[i]
            _decode_escapes(dec, z[i], escaped[i], uniform)
            out.append(z[i].astype(np.int32).reshape(tables.latent_shape))
        except Exception as e:
            out.append(e)
    return out


def _decode_escapes(dec, z: np.ndarray, escaped: list, uniform) -> None:
    """Fill z [channels, positions] where its groups escaped (escaped: (group, mask), in coding order) from what follows them in dec."""
    for g, out in escaped:
        values = []
        for n in np.broadcast_to(g.width, out.shape)[out].tolist():
            k = int(dec.decode(uniform(_ESCAPE_BITS), 1)[0]) + 1
            code = (1 << (k - 1)) + (int(dec.decode(uniform(1 << (k - 1)), 1)[0]) if k > 1 else 0) - 1
            values.append(_escape_value(code, n))
        rows = z[g.channels]
        rows[out] = np.array(values) + np.broadcast_to(g.lo, out.shape)[out]
        z[g.channels] = rows


def encode(y: np.ndarray, q: int, tables: EntropyTables, model_tag: int) -> bytes:
    """Analysis output y [M, h, w] -> one self-describing bitstream."""
    if not 0 <= q < tables.num_qualities:
        raise BitstreamError(f"quality {q} out of range 0..{tables.num_qualities - 1}")
    z = tables.symbols(y, q)
    payload = _range_code(z, tables, q)
    # The range coder emits whole 32-bit words; drop the most trailing bytes (3, 2 or 1)
    # with which the zero-padded stream still decodes to the same symbols (checked here,
    # so the server's identical decoder cannot disagree). The three candidates are decoded
    # together: most of the edge's encoding time was these checks, one after another.
    # Without constriction (ferwire.rangecoder) there is no decoder to check with: whole words, 0.015 bytes a face more on
    # average (scripts/rangecoder_bench.py).
    cuts = [c for c in (3, 2, 1) if len(payload) >= c] if has_constriction() else []
    for cut, got in zip(cuts, _range_decode_many([payload[:-c] for c in cuts], tables, q) if cuts else []):
        if not isinstance(got, Exception) and np.array_equal(got, z):  # constriction refuses some shortened payloads outright
            payload = payload[:-cut]
            break
    head = _header_bytes(q, model_tag)
    return head + _checksum(head, z) + payload


def parse_header(data: bytes) -> Header:
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"bitstream truncated: {len(data)} bytes, a header needs {HEADER_BYTES}")
    version, quality = data[0] >> 4, data[0] & 0x0F
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported bitstream format version {version} (this server reads version {FORMAT_VERSION}); update the client")
    return Header(version, quality, int.from_bytes(data[1:3], "big"))


def decode(data: bytes, tables: EntropyTables, model_tag: int) -> tuple[Header, np.ndarray]:
    """Bitstream -> (header, symbols [M,h,w]). Raises BitstreamError, never returns unchecked symbols."""
    (result,) = decode_many([data], tables, model_tag)
    if isinstance(result, BitstreamError):
        raise result
    return result


def _header_for(data: bytes, tables: EntropyTables, model_tag: int) -> Header:
    h = parse_header(data)
    if h.model_tag != model_tag:
        raise BitstreamError(f"face encoded for model tag {h.model_tag:#06x}, this server runs {model_tag:#06x}; update the client's model", "precondition")
    if h.quality >= tables.num_qualities:
        raise BitstreamError(f"unknown quality {h.quality}: this model has qualities 0..{tables.num_qualities - 1}")
    return h


def _checked(data: bytes, z: np.ndarray) -> np.ndarray:
    if _checksum(data[: HEADER_BYTES - CRC_BYTES], z) != data[HEADER_BYTES - CRC_BYTES : HEADER_BYTES]:
        raise BitstreamError("checksum mismatch: the bitstream is corrupted or does not belong to these tables")
    return z


def decode_many(items: list[bytes], tables: EntropyTables, model_tag: int) -> list[tuple[Header, np.ndarray] | BitstreamError]:
    """decode() of each bitstream, in order: (header, symbols) or the BitstreamError decode() would raise.

    Why: decoding a face was mostly Python and numpy work per coding step, not the range coder (profiled when this
    was written: 0.8 ms per image-codec face, a quarter of it in constriction). Faces of one quality step through the
    coding plan together, so that work is paid once per batch; the server's batches are the use. Since constant runs
    and shared first rows (ferwire.entropy), most of what is left is inside constriction; a final constant run is guessed,
    not decoded, and checked by the checksum (_range_decode_many; scripts/entropy_stats.py: 0.148 -> 0.083 ms per face
    in a batch of 32 at q5).
    """
    out: list = [None] * len(items)
    by_quality: dict[int, list[int]] = {}
    for i, data in enumerate(items):
        try:
            by_quality.setdefault(_header_for(data, tables, model_tag).quality, []).append(i)
        except BitstreamError as e:
            out[i] = e
    for q, idx in by_quality.items():
        retry = []  # checksum mismatches after the final-run guess: a run that escaped, or a corrupt payload
        for i, z in zip(idx, _range_decode_many([items[i][HEADER_BYTES:] for i in idx], tables, q, guess_final_run=True)):
            _settle(out, i, items[i], z, q, model_tag, retry)
        if retry:
            for i, z in zip(retry, _range_decode_many([items[i][HEADER_BYTES:] for i in retry], tables, q)):
                _settle(out, i, items[i], z, q, model_tag, None)
    return out


def _settle(out: list, i: int, data: bytes, z, q: int, model_tag: int, retry: list | None) -> None:
    """out[i] = (header, checked symbols) or the BitstreamError; a checksum mismatch goes to retry when one is given."""
    if isinstance(z, Exception):  # constriction refuses some corrupt payloads outright
        out[i] = BitstreamError(f"payload cannot be entropy-decoded ({z})")
        return
    try:
        out[i] = (Header(FORMAT_VERSION, q, model_tag), _checked(data, z))
    except BitstreamError as e:
        if retry is None:
            out[i] = e
        else:
            retry.append(i)
