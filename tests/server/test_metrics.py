"""Metric names follow Prometheus conventions: base units, _total counters, one registry per server."""

from __future__ import annotations

from prometheus_client import generate_latest

from ferserver.metrics import Metrics

EXPECTED = {
    "fercodec_requests_total": "counter",
    "fercodec_request_duration_seconds": "histogram",
    "fercodec_stage_duration_seconds": "histogram",
    "fercodec_batch_size_faces": "histogram",
    "fercodec_bitstream_bytes": "histogram",
    "fercodec_bits_per_pixel": "histogram",
    "fercodec_predictions_total": "counter",
    "fercodec_faces_rejected_total": "counter",
    "fercodec_inflight_requests": "gauge",
    "fercodec_model_info": "gauge",
}


def test_names_types_and_units():
    m = Metrics()
    m.requests.labels("Recognize", "OK").inc()
    m.predictions.labels("happy").inc()
    m.faces_rejected.labels("invalid").inc()
    m.stage_seconds.labels("synthesis").observe(0.01)
    m.request_seconds.labels("Recognize").observe(0.02)
    m.model.info({"model_id": "x"})
    text = generate_latest(m.registry).decode()
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")}
    for name, kind in EXPECTED.items():
        base = name[: -len("_total")] if kind == "counter" else name
        assert types.get(base) == kind or types.get(name) == kind, (name, types)
    assert 'fercodec_requests_total{code="OK",method="Recognize"} 1.0' in text
    for name in EXPECTED:
        assert name.startswith("fercodec_")


def test_two_servers_in_one_process_do_not_share_metrics():
    a, b = Metrics(), Metrics()
    a.predictions.labels("sad").inc()
    assert "sad" not in generate_latest(b.registry).decode()


def test_every_reject_and_shed_reason_is_on_the_page_from_the_start():
    """They appeared only with their first event: rate() and alerts missed that event, and "none yet" read as "not measured"."""
    text = generate_latest(Metrics().registry).decode()
    for reason in ("invalid", "precondition"):
        assert f'fercodec_faces_rejected_total{{reason="{reason}"}} 0.0' in text
    for reason in ("queue_full", "deadline", "expired", "cancelled"):
        assert f'fercodec_faces_shed_total{{reason="{reason}"}} 0.0' in text
