"""What every RPC of ours shares: a refusal with its status, the accounting around the call, and requests that are
not protobuf.

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
    """The call is refused with this status and message (and trailing metadata, where the client can act on it)."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, trailers


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
        await context.abort(e.code, e.message, e.trailers)
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


class Undecodable:
    """A request message whose bytes are not the protobuf message the method takes (what DecodeGuard's deserializers give
    instead of raising); `decoded` refuses it with INVALID_ARGUMENT."""

    def __init__(self, what: str, error: Exception):
        self.message = f"the request is not a valid {what} message ({error})"


def decoded(request):
    """request, or RequestError(INVALID_ARGUMENT) when its bytes did not parse."""
    if isinstance(request, Undecodable):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, request.message)
    return request


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Gives our methods deserializers that return an Undecodable instead of raising.

    Why: bytes that are not the request message failed in grpc's own deserializer, before any servicer ran: the caller
    got UNKNOWN, the log a 7-line traceback per call (without a token too), and requests_total counted nothing. Placed
    after TokenAuth, so a caller without a token still gets UNAUTHENTICATED first."""

    def __init__(self, services: tuple[str, ...]):
        self.prefixes = tuple(f"/{s}/" for s in services)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None or not details.method.startswith(self.prefixes):
            return handler
        parse, what = handler.request_deserializer, details.method.rsplit("/", 1)[-1] + " request"

        def tolerant(data: bytes):
            try:
                return parse(data)
            except Exception as e:  # protobuf's DecodeError, and whatever a message's own checks raise
                return Undecodable(what, e)

        return handler._replace(request_deserializer=tolerant)
