"""Prometheus metrics, one registry per server (so tests can run several in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, Info, ProcessCollector

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
        # What the default registry would give: process_* (CPU seconds, resident memory, open files) and python_gc_*.
        ProcessCollector(registry=r)
        GCCollector(registry=r)
