"""client/channel.py: the channel every subcommand opens."""

from __future__ import annotations

import argparse
import signal
import time

import pytest

from ferclient import channel as channel_mod


def _args(server: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    channel_mod.add_arguments(p)
    return p.parse_args(["--server", server])


def test_ctrl_c_while_the_channel_closes_waits_for_the_close_then_interrupts():
    """Closing waits for grpc's connectivity poll; a KeyboardInterrupt inside that wait left the channel half closed and
    the process hung when it was collected. The signal is held until the channel is closed, then raised."""
    ch = channel_mod.open_channel(_args("127.0.0.1:1"))
    real_close, order = ch._channel.close, []

    def close_slowly():
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the close
        time.sleep(0.05)
        real_close()
        order.append("closed")

    ch._channel.close = close_slowly
    # Python's own Ctrl-C handler, as in a terminal (a background CI shell ignores SIGINT, and its children inherit that)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ch:
                pass
        assert order == ["closed"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler before it, back in place
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_deferred_past_an_import_goes_off_after_a_close_too(monkeypatch):
    """ferclient's command defers a Ctrl-C that comes inside an import and raises it 20 ms later (SIGALRM); landing in a
    channel's close it must be held like any Ctrl-C, not raised inside grpc's close (the hang _Channel prevents)."""
    import ferclient

    ch = channel_mod.open_channel(_args("127.0.0.1:1"))
    real_close, order = ch._channel.close, []

    def close_slowly():
        signal.raise_signal(signal.SIGALRM)  # the deferred Ctrl-C's check, in the middle of the close
        time.sleep(0.05)
        real_close()
        order.append("closed")

    ch._channel.close = close_slowly
    monkeypatch.setattr(ferclient, "_ctrl_c_deferred", True)
    monkeypatch.setattr(ferclient, "_ctrl_c_pressed", False)  # put back after: it makes any later exception "interrupted"
    before = signal.signal(signal.SIGINT, ferclient._ctrl_c), signal.signal(signal.SIGALRM, ferclient._ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ch:
                pass
        assert order == ["closed"] and not ferclient._ctrl_c_deferred
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGALRM, before[1])


def _until(done, seconds: float = 10.0) -> None:
    """Polls done() (which may raise: that ends the wait too) until it is true, within seconds."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def _answers(stub):
    """The model id the channel's next GetModelInfo gets, or None while no replica serves."""
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb

    try:
        return stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).model_id
    except grpc.RpcError:
        return None


def test_a_replica_whose_health_is_not_serving_gets_no_calls_and_the_line_says_why():
    """The channel watches each replica's health for fercodec.v1.FerCodec (a replica loading its models, or draining
    after SIGTERM, says NOT_SERVING): round_robin sends it nothing, and with none serving the user's line says why."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    class Info(pb_grpc.FerCodecServicer):
        def __init__(self, name):
            self.name, self.calls = name, 0

        def GetModelInfo(self, request, context):
            self.calls += 1
            return pb.ModelInfo(model_id=self.name)

    servers, servicers, healths, ports = [], [], [], []
    for name in ("a", "b"):
        s = grpc.server(futures.ThreadPoolExecutor(2))
        servicers.append(Info(name))
        pb_grpc.add_FerCodecServicer_to_server(servicers[-1], s)
        healths.append(health.HealthServicer())
        health_pb2_grpc.add_HealthServicer_to_server(healths[-1], s)
        ports.append(s.add_insecure_port("127.0.0.1:0"))
        s.start()
        servers.append(s)
    healths[0].set("fercodec.v1.FerCodec", health_pb2.HealthCheckResponse.SERVING)
    healths[1].set("fercodec.v1.FerCodec", health_pb2.HealthCheckResponse.NOT_SERVING)
    args = _args("ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports))
    try:
        with channel_mod.open_channel(args) as ch:
            stub = pb_grpc.FerCodecStub(ch)
            assert {stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).model_id for _ in range(20)} == {"a"}
            assert servicers[1].calls == 0
            healths[0].set("fercodec.v1.FerCodec", health_pb2.HealthCheckResponse.NOT_SERVING)
            with pytest.raises(grpc.RpcError) as e:
                _until(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).model_id != "a")  # the watch's update arriving
            line = channel_mod.rpc_error_message(e.value, args)
            assert "cannot reach server" in line and "not serving: starting up or shutting down" in line, line
            healths[1].set("fercodec.v1.FerCodec", health_pb2.HealthCheckResponse.SERVING)
            _until(lambda: _answers(stub) == "b")
    finally:
        for s in servers:
            s.stop(0)
