"""How ferclient reaches a server: address, TLS, bearer token, load balancing and retries, in one place.

Every subcommand takes the same connection flags (add_arguments) and opens its
channel with open_channel, so TLS and tokens work the same everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import urllib.parse

from fermodels import argtypes
from ferwire.credentials import host_port, target_is_local

DEFAULT_SERVER = "localhost:50051"
SYSTEM_CAS = "system"  # --tls-ca system: grpc's default roots (its bundled public CAs, or $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)

# round_robin spreads calls over every address a name resolves to (dns:///name:port, or
# ipv4:a:p,b:q), skipping any whose health (gRPC's health service, watched on each connection) is not SERVING:
# a replica still loading, or draining after SIGTERM (which refused 10-21 calls of the scale-out test before the
# client watched, 0-1 since). A call that finds its replica gone (UNAVAILABLE) is retried on another.
# Every call is idempotent (Recognize, GetModelInfo, GetEncoder), so a retry cannot double-count anything.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": "fercodec.v1.FerCodec"},
    "methodConfig": [{
        "name": [{"service": "fercodec.v1.FerCodec"}, {"service": "fercodec.v1.EncoderRepository"}],
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "1s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}


class ChannelSettingError(ValueError):
    """A connection setting the user must fix (unreadable certificate, empty token file)."""


def add_arguments(p: argparse.ArgumentParser, timeout: float = 10.0, timeout_help: str = "seconds per request") -> None:
    env = os.environ.get
    p.add_argument("--server", type=_address, default=env("FERCODEC_SERVER", DEFAULT_SERVER),
                   help=f"host:port, or dns:///name:port to spread calls over every replica (env FERCODEC_SERVER, default {DEFAULT_SERVER})")
    p.add_argument("--tls-ca", type=argtypes.nonempty, default=env("FERCODEC_TLS_CA") or None, metavar="PEM",
                   help="connect with TLS, trusting this CA bundle, or `system` for the public CAs grpc trusts (a server "
                        "behind a publicly certified load balancer) (env FERCODEC_TLS_CA; default: plaintext unless --tls-cert is given)")
    p.add_argument("--tls-cert", type=argtypes.nonempty, default=env("FERCODEC_TLS_CERT") or None, metavar="PEM", help="client certificate for mutual TLS (env FERCODEC_TLS_CERT)")
    p.add_argument("--tls-key", type=argtypes.nonempty, default=env("FERCODEC_TLS_KEY") or None, metavar="PEM", help="private key of --tls-cert (env FERCODEC_TLS_KEY)")
    p.add_argument("--token-file", type=argtypes.nonempty, default=env("FERCODEC_TOKEN_FILE") or None, metavar="FILE",
                   help="send the bearer token in FILE (env FERCODEC_TOKEN_FILE; or put the token itself in FERCODEC_TOKEN)")
    p.add_argument("--plaintext-token", action="store_true", default=env("FERCODEC_PLAINTEXT_TOKEN", "").lower() in ("1", "true", "yes"),
                   help="the network itself is encrypted, such as a service mesh: send the bearer token without TLS to a server "
                        "not on this machine, and faces without a warning (env FERCODEC_PLAINTEXT_TOKEN=1; default: the token "
                        "refused, faces sent with a warning)")
    p.add_argument("--timeout", type=argtypes.positive("seconds"), default=env("FERCODEC_TIMEOUT") or timeout,  # argparse checks an env string as it checks the flag
                   help=f"{timeout_help} (env FERCODEC_TIMEOUT, default {timeout:g})")


_TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")  # grpc's own: no port check of ours


def _address(text: str) -> str:
    """--server as grpc takes it, checked: a port outside 1-65535 (grpc would wrap 99999 to 34463 and report a refused
    connection there), none at all (grpc would try 443), one that is not a number, or a URL (grpc reported a
    "misformatted domain name")."""
    if not text.strip() or text.endswith(":"):
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port or dns:///name:port")
    if "://" in text and not text.startswith("dns:"):
        scheme = text.split("://", 1)[0]
        raise argparse.ArgumentTypeError(f"{text} is a URL: give host:port without {scheme}:// (TLS is --tls-ca, not https)")
    if text.startswith(_TARGET_SCHEMES):
        return text
    host, port = host_port(text)
    if not host.strip("[] "):  # grpc's resolver: "host must not be empty in name"
        raise argparse.ArgumentTypeError(f"{text} has no host: give host:port (localhost:{port or 50051} on this machine)")
    if not port:
        raise argparse.ArgumentTypeError(f"{text} has no port: give host:port (ferserver listens on 50051 by default)")
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"port {port!r} of {text} is not a number")
    if not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"port {port} of {text} is not a TCP port (1-65535)")
    return text


def _read(path: str, what: str, kind: str | None = None) -> bytes:
    """The file's bytes (kind "certificate" or "key": checked to be that PEM), or ChannelSettingError with one line."""
    from ferwire.credentials import read, read_pem

    try:
        return read_pem(path, what, kind) if kind else read(path, what)
    except (OSError, ValueError) as e:
        raise ChannelSettingError(str(e)) from None


