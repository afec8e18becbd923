"""Thousands of random and mutated bitstreams against a running server; then a good face still works."""

from __future__ import annotations

import grpc
import numpy as np

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
from ferwire.bitstream import HEADER_BYTES

from ..conftest import encode_faces

ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}


APPEND = 2  # junk after the last word the decoder reads: harmless by design (docs/bitstream.md)
# The same symbols can get slightly different probabilities in another batch: on a 2-core AMD EPYC (2026-12-06) oneDNN's
# bfloat16 synthesis and the int8 classifier round differently by batch size and a face's place in it (up to 0.006 here,
# the symbols identical). On the Intel Xeon VMs before, answers were the same to 1e-4.
BATCH_ROUNDING = 0.02


def _top_two_gap(p) -> float:
    a, b = sorted(p)[-2:]
    return b - a


def _mutate(rng, s: bytes) -> tuple[bytes, int]:
    b = bytearray(s)
    op = int(rng.integers(0, 5))
    if op == 0:  # flip bits anywhere
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(0, len(b))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif op == 1:  # truncate
        b = b[: rng.integers(0, len(b))]
    elif op == APPEND:  # append junk
        b += rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
    elif op == 3:  # overwrite the payload with random bytes
        b[HEADER_BYTES:] = rng.integers(0, 256, max(0, len(b) - HEADER_BYTES), dtype=np.uint8).tobytes()
    else:  # swap in another face's payload under this header
        b = b[:HEADER_BYTES] + bytes(reversed(b[HEADER_BYTES:]))
    return bytes(b), op


def test_random_and_mutated_bitstreams(server, card, fer_test):
    rng = np.random.default_rng(1234)
    faces = fer_test[0][:50]
    good = encode_faces(faces, card.default_quality)
    with grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.FerCodecStub(ch)
        truth = [stub.Recognize(pb.RecognizeRequest(faces=[s]), timeout=10).results[0] for s in good]
        cases = [rng.integers(0, 256, rng.integers(0, 300), dtype=np.uint8).tobytes() for _ in range(1000)]
        origin, ops = [None] * len(cases), [None] * len(cases)
        for k in range(2000):
            j = k % len(good)
            case, op = _mutate(rng, good[j])
            cases.append(case)
            origin.append(j)
            ops.append(op)
        # 100 in flight at a time: overload is tests/server/test_overload.py's subject, not this one's.
        futures = []
        for k in range(0, len(cases), 100):
            batch = [stub.Recognize.future(pb.RecognizeRequest(faces=[c]), timeout=30) for c in cases[k : k + 100]]
            for f in batch:
                f.exception()
            futures += batch
        accepted = {op: 0 for op in range(5)}
        for c, j, op, f in zip(cases, origin, ops, futures):
            try:
                r = f.result().results[0]
            except grpc.RpcError as e:
                assert e.code() in ALLOWED, (e.code(), e.details())
                assert e.details().startswith("face 0: ")
                continue
            # Accepted only if the decoder recovered exactly the original symbols
            # (a mutation in bytes it never reads): then the answer is the true one,
            # up to the networks' rounding, which on some CPUs depends on the batch.
            assert j is not None, f"random bytes accepted: {c!r}"
            assert r.label == truth[j].label or _top_two_gap(truth[j].probabilities) < 2 * BATCH_ROUNDING
            np.testing.assert_allclose(r.probabilities, truth[j].probabilities, atol=BATCH_ROUNDING)
            accepted[op] += 1
        # Damage inside the payload is caught (CRC over the decoded symbols) unless
        # it hit bytes the decoder never reads; those cases answered exactly as above.
        others = sum(1 for op in ops if op is not None and op != APPEND)
        assert sum(n for op, n in accepted.items() if op != APPEND) < 0.05 * others, accepted
        again = stub.Recognize(pb.RecognizeRequest(faces=good[:3]), timeout=10)
        assert [r.label for r in again.results] == [t.label for t in truth[:3]]
