"""Server settings: each flag has an environment variable FERCODEC_<NAME>; flags win."""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    host: str = "localhost"  # this machine only: listening on a network is a choice, with TLS and tokens (README)
    port: int = 50051
    metrics_port: int = 9100
    health_port: int = -1
    device: str = "auto"
    classifier_precision: str = "auto"
    synthesis_precision: str = "auto"
    model_dir: str | None = None
    max_batch: int = 0
    max_wait_ms: float = 5.0
    threads: int = 0
    decode_workers: int = -1
    max_faces: int = 64
    max_message_bytes: int = 1 << 20
    max_concurrent_rpcs: int = 512
    max_queue_faces: int = 4096
    stream_window: int = 32
    grace_s: float = 10.0
    max_connection_age_s: float = 0.0
    metrics_host: str = "127.0.0.1"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_token_file: str | None = None
    metrics_tls_cert: str | None = None
    metrics_tls_key: str | None = None
    metrics_tls_client_ca: str | None = None
    credential_check_s: float = 10.0


_HELP = {
    "host": "address to bind: localhost serves this machine only (IPv4 and IPv6 loopback); 0.0.0.0 (or an interface's "
            "address) serves the network, and then wants --tls-cert, --tls-key and --auth-token-file",
    "port": "gRPC port (0 picks a free one)",
    "metrics_port": "Prometheus /metrics port (0 picks a free one, -1 disables)",
    "health_port": "a plaintext port serving only the gRPC health service, for probes that cannot speak TLS "
                   "(kubelet's grpc probe, the image's HEALTHCHECK); -1 = off, 0 picks a free one",
    "device": "cpu, cuda or auto",
    "classifier_precision": "auto, int8 or fp32: auto classifies with a model's int8 classifier (python -m fermodels.quantize) "
                            "on a CPU (the classifier several times faster, the same accuracy within noise: docs/precision), and with the float one "
                            "on cuda or where a model has none; int8 refuses to start without one",
    "synthesis_precision": "auto, bf16 or fp32: auto runs the image codec's synthesis transform in bfloat16 on a CPU that has it in "
                           "hardware (AVX512-BF16 or AMX: about 3x faster, the same accuracy within noise: docs/precision) and in float32 "
                           "elsewhere; bf16 forces it (slower than fp32 where emulated)",
    "model_dir": "comma-separated model directories or bundled names, the first leading GetModelInfo "
                 "(default: the bundled fercodec-v1 and fercodec-v1-expr)",
    "max_batch": "most faces decoded and classified in one batch (0 = auto: 256 on cuda, where batch 32 reached half the "
                 "throughput of 256, docs/gpu; 32 on cpu)",
    "max_wait_ms": "how long the batcher waits for more faces once it has one (it stops once it has as many as its last batch)",
    "threads": "torch CPU threads for model work (0 = torch default, one per core); a batch of one face runs on one",
    "decode_workers": "processes that entropy-decode bitstreams beside the model worker (-1 = auto: on cuda one per CPU core "
                      "but one, at most 16; on cpu none, since the classifier already uses every core)",
    "max_faces": "most faces in one request",
    "max_message_bytes": "largest request accepted (bigger: RESOURCE_EXHAUSTED)",
    "max_concurrent_rpcs": "Recognize and RecognizeStream calls served at once (health checks and GetModelInfo are not counted); "
                           "more get RESOURCE_EXHAUSTED at once instead of queueing without bound",
    "max_queue_faces": "most faces waiting for the model worker; beyond it, or when the queue would outlast a call's deadline, RESOURCE_EXHAUSTED",
    "stream_window": "most unanswered messages on one RecognizeStream before the server stops reading it (flow control)",
    "grace_s": "seconds to finish in-flight work after SIGTERM/SIGINT",
    "max_connection_age_s": "close each client connection after this many seconds (0 = never), so dns:/// clients re-resolve and "
                            "reach replicas an autoscaler added; calls in flight get --grace-s to finish, longer streams are cut",
    "metrics_host": "address the metrics page binds (loopback unless Prometheus scrapes from another host)",
    "tls_cert": "PEM certificate chain: serve TLS (needs --tls-key)",
    "tls_key": "PEM private key for --tls-cert",
    "tls_client_ca": "PEM CA bundle: require client certificates signed by it (mutual TLS)",
    "auth_token_file": "file of bearer tokens, one per line; calls without one get UNAUTHENTICATED (re-read when it changes, "
                       "and on SIGHUP)",
    "metrics_tls_cert": "PEM certificate chain: serve the metrics page over HTTPS (needs --metrics-tls-key; may be --tls-cert's file)",
    "metrics_tls_key": "PEM private key for --metrics-tls-cert",
    "metrics_tls_client_ca": "PEM CA bundle: the metrics page answers only scrapers presenting a certificate it signed "
                             "(Prometheus' tls_config cert_file/key_file)",
    "credential_check_s": "seconds between looks at the token and TLS files: a new version is put in force without a restart "
                          "(a renewed certificate serves the connections opened after it; 0 = only on SIGHUP, which re-reads them all)",
}


