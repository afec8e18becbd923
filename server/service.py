"""The FerCodec servicer: thin. Validate, hand faces to the batcher, shape the reply."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
from ferwire import MAX_FACES_METADATA
from ferwire.bitstream import FORMAT_VERSION, BitstreamError

from .batcher import Expired, Overloaded
from .engine import FaceJob, FaceOutput
from .rpc import RequestError, Undecodable, accounted, decoded

_CODES = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "precondition": grpc.StatusCode.FAILED_PRECONDITION}


def model_info(card, device: str, precisions: dict | None = None) -> pb.ModelInfo:
    """precisions: an image model's classifier_precision and synthesis_precision as the engine runs them."""
    h, w = card.face_size
    bpp = card.metrics.get("bits_per_pixel", {})
    return pb.ModelInfo(
        model_id=card.model_id,
        model_tag=card.model_tag,
        version=card.version,
        input_height=h,
        input_width=w,
        qualities=[pb.Quality(index=q, **{"lambda": lam}, mean_bits_per_pixel=float(bpp.get(str(q), 0.0))) for q, lam in enumerate(card.lambdas)],
        default_quality=card.default_quality,
        class_names=list(card.class_names),
        bitstream_version=FORMAT_VERSION,
        device=device,
        kind=card.kind,
        temperature=card.temperature,
        prior_correction=card.prior_correction,
        train_prior=list(card.train_prior),
        **(precisions or {}),
    )


