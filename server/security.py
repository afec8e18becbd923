"""Who may talk to ferserver: TLS (optionally mutual) on the port, bearer tokens on every call but health checks.

Tokens are compared in constant time (hashed to equal length first, every
token checked), never logged, and re-read from their file on SIGHUP so they
rotate without a restart; a reload that fails keeps the tokens in force.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import stat

import grpc

from ferwire.credentials import read, read_pem

log = logging.getLogger("ferserver")
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # orchestrators probe health without credentials


def warn_if_shared(path: str, what: str) -> None:
    """A warning when a secret's file is open to every user of this machine (its "other" bits), as ssh says of a private
    key: a token or key anyone on the host can read is no longer a secret. Group bits pass: Kubernetes mounts secrets
    0440 for the pod's fsGroup (deploy/k8s)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # reading it reports what is wrong
    if mode & stat.S_IRWXO:
        log.warning("%s %s is open to every user of this machine (mode %03o): chmod 600 it", what, path, mode & 0o777)


def server_credentials(cert: str, key: str, client_ca: str | None) -> grpc.ServerCredentials:
    """TLS with cert/key; with client_ca, every client must present a certificate it signed (mTLS)."""
    warn_if_shared(key, "TLS key")
    pair = (read_pem(key, "TLS key", "key"), read_pem(cert, "TLS certificate", "certificate"))
    ca = read_pem(client_ca, "client CA bundle", "certificate") if client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def metrics_tls(cert: str | None, key: str | None, client_ca: str | None) -> dict:
    """prometheus_client.start_http_server's TLS arguments: none (plain HTTP) without cert, HTTPS with it, and with
    client_ca only scrapers presenting a certificate it signed are answered. The files are checked first, so a wrong
    one fails the start with one line naming it, before the models load."""
    if not cert:
        return {}
    read_pem(cert, "metrics TLS certificate", "certificate")
    warn_if_shared(key, "metrics TLS key")
    read_pem(key, "metrics TLS key", "key")
    if client_ca:
        read_pem(client_ca, "metrics client CA bundle", "certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # what the metrics server will load, now rather than after the models
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise ValueError(f"metrics TLS key {key} does not load with certificate {cert}: {getattr(e, 'reason', None) or e}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(client_ca)
        except ssl.SSLError as e:
            raise ValueError(f"metrics client CA bundle {client_ca} does not load: {getattr(e, 'reason', None) or e}") from None
    return {"certfile": cert, "keyfile": key, "client_cafile": client_ca, "client_auth_required": bool(client_ca)}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    """The bearer tokens a server accepts, from a file of one token per line (# comments allowed)."""

    def __init__(self, path: str):
        self.path = path
        self._digests = self._load()
        warn_if_shared(path, "token file")

    def _load(self) -> list[bytes]:
        lines = read(self.path, "token file").decode(errors="replace").splitlines()
        tokens = [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]
        if not tokens:
            raise ValueError(f"token file {self.path} holds no tokens")
        return [_digest(t) for t in tokens]

    def __len__(self) -> int:
        return len(self._digests)

    def reload(self) -> None:
        """Re-read the file (on SIGHUP); on any error keep the tokens in force and say why."""
        try:
            self._digests = self._load()
        except (OSError, ValueError) as e:
            log.error("token reload failed, keeping the %d tokens in force: %s", len(self._digests), e)
            return
        log.info("token file re-read: %d tokens in force", len(self._digests))

    def accepts(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        given, ok = _digest(authorization[len("Bearer "):].strip()), False
        for d in self._digests:  # no early exit: the time taken does not say which token matched
            ok |= hmac.compare_digest(given, d)
        return ok


class TokenAuth(grpc.aio.ServerInterceptor):
    """Refuses every call but health checks without a valid bearer token: UNAUTHENTICATED, counted per method."""

    def __init__(self, tokens: TokenStore, metrics):
        self.tokens, self.metrics = tokens, metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        auth = next((v for k, v in (details.invocation_metadata or ()) if k == "authorization"), None)
        if self.tokens.accepts(auth if isinstance(auth, str) else None):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        self.metrics.requests.labels(method, grpc.StatusCode.UNAUTHENTICATED.name).inc()
        return _refusal(handler, "missing or invalid bearer token" if auth else "missing bearer token: send `authorization: Bearer <token>`")


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as handler that answers UNAUTHENTICATED without running it."""

    async def deny(_request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kind = ("unary_unary" if not handler.request_streaming and not handler.response_streaming else
            "unary_stream" if not handler.request_streaming else
            "stream_unary" if not handler.response_streaming else "stream_stream")
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