RECONNECT_MAX_MS = 5000


def _checked_token(value: str, where: str) -> str:
    """A bearer token as HTTP/2 carries it: printable ASCII without spaces (a newline made grpc log errors and send nothing)."""
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ChannelSettingError(f"the token in {where} holds spaces, control or non-ASCII characters: a bearer token cannot")
    return value


def token(args) -> str | None:
    """The token itself where given (ferclient.api.Client's token=), else --token-file's first non-empty line, else
    $FERCODEC_TOKEN, else None."""
    if getattr(args, "token", None):
        return _checked_token(args.token, "token=")
    if args.token_file:
        lines = [t.strip() for t in _read(args.token_file, "token file").decode(errors="replace").splitlines()]
        found = [t for t in lines if t and not t.startswith("#")]
        if not found:
            raise ChannelSettingError(f"token file {args.token_file} holds no token")
        return _checked_token(found[0], f"token file {args.token_file}")
    env = os.environ.get("FERCODEC_TOKEN", "").strip()
    return _checked_token(env, "FERCODEC_TOKEN") if env else None


def open_channel(args, warn_faces=None):
    """A grpc.Channel for args.server with TLS, the bearer token on every call, round_robin and retries.

    warn_faces: for the subcommands that send faces, a function given one line when they would cross the network
    unencrypted (not to this machine, no TLS, no --plaintext-token): a face is biometric data, and the server warns the
    same way when it listens on a network without TLS."""
    import grpc

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ChannelSettingError("--tls-cert and --tls-key go together")
    bearer = token(args)
    tls = bool(args.tls_ca or args.tls_cert)
    remote_plaintext = not tls and not args.plaintext_token and not target_is_local(args.server)
    if bearer is not None and remote_plaintext:
        # As grpc's own call credentials: a bearer token travels only over TLS, or to this machine.
        raise ChannelSettingError(f"a bearer token would cross the network in plaintext to {args.server}: "
                                  "give --tls-ca (the server's CA) to connect with TLS, or --plaintext-token where the network is encrypted")
    if warn_faces is not None and remote_plaintext:
        warn_faces(f"warning: faces go to {args.server} unencrypted, readable on the way: give --tls-ca (the server's CA) "
                   "to connect with TLS, or --plaintext-token where the network is encrypted")
    # Reconnect within a few seconds of a server coming back: grpc's backoff grows to 120 s, so a long-lived channel
    # (ferclient watch, a ferclient.Client in an application) kept failing long after a restarted server was up.
    options = [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1),
               ("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS)]
    if tls:
        key = _read(args.tls_key, "TLS key", "key") if args.tls_key else None
        cert = _read(args.tls_cert, "TLS certificate", "certificate") if args.tls_cert else None
        if key is not None:
            _check_pair(args.tls_cert, args.tls_key, key, cert)
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(args.tls_ca, "CA bundle", "certificate") if args.tls_ca and args.tls_ca != SYSTEM_CAS else None,
            private_key=key, certificate_chain=cert,
        )
        channel = grpc.secure_channel(args.server, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.server, options=options)
    return _Channel(channel if bearer is None else grpc.intercept_channel(channel, _bearer(bearer)))


class _Channel:
    """A grpc.Channel closed with Ctrl-C (and SIGTERM/SIGHUP) held until it is: closing waits for grpc's connectivity
    poll, and a KeyboardInterrupt in that wait left the channel half closed, so the process hung for ever when it was
    collected (ferclient watch, Ctrl-C as it gave up on a refused server). The signal is raised once it is closed."""

    def __init__(self, channel):
        self._channel = channel

    def __getattr__(self, name):
        return getattr(self._channel, name)

    def close(self) -> None:
        with _signals_held():
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _signals_held(names=("SIGINT", "SIGTERM", "SIGHUP")):
    """Signals that come meanwhile are raised after the block, to the handlers there were before it (main thread only:
    elsewhere Python cannot set handlers, and signals reach the main thread anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    before = {}
    for signum in filter(None, (getattr(signal, name, None) for name in names)):  # Windows has no SIGHUP
        handler = signal.getsignal(signum)
        if handler is not None and handler != signal.SIG_IGN:  # None: set outside Python, left alone
            before[signum] = signal.signal(signum, lambda n, frame: came.append(n))
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        if came:
            signal.raise_signal(came[0])


def wait_ready(channel, args) -> None:
    """Wait up to --timeout for the channel to connect; ConnectionError with one line when it does not. For calls whose own
    deadline is long (a model download): a stalled or unreachable server is reported after --timeout, not after it.

    A connection that fails outright (refused, a TLS handshake refused) ends the wait at once with grpc's reason, as
    `send` reports it: waiting out --timeout for a port with nothing on it told the user nothing more, ten seconds later.
    A server that accepts but does not answer (stalled) still gets the whole --timeout."""
    import threading
    import time

    import grpc

    settled, first = threading.Event(), []  # the first of READY and TRANSIENT_FAILURE the channel reaches

    def seen(state) -> None:
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE) and not first:
            first.append(state)
            settled.set()

    deadline = time.monotonic() + args.timeout
    channel.subscribe(seen, try_to_connect=True)
    try:
        if not settled.wait(args.timeout):
            raise ConnectionError(f"cannot reach server at {args.server} within {args.timeout:g}s")
    finally:
        channel.unsubscribe(seen)
    if first[0] == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
        _probe(channel, args, max(0.1, deadline - time.monotonic()))  # raises with grpc's reason, unless the server came up meanwhile


def unary(method, request, timeout: float):
    """method(request, timeout=timeout), the way every ferclient call is made: as a future. Ctrl-C in a blocking call's
    wait left grpc's call state behind, and closing the channel then waited for it for ever (ferclient watch hung after
    "interrupted" when Ctrl-C came while it checked a refused server); a future's wait is interrupted cleanly, and the
    call cancelled."""
    call = method.future(request, timeout=timeout)
    try:
        return call.result()
    except KeyboardInterrupt:
        call.cancel()
        raise


def _probe(channel, args, timeout: float) -> None:
    """One health check (open to every caller, even without a token) on a channel that failed to connect: ConnectionError
    with the reason grpc gives, as `send`'s message words it; returns when the call was answered at all."""
    import grpc

    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=bytes, response_deserializer=bytes)
    try:
        unary(check, b"", timeout)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            raise ConnectionError(rpc_error_message(e, args)) from None
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise ConnectionError(f"cannot reach server at {args.server} within {args.timeout:g}s") from None
        # anything else (NOT_FOUND for an unknown service, UNIMPLEMENTED) came from a server: it is reachable