MIN_MESSAGE_BYTES = 4096


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fercodec")
    except PackageNotFoundError:
        return "(not installed)"


class _Parser(argparse.ArgumentParser):
    from_env: dict[str, str] = {}  # flag -> FERCODEC_ variable, for the settings the environment gave and argv did not

    def error(self, message: str):
        """One line and exit 2: argparse printed the whole usage block (20 lines) before the line that matters. A bad
        value the environment gave is named as its variable, not as a flag nobody typed."""
        flag = message.split(" ", 1)[0]
        source = f" (from ${self.from_env[flag]})" if flag in self.from_env else ""
        self.exit(2, f"{self.prog}: error: {message}{source} (ferserver --help lists every setting)\n")


def parse(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    p = _Parser(prog="ferserver", description="Serve fercodec: decode face bitstreams, reconstruct, classify expressions.")
    for name, default in Config().__dict__.items():
        flag = "--" + name.replace("_", "-")
        var = "FERCODEC_" + name.upper()
        kind = type(default) if default is not None else str
        value = env.get(var, default)
        try:
            value = kind(value) if value is not None else None
        except ValueError:
            p.error(f"{var}={env[var]!r} is not a valid {kind.__name__}")
        shown = "" if default is None or "default" in _HELP[name] else f", default {default}"  # None: the help says what happens
        p.add_argument(flag, type=kind, default=value, help=f"{_HELP[name]} (env {var}{shown})")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    args = p.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    p.from_env = {flag: var for flag, var in (("--" + n.replace("_", "-"), "FERCODEC_" + n.upper()) for n in vars(args))
                  if var in env and not any(a == flag or a.startswith(flag + "=") for a in given)}
    cfg = Config(**vars(args))
    if cfg.device not in ("cpu", "cuda", "auto"):
        p.error(f"--device must be cpu, cuda or auto, not {cfg.device!r}")
    if cfg.classifier_precision not in ("auto", "int8", "fp32"):
        p.error(f"--classifier-precision must be auto, int8 or fp32, not {cfg.classifier_precision!r}")
    if cfg.synthesis_precision not in ("auto", "bf16", "fp32"):
        p.error(f"--synthesis-precision must be auto, bf16 or fp32, not {cfg.synthesis_precision!r}")
    if cfg.max_batch < 0:
        p.error("--max-batch must be 0 (auto) or a number of faces")
    for name in ("max_faces", "max_concurrent_rpcs", "max_queue_faces", "stream_window"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more, not {getattr(cfg, name)}")
    if not 0 <= cfg.max_wait_ms < math.inf:  # inf: a batch that never runs; nan compares false everywhere
        p.error(f"--max-wait-ms must be a finite number of milliseconds >= 0, not {cfg.max_wait_ms}")
    if cfg.max_message_bytes < MIN_MESSAGE_BYTES:  # grpc takes a negative size as no limit at all, and 0 refuses every request
        p.error(f"--max-message-bytes must be at least {MIN_MESSAGE_BYTES} (a request of a few faces), not {cfg.max_message_bytes}")
    if cfg.threads < 0:
        p.error(f"--threads must be 0 (torch's default, one per core) or a number of threads, not {cfg.threads}")
    if not 0 <= cfg.port <= 65535:
        p.error(f"--port must be a TCP port (0-65535; 0 picks a free one), not {cfg.port}")
    for flag, port in (("--metrics-port", cfg.metrics_port), ("--health-port", cfg.health_port)):
        if not -1 <= port <= 65535:
            p.error(f"{flag} must be a TCP port (0-65535; 0 picks a free one) or -1 (off), not {port}")
    for flag, v in (("--grace-s", cfg.grace_s), ("--max-connection-age-s", cfg.max_connection_age_s), ("--credential-check-s", cfg.credential_check_s)):
        if not 0 <= v < math.inf:  # refuses nan too
            p.error(f"{flag} must be a number of seconds >= 0, not {v:g}")
    ports = [(flag, v) for flag, v in (("--port", cfg.port), ("--metrics-port", cfg.metrics_port), ("--health-port", cfg.health_port)) if v > 0]
    for i, (flag, v) in enumerate(ports):  # found now, not after the models load
        for other, w in ports[i + 1:]:
            if v == w:
                p.error(f"{flag} and {other} are both {v}: each needs a port of its own")
    if cfg.decode_workers < -1:
        p.error("--decode-workers must be -1 (auto), 0 (decode in the model worker's thread) or a number of processes")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if cfg.tls_client_ca and not cfg.tls_cert:
        p.error("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if bool(cfg.metrics_tls_cert) != bool(cfg.metrics_tls_key):
        p.error("--metrics-tls-cert and --metrics-tls-key go together")
    if cfg.metrics_tls_client_ca and not cfg.metrics_tls_cert:
        p.error("--metrics-tls-client-ca needs --metrics-tls-cert and --metrics-tls-key")
    return cfg


def max_batch(cfg: Config, device: str) -> int:
    """--max-batch, with 0 resolved for the device the engine runs on."""
    return cfg.max_batch or (256 if device.startswith("cuda") else 32)


def model_cards(cfg: Config) -> list:
    """The ModelCards the server runs: --model-dir's, else every bundled model (image codec first)."""
    from ferwire.card import DEFAULT_MODEL_DIR, EXPRESSION_MODEL_DIR, ModelCard

    if cfg.model_dir:
        dirs = [d.strip() for d in cfg.model_dir.split(",") if d.strip()]
    else:
        dirs = [DEFAULT_MODEL_DIR] + ([EXPRESSION_MODEL_DIR] if EXPRESSION_MODEL_DIR.is_dir() else [])
    return [ModelCard.load(d) for d in dirs]


GOMP_SPINCOUNT = 2000  # spins before an idle OpenMP thread sleeps; libgomp's default is 300,000


def runtime_defaults(env=os.environ) -> None:
    """Settings torch's runtime reads once, when it loads: call before importing torch. An operator's own values win.

    - TORCH_CPP_LOG_LEVEL=ERROR: torch's C++ warnings go straight to stderr, not through Python's warnings or logging:
      at every start a deprecation notice for the int8 classifier's quantized tensors (quantize.load already falls
      back to the float one, with a log line, if a torch can no longer run it). WARNING shows them.
    - GOMP_SPINCOUNT: how long OpenMP's threads spin for the next parallel region before they sleep: long enough to
      span the gaps between one batch's regions, short enough that between batches the idle thread leaves its core
      to the event loop: with 20,000 spins, p99 latency at 600 faces/s arriving at random was 60 ms, with 2,000
      41 ms (docs/bench/changes.md). Not set when OMP_WAIT_POLICY is.
    """
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", str(GOMP_SPINCOUNT))
