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