def _check_pair(cert_path: str, key_path: str, key: bytes, cert: bytes) -> None:
    """ChannelSettingError when the client key is not the certificate's: grpc printed a dozen lines of its own and
    reported a server it could not reach."""
    import ssl

    from ferwire.credentials import load_pair

    try:
        load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_path, key_path, "client TLS", (key, cert))
    except ValueError as e:
        raise ChannelSettingError(str(e)) from None


def _bearer(value: str):
    """A client interceptor adding `authorization: Bearer <value>` to every call (grpc imported lazily)."""
    import grpc

    header = ("authorization", f"Bearer {value}")

    class Details(grpc.ClientCallDetails):
        def __init__(self, d):
            self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
            self.wait_for_ready, self.compression = getattr(d, "wait_for_ready", None), getattr(d, "compression", None)
            self.metadata = list(d.metadata or []) + [header]

    class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(Details(details), request)

        intercept_unary_stream = intercept_unary_unary
        intercept_stream_unary = intercept_unary_unary
        intercept_stream_stream = intercept_unary_unary

    return BearerToken()


def rpc_error_message(e, args, timeout: float | None = None) -> str:
    """One line for a failed call, saying what the user can do about it (args: the subcommand's connection flags;
    timeout: the deadline the call had, when it is not --timeout)."""
    import grpc

    server, timeout = args.server, args.timeout if timeout is None else timeout
    code = e.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        details = urllib.parse.unquote(e.details() or "")  # grpc writes the address it tried URL-quoted: ipv6:%5B::1%5D:50051
        return f"cannot reach server at {server} ({details}){_unreachable_hint(details, args)}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"deadline exceeded: no answer from {server} within {timeout:g}s"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"server refused the token: {e.details()} (give one with --token-file or FERCODEC_TOKEN)"
    return f"server refused the request: {code.name}: {e.details()}"


def _unreachable_hint(details: str, args) -> str:
    """What a refused connection or handshake most likely means, from grpc's details and the TLS flags given."""
    low = details.lower()
    if "certificate_verify_failed" in low:
        if args.tls_ca in (None, SYSTEM_CAS):
            return "; the server's certificate is not signed by a public CA: give its CA with --tls-ca"
        return f"; the server's certificate does not chain to --tls-ca {args.tls_ca}"
    if "not in peer certificate" in low or "hostname verification" in low:
        return "; the server's certificate is for another name: reach it by a name the certificate holds"
    if "socket closed" in low or "connection reset" in low:
        if not (args.tls_ca or args.tls_cert):
            return "; if the server uses TLS, give its CA with --tls-ca"
        if not args.tls_cert:
            return "; if the server asks for a client certificate (mutual TLS), give --tls-cert and --tls-key"
        return "; the server may not trust --tls-cert (mutual TLS: it must be signed by a CA the server was given)"
    if "wrong_version_number" in low or "wrong version number" in low:  # a TLS hello answered in plaintext HTTP/2
        return "; the server speaks plaintext, not TLS: leave out --tls-ca (and --tls-cert, --tls-key), or start the server with TLS"
    if "backend unhealthy" in low:  # its health for FerCodec is not SERVING (see SERVICE_CONFIG)
        return "; it is not serving: starting up or shutting down (try again, or another replica)"
    if not target_is_local(args.server) and "refused" in low:
        return "; a ferserver there serves only its own machine unless started with --host 0.0.0.0"
    return ""

