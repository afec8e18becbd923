"""What every RPC of ours shares: a refusal with its status, and the accounting around the call.

One place, so that each servicer maps errors the same way: a RequestError aborts with its own code
and message, a cancelled call counts as CANCELLED, anything else is a bug: logged, INTERNAL, with no
detail sent to the caller. Torch-free (the encoder repository uses it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc

log = logging.getLogger("ferserver")


class RequestError(Exception):
    """The call is refused with this status and message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@contextlib.asynccontextmanager
async def accounted(method: str, context, metrics=None):
    """Around one RPC's work: in flight while it runs, then counted by status code and timed (metrics may be None)."""
    code, t0 = grpc.StatusCode.OK, time.perf_counter()
    if metrics:
        metrics.inflight.inc()
    try:
        yield
    except RequestError as e:
        code = e.code
        await context.abort(e.code, e.message)
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        code = grpc.StatusCode.INTERNAL
        log.exception("%s failed", method)
        await context.abort(code, "internal error; see the server log")
    finally:
        if metrics:
            metrics.inflight.dec()
            metrics.requests.labels(method, code.name).inc()
            metrics.request_seconds.labels(method).observe(time.perf_counter() - t0)
