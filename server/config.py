"""Server settings: each flag has an environment variable FERCODEC_<NAME>; flags win."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9100
    device: str = "auto"
    model_dir: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    threads: int = 0
    max_faces: int = 64
    max_message_bytes: int = 1 << 20
    max_concurrent_rpcs: int = 512
    grace_s: float = 10.0


_HELP = {
    "host": "address to bind",
    "port": "gRPC port (0 picks a free one)",
    "metrics_port": "Prometheus /metrics port (0 picks a free one, -1 disables)",
    "device": "cpu, cuda or auto",
    "model_dir": "comma-separated model directories or bundled names, the first leading GetModelInfo "
                 "(default: the bundled fercodec-v1 and fercodec-v1-expr)",
    "max_batch": "most faces decoded and classified in one batch",
    "max_wait_ms": "how long the batcher waits for more faces once it has one",
    "threads": "torch CPU threads for model work (0 = torch default)",
    "max_faces": "most faces in one request",
    "max_message_bytes": "largest request accepted (bigger: RESOURCE_EXHAUSTED)",
    "max_concurrent_rpcs": "calls served at once; more get RESOURCE_EXHAUSTED at once instead of queueing without bound",
    "grace_s": "seconds to finish in-flight work after SIGTERM/SIGINT",
}


def parse(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(prog="ferserver", description="Serve fercodec: decode face bitstreams, reconstruct, classify expressions.")
    for name, default in Config().__dict__.items():
        flag = "--" + name.replace("_", "-")
        var = "FERCODEC_" + name.upper()
        kind = type(default) if default is not None else str
        value = env.get(var, default)
        try:
            value = kind(value) if value is not None else None
        except ValueError:
            p.error(f"{var}={env[var]!r} is not a valid {kind.__name__}")
        p.add_argument(flag, type=kind, default=value, help=f"{_HELP[name]} (env {var}, default {default})")
    args = p.parse_args(argv)
    cfg = Config(**vars(args))
    if cfg.device not in ("cpu", "cuda", "auto"):
        p.error(f"--device must be cpu, cuda or auto, not {cfg.device!r}")
    if min(cfg.max_batch, cfg.max_faces, cfg.max_concurrent_rpcs) < 1 or cfg.max_wait_ms < 0:
        p.error("--max-batch, --max-faces and --max-concurrent-rpcs must be >= 1 and --max-wait-ms >= 0")
    return cfg


def model_cards(cfg: Config) -> list:
    """The ModelCards the server runs: --model-dir's, else every bundled model (image codec first)."""
    from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR, ModelCard

    if cfg.model_dir:
        dirs = [d.strip() for d in cfg.model_dir.split(",") if d.strip()]
    else:
        dirs = [DEFAULT_MODEL_DIR] + ([EXPRESSION_MODEL_DIR] if EXPRESSION_MODEL_DIR.is_dir() else [])
    return [ModelCard.load(d) for d in dirs]
