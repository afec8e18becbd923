"""ferserver: load the model once, serve gRPC until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
from ferwire.credentials import is_loopback

from . import config as config_mod
from . import security
from .batcher import Batcher
from .metrics import Metrics, serve_page
from .rpc import DecodeGuard

log = logging.getLogger("ferserver")
SERVICE = pb.DESCRIPTOR.services_by_name["FerCodec"].full_name
ENCODER_SERVICE = pb.DESCRIPTOR.services_by_name["EncoderRepository"].full_name


async def serve(cfg: config_mod.Config) -> None:
    from .engine import Engine, on_passing_thread
    from .repository import add_to_server as add_encoder_repository  # the edge encoders, for `ferclient models pull`
    from .service import FerCodecServicer

    # Ports and credentials first: a taken port, a bad certificate or token file fails in a second, not after the models load.
    for host, port, flag, what in ((cfg.host, cfg.port, "", "listen on"), (cfg.host, cfg.health_port, " (--health-port)", "listen on"),
                                   (cfg.metrics_host, cfg.metrics_port, " (--metrics-host, --metrics-port)", "serve metrics on")):
        why = _unbindable(host, port)
        if why:
            raise OSError(f"cannot {what} {host}:{port}{flag}: {why}")
    tls = security.ServerTLS(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) if cfg.tls_cert else None
    creds = tls.credentials if tls else None
    tokens = security.TokenStore(cfg.auth_token_file) if cfg.auth_token_file else None
    metrics_tls = security.MetricsTLS(cfg.metrics_tls_cert, cfg.metrics_tls_key, cfg.metrics_tls_client_ca)
    watcher = security.CredentialWatcher([tls, tokens, metrics_tls])
    cards = config_mod.model_cards(cfg)
    card = cards[0]
    metrics = Metrics()
    engine = on_passing_thread(lambda: Engine(cards, cfg.device, cfg.threads, metrics, cfg.decode_workers, cfg.classifier_precision, cfg.synthesis_precision))
    precisions = {m.card.model_id: m.precisions() for m in engine.models.values()}
    metrics.model.info({"model_id": ",".join(c.model_id for c in cards), "model_tag": ",".join(f"{c.model_tag:#06x}" for c in cards), "version": card.version, "device": engine.device,
                        **{k: ",".join(precisions[c.model_id].get(k, "-") for c in cards) for k in ("classifier_precision", "synthesis_precision")}})
    batcher = Batcher(engine.run, config_mod.max_batch(cfg, engine.device), cfg.max_wait_ms / 1000.0, on_batch=metrics.batch_size.observe, max_queue=cfg.max_queue_faces, metrics=metrics)

    server = grpc.aio.server(
        # grpc core resets calls past ~1,000 waiting for Python (the client sees CANCELLED); raised far above it so every
        # call reaches the servicer, which refuses what it cannot serve in time with RESOURCE_EXHAUSTED and a reason.
        options=[("grpc.max_receive_message_length", cfg.max_message_bytes), ("grpc.max_send_message_length", 16 << 20),
                 ("grpc.server.max_pending_requests", 16384), ("grpc.server.max_pending_requests_hard_limit", 32768),
                 # A second server on a taken port must fail, not silently share the port's calls (grpc's default).
                 ("grpc.so_reuseport", 0)]
        + ([("grpc.max_connection_age_ms", int(cfg.max_connection_age_s * 1000)), ("grpc.max_connection_age_grace_ms", int(cfg.grace_s * 1000))]
           if cfg.max_connection_age_s > 0 else []),
        # TokenAuth first: a caller without a token gets UNAUTHENTICATED whatever its bytes
        interceptors=([security.TokenAuth(tokens, metrics)] if tokens else []) + [DecodeGuard((SERVICE, ENCODER_SERVICE))],
    )
    servicer = FerCodecServicer(cards, batcher, metrics, engine.device, cfg.max_faces, cfg.stream_window, cfg.max_concurrent_rpcs, precisions)
    pb_grpc.add_FerCodecServicer_to_server(servicer, server)
    encoder_service = add_encoder_repository(server, cards, metrics)
    health_servicer = _Health()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, encoder_service, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = _address(cfg.host, cfg.port)
    try:
        port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address}: {e}") from None
    if not creds and not is_loopback(cfg.host):
        log.warning("serving PLAINTEXT on %s: faces, results%s cross the network readable by anyone on it; "
                    "give --tls-cert and --tls-key", cfg.host, " and bearer tokens" if tokens else "")
    elif not tokens and not cfg.tls_client_ca and not is_loopback(cfg.host):
        log.warning("serving %s with TLS but no authentication: anyone who reaches it can send faces and read the models' "
                    "answers; give --auth-token-file (bearer tokens) or --tls-client-ca (client certificates)", cfg.host)
    # Probes that speak plaintext only (kubelet's grpc probe, the image's HEALTHCHECK) get a port of their own
    # serving nothing but the health service, so the main port can keep TLS and tokens.
    health_only = None
    if cfg.health_port >= 0:
        health_only = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_only)
        try:
            hport = health_only.add_insecure_port(_address(cfg.host, cfg.health_port))
        except RuntimeError as e:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.health_port} (--health-port): {e}") from None
        await health_only.start()
    httpd = None
    if cfg.metrics_port >= 0:
        try:
            httpd = serve_page(metrics.registry, cfg.metrics_host, cfg.metrics_port, lambda: metrics_tls.context)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port} (--metrics-host, --metrics-port): {e.strerror or e}") from None
        if not metrics_tls.cert and not is_loopback(cfg.metrics_host):
            log.warning("metrics page in plain HTTP on %s, without authentication: anyone who reaches it reads the traffic "
                        "and labels; give --metrics-tls-cert, --metrics-tls-key and --metrics-tls-client-ca", cfg.metrics_host)
    # SERVING before the port opens: clients watch it (ferclient skips a replica whose health is anything else), so a
    # call reaching the port before the collection below would otherwise be refused as "not serving".
    for name in ("", SERVICE, encoder_service):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    # Everything loaded so far (torch, the models, grpc) lives as long as the server: out of the collector's sight, a
    # full collection walks only what calls create. Before, one took a quarter of a second every ~10 s under load,
    # and every call in flight waited for it.
    gc.collect()
    gc.freeze()
    metrics.gc_frozen.set(gc.get_freeze_count())
    scheme = "" if not metrics_tls.cert else "https, client certificates " if cfg.metrics_tls_client_ca else "https "
    where = f"{scheme}{cfg.metrics_host}:{httpd.server_port}/metrics" if httpd else "off"
    mode = "mutual TLS" if cfg.tls_client_ca else "TLS" if creds else "plaintext"
    auth = f"{len(tokens)} bearer token{'s' if len(tokens) != 1 else ''}" if tokens else "no auth"
    hinfo = f"; health only :{hport}" if health_only else ""
    if is_loopback(cfg.host):  # the default: say how to serve other machines, since a client elsewhere only sees a refusal
        hinfo += "; this machine only: --host 0.0.0.0 serves the network"
    log.info("ferserver ready on %s:%d (%s, %s; metrics %s%s), models %s on %s", cfg.host, port, mode, auth, where, hinfo, ", ".join(f"{m.card.model_id} ({m.describe()})" for m in engine.models.values()), engine.device)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP re-reads every credential file now (and never stops the server); changed files are picked up without it.
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, watcher.check, True))
    watching = asyncio.create_task(watcher.watch(cfg.credential_check_s))
    await stop.wait()
    watching.cancel()
    batcher.drain()  # no call can join a waiting batch now: run it
    servicer.drain()  # open streams answer what they read and end; new calls get UNAVAILABLE (before any await)
    log.info("ferserver stopping: no new work, finishing in-flight requests (grace %.0fs)", cfg.grace_s)
    await health_servicer.enter_graceful_shutdown()
    # Every call in flight is answered before grpc's own shutdown starts. server.stop() sends GOAWAY at once and closes
    # each connection once its calls are done, so answers written after the GOAWAY could be cut off with the connection
    # (the Docker test once saw 5 of 64 calls end UNAVAILABLE "GOAWAY received; Server shutdown", and before the linger
    # 25 of 64 "Connection reset by peer": a closed socket with unread bytes resets, and the peer drops what it had not
    # read). So: wait for the calls, give their callers LINGER_S to read the answers, then stop.
    deadline = time.monotonic() + cfg.grace_s
    while servicer.active and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    if servicer.active:
        log.warning("grace period over: %d call%s still running are cut (their callers get UNAVAILABLE)", servicer.active, "s" if servicer.active != 1 else "")
    else:
        await asyncio.sleep(LINGER_S)
    health_servicer.end_watches()  # else grpc's stop waits out the grace for them: they never end by themselves
    await server.stop(max(0.0, deadline - time.monotonic()))
    if health_only:
        await health_only.stop(0)
    batcher.close()
    engine.close()
    if httpd:
        httpd.shutdown()
    log.info("ferserver stopped")


LINGER_S = 0.5


class _Health(health.aio.HealthServicer):
    """grpc's health service, whose Watch streams end (OK, after NOT_SERVING) once the server's calls are answered. A
    watcher (a load balancer, a client's health check) held shutdown for the whole --grace-s, and grpc's stop then
    cancelled it with a traceback in the log."""

    def __init__(self):
        super().__init__()
        self._ending = asyncio.Event()

    def end_watches(self) -> None:
        self._ending.set()

    async def Watch(self, request, context):
        watch = asyncio.ensure_future(super().Watch(request, context))
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            await asyncio.wait((watch, ending), return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                watch.result()  # its error, if it ended with one
        finally:
            for task in (watch, ending):
                task.cancel()
            await asyncio.gather(watch, ending, return_exceptions=True)


def _address(host: str, port: int) -> str:
    """host:port as grpc takes it: an IPv6 address in brackets (grpc read `:::50051` as a misformatted name)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _exit_while_loading(signum, frame):
    """SIGTERM or Ctrl-C before the server is ready: one line and out at once, with nothing served yet to drain.

    Not an exception: raised wherever the main thread was, one was taken for a model file that does not load (exit 2),
    or surfaced inside grpc's start (a traceback from the server's destructor), or (Ctrl-C, with asyncio's own handler)
    only at the next await, after the models had loaded."""
    interrupted = signum == signal.SIGINT
    print(f"ferserver: {'interrupted' if interrupted else 'stopped (SIGTERM)'} before it was ready", file=sys.stderr, flush=True)
    os._exit(130 if interrupted else 0)


def _unbindable(host: str, port: int) -> str | None:
    """Why a server could not bind host:port (taken, an address not of this machine), or None. -1 (off) and 0 (any
    free port) bind. Why check before grpc does: grpc's own failure comes after the models load, and its C core
    prints a line of its own before ours. A port taken between this check and the bind still fails, as before."""
    if port <= 0:
        return None
    try:
        found = socket.getaddrinfo(None if host in ("", "0.0.0.0", "::", "[::]") else host.strip("[]"), port,
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {host} ({e.strerror})"
    errors = []
    for family, kind, proto, _, addr in found:  # grpc serves if any of them binds (a host without IPv6 serves IPv4)
        try:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds: a port in TIME_WAIT is free
                s.bind(addr)
                return None
        except OSError as e:
            errors.append(e.strerror or str(e))
    return errors[0] if errors else None


def main(argv: list[str] | None = None) -> int:
    cfg = config_mod.parse(argv)
    config_mod.runtime_defaults()  # torch loads later, with the models
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Until serve() installs its own handlers, once ready: SIGHUP (a credential rotation sent early) must not kill a
    # loading server, and SIGTERM (an orchestrator scaling down) stops it with one line and exit 0.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_while_loading)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where it is ignored (nohup, a background job)
        signal.signal(signal.SIGINT, _exit_while_loading)
    try:
        asyncio.run(serve(cfg))
    except (OSError, ValueError) as e:  # missing model files, bad device, port in use
        print(f"ferserver: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferserver: interrupted before it was ready", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
