"""ferserver: load the model once, serve gRPC until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

from . import config as config_mod
from .batcher import Batcher
from .metrics import Metrics

log = logging.getLogger("ferserver")
SERVICE = pb.DESCRIPTOR.services_by_name["FerCodec"].full_name


async def serve(cfg: config_mod.Config) -> None:
    from prometheus_client import start_http_server

    from .engine import Engine
    from .service import FerCodecServicer

    cards = config_mod.model_cards(cfg)
    card = cards[0]
    metrics = Metrics()
    engine = Engine(cards, cfg.device, cfg.threads, metrics)
    metrics.model.info({"model_id": ",".join(c.model_id for c in cards), "model_tag": ",".join(f"{c.model_tag:#06x}" for c in cards), "version": card.version, "device": engine.device})
    batcher = Batcher(engine.run, cfg.max_batch, cfg.max_wait_ms / 1000.0, on_batch=metrics.batch_size.observe)

    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", cfg.max_message_bytes), ("grpc.max_send_message_length", 16 << 20)],
        maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
    )
    pb_grpc.add_FerCodecServicer_to_server(FerCodecServicer(cards, batcher, metrics, engine.device, cfg.max_faces), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    except RuntimeError as e:
        raise OSError(f"cannot listen on {cfg.host}:{cfg.port}: {e}") from None
    httpd = None
    if cfg.metrics_port >= 0:
        httpd, _ = start_http_server(cfg.metrics_port, addr=cfg.host, registry=metrics.registry)
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    mport = httpd.server_port if httpd else "off"
    log.info("ferserver ready on %s:%d (metrics :%s/metrics), models %s on %s", cfg.host, port, mport, ", ".join(c.model_id for c in cards), engine.device)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("ferserver stopping: no new work, finishing in-flight requests (grace %.0fs)", cfg.grace_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(cfg.grace_s)
    batcher.close()
    if httpd:
        httpd.shutdown()
    log.info("ferserver stopped")


def main(argv: list[str] | None = None) -> int:
    cfg = config_mod.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        asyncio.run(serve(cfg))
    except (OSError, ValueError) as e:  # missing model files, bad device, port in use
        print(f"ferserver: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
