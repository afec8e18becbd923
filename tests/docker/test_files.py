"""Fast consistency checks of docker/ against the code. tests/docker/test_images.py builds and runs the images."""

from __future__ import annotations

import re

import yaml

from ferserver.config import Config

from ..conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def test_every_copied_path_exists():
    for f in DOCKERFILES:
        for src in re.findall(r"^COPY (?!--from)(\S+) ", f.read_text(), re.M):
            assert (ROOT / src).exists(), f"{f.name} copies missing {src}"


def test_the_build_context_keeps_what_the_images_copy():
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"  # a whitelist
    for f in DOCKERFILES:
        for src in re.findall(r"^COPY (?!--from)(\S+) ", f.read_text(), re.M):
            assert f"!{src}" in ignore, f"{f.name} copies {src}, which .dockerignore leaves out"


def test_public_base_by_default_and_a_build_arg_for_a_local_one():
    for f in DOCKERFILES:
        text = f.read_text()
        assert text.count("ARG BASE=python:3.11-slim") == 1, f.name
        stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
        named = {name for _, name in stages if name}
        assert len(stages) >= 2 and stages[-1] == ("${BASE}", ""), f"{f.name}: multi-stage, the final image on BASE"
        assert all(src == "${BASE}" or src in named for src, _ in stages), f"{f.name}: every stage on BASE or an earlier stage"


def test_ports_match_the_server_defaults():
    c = Config()
    server = (DOCKER / "server.Dockerfile").read_text()
    assert f"EXPOSE {c.port} {c.metrics_port}" in server
    assert f"FERCODEC_PORT={c.port} " in server and f"FERCODEC_METRICS_PORT={c.metrics_port} " in server
    assert f'targets: ["server:{c.metrics_port}"]' in (DOCKER / "prometheus.yml").read_text()
    compose = (DOCKER / "compose.yaml").read_text()
    # published on the host's loopback only, as ferserver binds by default: plaintext, no tokens, anonymous Grafana
    assert f'"127.0.0.1:{c.port}:{c.port}"' in compose and f'"127.0.0.1:{c.metrics_port}:{c.metrics_port}"' in compose
    published = [p for svc in yaml.safe_load(compose)["services"].values() for p in svc.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    for name in ("server.Dockerfile", "client.Dockerfile", "prometheus.yml"):
        assert name in compose


def test_server_image_serves_as_a_user_with_a_grpc_health_check_and_signals_to_pid_1():
    server = (DOCKER / "server.Dockerfile").read_text()
    extras = re.findall(r"optional-dependencies'\]\['(\w+)'\]", server)
    assert extras == ["server"], f"the server image installs the base and [server] dependencies only, not {extras}"
    assert re.search(r"^USER fercodec$", server, re.M)
    health = re.search(r"^HEALTHCHECK .* CMD (\[.*\])$", server, re.M)
    assert health and "grpc_health" in health.group(1) and "FERCODEC_PORT" in health.group(1) and "/metrics" not in health.group(1)
    assert re.search(r'^ENTRYPOINT \["ferserver"\]$', server, re.M)  # exec form: ferserver is PID 1 and gets SIGTERM


def test_client_image_installs_no_torch():
    """The base dependencies only, unless EXTRAS names one (video: OpenCV for `ferclient watch`); never the server's."""
    client = (DOCKER / "client.Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in client and "p['dependencies'] + [" in client and "[server]" not in client
    assert re.search(r"^USER \d+", client, re.M) and re.search(r'^ENTRYPOINT \["ferclient"\]$', client, re.M)
