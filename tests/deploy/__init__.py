"""Static checks of what deploys and watches ferserver: deploy/k8s, docker/grafana, docker/alerts.yml."""

from __future__ import annotations

# Labels Prometheus adds to every scraped series (job, instance) and the
# Prometheus Operator adds from the target's pod (namespace, pod, ...).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}


def exported_series() -> dict[str, set[str] | None]:
    """Series name -> its label names, for every series a real ferserver Metrics registry exposes.

    None for an Info's labels: their names come with the value, at run time.

    From the collectors, not from samples: a labelled counter has no sample
    until its first increment.
    """
    from prometheus_client.metrics import MetricWrapperBase

    from ferserver.metrics import Metrics

    m = Metrics()
    out: dict[str, set[str] | None] = {}
    for collector in vars(m).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        (family,) = collector.describe()
        for suffix in _SUFFIXES[family.type]:
            labels = set(collector._labelnames) | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
            out[family.name + suffix] = None if family.type == "info" else labels
    for family in m.registry.collect():  # the process_* and python_gc_* collectors: their series exist from the start
        for sample in family.samples:
            out.setdefault(sample.name, set(sample.labels) | TARGET_LABELS)
    return out
