"""No Docker engine runs here; these keep the images and compose file consistent with the code."""

from __future__ import annotations

import re

from ferserver.config import Config

from ..conftest import ROOT

DOCKER = ROOT / "docker"


def test_every_copied_path_exists():
    for f in DOCKER.glob("*.Dockerfile"):
        for src in re.findall(r"^COPY (\S+) ", f.read_text(), re.M):
            for part in src.split():
                assert (ROOT / part).exists(), f"{f.name} copies missing {part}"


def test_ports_match_the_server_defaults():
    c = Config()
    server = (DOCKER / "server.Dockerfile").read_text()
    assert f"EXPOSE {c.port} {c.metrics_port}" in server
    assert f'targets: ["server:{c.metrics_port}"]' in (DOCKER / "prometheus.yml").read_text()
    compose = (DOCKER / "compose.yaml").read_text()
    assert f'"{c.port}:{c.port}"' in compose and f'"{c.metrics_port}:{c.metrics_port}"' in compose
    for name in ("server.Dockerfile", "client.Dockerfile", "prometheus.yml"):
        assert name in compose


def test_client_image_installs_no_torch():
    client = (DOCKER / "client.Dockerfile").read_text()
    assert "pip install ." in client and "[server]" not in client