class FerCodecServicer(pb_grpc.FerCodecServicer):
    def __init__(self, cards, batcher, metrics, device: str, max_faces: int, stream_window: int = 32, max_concurrent_rpcs: int | None = None,
                 precisions: dict | None = None):
        self.card, self.batcher, self.metrics, self.max_faces = cards[0], batcher, metrics, max_faces
        self.stream_window, self.max_concurrent_rpcs = stream_window, max_concurrent_rpcs
        self._active = 0  # Recognize and RecognizeStream calls admitted and not finished
        self._draining = asyncio.Event()  # set on SIGTERM: open streams stop reading, answer what they read and end
        precisions = precisions or {}  # model id -> Engine's precisions() of it
        self.info = model_info(cards[0], device, precisions.get(cards[0].model_id))
        self.info.other_models.extend(model_info(c, device, precisions.get(c.model_id)) for c in cards[1:])

    @property
    def active(self) -> int:
        """Recognize and RecognizeStream calls being served."""
        return self._active

    def drain(self) -> None:
        """Shutting down: every RecognizeStream stops reading, answers the messages it read and ends (OK), and new
        calls are refused with UNAVAILABLE (clients retry those on another replica). An open stream (`ferclient watch`
        holds one per video) otherwise held the server for the whole --grace-s, then was cut, with a traceback in the
        log after "ferserver stopped"."""
        self._draining.set()

    async def _next_message(self, request_iterator, drained: asyncio.Future):
        """The stream's next message; None at its end, or once the server drains (drained: the stream's one wait on it)."""
        if drained.done():
            return None
        message = asyncio.ensure_future(anext(request_iterator, None))
        await asyncio.wait((message, drained), return_when=asyncio.FIRST_COMPLETED)
        if message.done():
            return message.result()
        message.cancel()
        return None

    @contextlib.contextmanager
    def _admitted(self):
        """One of max_concurrent_rpcs slots for model work, or RESOURCE_EXHAUSTED.

        Counted here, not by grpc's own maximum_concurrent_rpcs: that one counts every
        call, health checks included, so under overload it refuses the liveness probes
        too and the orchestrator restarts a server that is merely busy.
        """
        if self._draining.is_set():  # answered before any model work, so the client may safely send it again
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "server is shutting down; send the call again, to another replica")
        if self.max_concurrent_rpcs and self._active >= self.max_concurrent_rpcs:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"server busy: {self._active} calls in progress (at most {self.max_concurrent_rpcs}); retry later")
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1

    async def _recognize(self, request: pb.RecognizeRequest, deadline: float | None, source=None) -> pb.RecognizeResponse:
        """source: who the batcher lets take turns with other callers (a stream's messages share one; None: this call)."""
        n = len(decoded(request).faces)
        if n == 0:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "request has no faces")
        if n > self.max_faces:
            # the limit as trailing metadata too: a client sending more per request (ferclient: 32) splits and sends again
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request has {n} faces; at most {self.max_faces} per request",
                               ((MAX_FACES_METADATA, str(self.max_faces)),))
        if request.unchanged_faces:
            self.metrics.faces_unchanged.inc(request.unchanged_faces)
        for data in request.faces:
            self.metrics.bitstream_bytes.observe(len(data))
        try:
            results = await self.batcher.submit([FaceJob(bytes(d), request.return_reconstruction) for d in request.faces], deadline, source)
        except Overloaded as e:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        except Expired as e:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)) from None
        for i, r in enumerate(results):
            if isinstance(r, BitstreamError):
                self.metrics.faces_rejected.labels(r.kind).inc()
                raise RequestError(_CODES[r.kind], f"face {i}: {r}")
            if isinstance(r, Expired):
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, f"face {i}: {r}")
            if not isinstance(r, FaceOutput):
                raise RequestError(grpc.StatusCode.INTERNAL, f"face {i}: internal error in model code; see the server log")
        reply = pb.RecognizeResponse(request_id=request.request_id, model_id=self.card.model_id)
        for r in results:
            self.metrics.predictions.labels(r.label).inc()
            self.metrics.bits_per_pixel.observe(r.bits_per_pixel)
            reply.results.add(label=r.label, confidence=r.confidence, probabilities=r.probabilities, reconstruction_png=r.reconstruction_png, quality=r.quality, bitstream_bytes=r.bitstream_bytes, bits_per_pixel=r.bits_per_pixel, model_id=r.model_id)
        return reply

    async def Recognize(self, request, context):
        async with accounted("Recognize", context, self.metrics):
            with self._admitted():
                return await self._recognize(request, _deadline(context))

    async def GetModelInfo(self, request, context):
        async with accounted("GetModelInfo", context, self.metrics):
            decoded(request)  # bytes that are not a GetModelInfoRequest are refused, as every method refuses them
            return self.info

    async def _stream_reply(self, request: pb.RecognizeRequest, deadline: float | None, source: "_Stream") -> pb.RecognizeResponse:
        """One stream message's answer: a bad or refused message gets `error` and the stream goes on (its next message
        waits REFUSED_PAUSE_S when this one was refused for overload)."""
        try:
            return await self._recognize(request, deadline, source)
        except RequestError as e:
            most = int(dict(e.trailers).get(MAX_FACES_METADATA, 0))
            if e.code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # too many faces too: a stream sending such regardless must
                source.resume_at = time.monotonic() + REFUSED_PAUSE_S  # not keep the event loop refusing it
            self.metrics.requests.labels("RecognizeStream.message", e.code.name).inc()
            request_id = "" if isinstance(request, Undecodable) else request.request_id
            return pb.RecognizeResponse(request_id=request_id, model_id=self.card.model_id, error=pb.Error(code=e.code.value[0], message=e.message, max_faces=most))

    async def RecognizeStream(self, request_iterator, context):
        """One response per request, in order, up to stream_window of them worked on at once.

        The server reads a message only while fewer than stream_window are
        unanswered (read, response not yet sent), so a client that writes without
        reading is held back by HTTP/2 flow control instead of growing server memory.
        """
        async with accounted("RecognizeStream", context, self.metrics):
            self.metrics.streams_active.inc()
            slots = asyncio.Semaphore(self.stream_window)
            replies: asyncio.Queue = asyncio.Queue()  # answer tasks in arrival order, then None; at most stream_window + 1
            reader = None
            try:
                with self._admitted():
                    deadline, source = _deadline(context), _Stream()  # the stream's messages take one turn among callers

                    async def read() -> None:
                        drained = asyncio.ensure_future(self._draining.wait())  # one per stream, not one per message
                        try:
                            while True:
                                await slots.acquire()
                                request = await self._next_message(request_iterator, drained)  # meanwhile the last reply task runs
                                if request is None:
                                    return
                                pause = source.resume_at - time.monotonic()
                                if pause > 0:  # a message before it was refused for overload
                                    await asyncio.wait((drained,), timeout=pause)
                                replies.put_nowait(asyncio.ensure_future(self._stream_reply(request, deadline, source)))
                        finally:
                            drained.cancel()
                            replies.put_nowait(None)

                    reader = asyncio.ensure_future(read())
                    while (task := await replies.get()) is not None:
                        yield await task
                        slots.release()
                    await reader  # the request stream's own failure, if any
            finally:
                if reader is not None:
                    reader.cancel()
                while not replies.empty():
                    task = replies.get_nowait()
                    if task is not None:
                        task.cancel()
                self.metrics.streams_active.dec()


# A stream whose message was refused for overload has its next message worked on (and so the one after it read) only
# after this pause. Refusals are answered at once, so a client writing 64-face messages regardless kept the event loop
# busy refusing them (8 such streams against a 64-face queue: about 1,300 messages a second), and a one-face call from
# elsewhere waited 0.7 s for the loop.
REFUSED_PAUSE_S = 0.1


class _Stream:
    """A RecognizeStream as the batcher's source (its messages take one turn among callers), and when it may be read again."""

    resume_at = 0.0


def _deadline(context) -> float | None:
    """The call's deadline on the time.monotonic() clock; None when the caller set none."""
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left
