"""Prometheus metrics, one registry per server (so tests can run several in one process), and the page that serves them."""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, Info, ProcessCollector, make_wsgi_app

HANDSHAKE_S = 10.0  # a TLS handshake not done by then is dropped
IDLE_S = 30.0  # a connection that sends nothing this long is closed

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter("fercodec_requests", "RPCs handled, by method and gRPC status code", ["method", "code"], registry=r)
        self.request_seconds = Histogram("fercodec_request_duration_seconds", "RPC latency, by method", ["method"], buckets=_LATENCY, registry=r)
        self.stage_seconds = Histogram("fercodec_stage_duration_seconds", "Time per batch in each model stage", ["stage"], buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("fercodec_batch_size_faces", "Faces per model batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.bitstream_bytes = Histogram("fercodec_bitstream_bytes", "Bytes per received face bitstream", buckets=(16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024), registry=r)
        self.bits_per_pixel = Histogram("fercodec_bits_per_pixel", "Bits per pixel per received face", buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2, 2.0), registry=r)
        self.predictions = Counter("fercodec_predictions", "Faces classified, by predicted label", ["label"], registry=r)
        self.faces_rejected = Counter("fercodec_faces_rejected", "Face bitstreams refused, by reason", ["reason"], registry=r)
        self.queued_faces = Gauge("fercodec_queued_faces", "Faces waiting for the model worker (the autoscaling signal)", registry=r)
        self.faces_shed = Counter("fercodec_faces_shed", "Faces refused or dropped before model work, by reason", ["reason"], registry=r)
        self.faces_unchanged = Counter("fercodec_faces_unchanged", "Faces an edge tracked but did not send because they had not changed", registry=r)
        self.streams_active = Gauge("fercodec_streams_active", "RecognizeStream calls open now (ferclient watch holds one per video)", registry=r)
        self.inflight = Gauge("fercodec_inflight_requests", "RPCs being handled now", registry=r)
        self.model = Info("fercodec_model", "The models this server runs (comma-separated, first leads)", registry=r)
        self.gc_frozen = Gauge("fercodec_gc_frozen_objects", "Objects loaded at start (torch, the models, grpc) that the garbage collector no longer walks (gc.freeze)", registry=r)
        # Every reason at 0 from the start: a series that appears only with its first event makes rate() and alerts blind
        # to that first event, and an operator reading the page cannot tell "none yet" from "not measured".
        for reason in ("invalid", "precondition"):  # ferwire.bitstream.BitstreamError.kind
            self.faces_rejected.labels(reason)
        for reason in ("queue_full", "deadline", "expired", "cancelled"):  # ferserver.batcher's sheds
            self.faces_shed.labels(reason)
        # What the default registry would give: process_* (CPU seconds, resident memory, open files) and python_gc_*.
        ProcessCollector(registry=r)
        GCCollector(registry=r)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # a scrape every 15 s is not news
        pass


def serve_page(registry: CollectorRegistry, host: str, port: int, tls: Callable[[], object] | None = None) -> WSGIServer:
    """The metrics page on host:port, served by a daemon thread; a thread per connection. tls() gives the SSLContext in
    force (None: plain HTTP), read for each connection, so a renewed certificate serves the next scrape.

    Why not prometheus_client's start_http_server(certfile=...): it wraps the listening socket, so every TLS handshake
    ran in its one accept loop, and one idle TCP connection, no certificate needed, stopped every scrape until it closed.
    Here the handshake runs on the connection's own thread, with a deadline."""

    family, *_, where = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

        def finish_request(self, request, client_address) -> None:
            request.settimeout(HANDSHAKE_S)
            ctx = tls() if tls else None
            if ctx is not None:
                try:
                    request = ctx.wrap_socket(request, server_side=True)
                except OSError:  # no handshake in time, no client certificate, not TLS at all
                    return
            request.settimeout(IDLE_S)
            try:
                super().finish_request(request, client_address)
            finally:
                if ctx is not None:
                    self.shutdown_request(request)  # the wrapped socket; ThreadingMixIn closes the one it accepted

        def handle_error(self, request, client_address) -> None:  # a scraper that went away mid-answer
            pass

    httpd = make_server(where[0], port, make_wsgi_app(registry), Server, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, name="ferserver-metrics", daemon=True).start()
    return httpd
