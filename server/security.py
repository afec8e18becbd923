"""Who may talk to ferserver: TLS (optionally mutual) on the port, bearer tokens on every call but health checks.

Tokens are compared in constant time (hashed to equal length first, every
token checked) and never logged. Tokens and certificates rotate without a
restart: CredentialWatcher puts a new version of their files in force when the
files change or on SIGHUP; one that does not load keeps the old in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import ssl
import stat
import threading

import grpc

from ferwire.credentials import load_pair, read, read_pem

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


def _tls_context(cert: str, key: str, what: str, pair: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
    """A server TLS context holding the pair; ValueError naming both files when the key is not the certificate's
    (what: "TLS", "metrics TLS"). pair: (key, certificate) bytes already read from those files, checked instead of
    reading them again, so that what is checked is what is used even while a renewal rewrites the files."""
    return load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key, what, pair)


EXPIRY_WARNING_DAYS = 14


def warn_if_expiring(cert: str, what: str, now: float | None = None) -> None:
    """A warning when the certificate (the chain's first) has expired, is not valid yet, or expires within
    EXPIRY_WARNING_DAYS: the server would start, or take the renewal, and every handshake would then fail."""
    import time

    try:  # CPython's own certificate reader (its ssl tests use it); no parser is public, and cryptography is not a server dependency
        info = ssl._ssl._test_decode_cert(cert)
        not_before, not_after = ssl.cert_time_to_seconds(info["notBefore"]), ssl.cert_time_to_seconds(info["notAfter"])
    except (AttributeError, KeyError, ValueError, OSError, ssl.SSLError):
        return  # no reader in this Python, or nothing to read: the load itself reports a broken file
    now = time.time() if now is None else now
    if now > not_after:
        log.warning("%s %s expired on %s: every TLS handshake will fail until it is renewed", what, cert, info["notAfter"])
    elif now < not_before:
        log.warning("%s %s is not valid until %s: every TLS handshake will fail until then", what, cert, info["notBefore"])
    elif not_after - now < EXPIRY_WARNING_DAYS * 86400:
        log.warning("%s %s expires on %s, in %.1f days: renew it", what, cert, info["notAfter"], (not_after - now) / 86400)


class ServerTLS:
    """The gRPC port's TLS pair and, for mutual TLS, the CA its clients' certificates must chain to.

    `credentials` are grpc's dynamic ones: grpc asks before every new connection's handshake whether a new pair is in
    force, so one put there by `load` (CredentialWatcher: a renewed certificate) serves every connection opened after,
    while open connections keep the one they began with."""

    what = "TLS certificate"

    def __init__(self, cert: str, key: str, client_ca: str | None):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.files = tuple(f for f in (cert, key, client_ca) if f)
        self._pending = None
        self.credentials = grpc.dynamic_ssl_server_credentials(self._read(), self._next, require_client_authentication=client_ca is not None)

    def _read(self) -> grpc.ServerCertificateConfiguration:
        warn_if_shared(self.key, "TLS key")
        pair = (read_pem(self.key, "TLS key", "key"), read_pem(self.cert, "TLS certificate", "certificate"))
        _tls_context(self.cert, self.key, "TLS", pair)  # the bytes grpc gets, not the files read again
        warn_if_expiring(self.cert, "TLS certificate")
        ca = read_pem(self.client_ca, "client CA bundle", "certificate") if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def load(self) -> str:
        self._pending = self._read()
        return "new connections get it"

    def _next(self):
        config, self._pending = self._pending, None
        return config  # None: keep the one in force


class MetricsTLS:
    """The metrics page's TLS: its context (`context`; None: plain HTTP), checked at start so that a wrong file fails it
    with one line naming it, before the models load. `load` builds a new context from the files, which every connection
    after it gets (ferserver.metrics.serve_page wraps each connection with the context in force): a renewed pair, and a
    client CA bundle exactly as the file now has it (a CA taken out of it is no longer trusted; Python's ssl can add CAs
    to a context but never forget one, hence a new context)."""

    what = "metrics TLS certificate"

    def __init__(self, cert: str | None, key: str | None, client_ca: str | None):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.files = tuple(f for f in (cert, key, client_ca) if f)
        self.context = self._build() if cert else None  # now rather than after the models

    def _build(self) -> ssl.SSLContext:
        """The page's TLS context from the files; one line naming the file that is wrong."""
        read_pem(self.cert, "metrics TLS certificate", "certificate")
        warn_if_shared(self.key, "metrics TLS key")
        read_pem(self.key, "metrics TLS key", "key")
        ctx = _tls_context(self.cert, self.key, "metrics TLS")
        warn_if_expiring(self.cert, "metrics TLS certificate")
        if self.client_ca:
            read_pem(self.client_ca, "metrics client CA bundle", "certificate")
            try:
                ctx.load_verify_locations(self.client_ca)
            except ssl.SSLError as e:
                raise ValueError(f"metrics client CA bundle {self.client_ca} does not load: {getattr(e, 'reason', None) or e}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def load(self) -> str:
        if self.context is None:  # the page is plain HTTP: no TLS to renew
            return "no metrics TLS in force"
        self.context = self._build()  # every file checked before the page's context changes
        return "new scrapes get it"


def _stamp(paths: tuple[str, ...]) -> tuple:
    """What says a file changed: (mtime, size, inode) per path (None for one that cannot be read). A Kubernetes Secret
    volume swaps a symlink to a new directory, which changes all three."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class CredentialWatcher:
    """Puts a new version of the server's credential files in force without a restart: the token file, the gRPC port's
    TLS pair and client CA, the metrics page's. `check` re-reads a credential whose files changed since it last looked
    (every --credential-check-s seconds, `watch`), or every one (force: SIGHUP). A version that does not load (no
    tokens, a key that is not the certificate's, a file caught half written) is refused with one log line and the one
    in force kept; it is tried again when its files next change.

    Why: certificates expire and are renewed (cert-manager, a Kubernetes Secret updated in place), tokens are rotated;
    a restart for either drops the calls in flight and the batches that were forming."""

    def __init__(self, credentials: list):
        self.credentials = [c for c in credentials if c is not None and c.files]
        self._seen = [_stamp(c.files) for c in self.credentials]
        self._lock = threading.Lock()  # SIGHUP's check and the periodic one run on threads of their own

    def check(self, force: bool = False) -> None:
        if force and not self.credentials:
            log.info("SIGHUP: no token file or TLS files to re-read; serving on")
        with self._lock:
            self._check(force)

    def _check(self, force: bool) -> None:
        for i, c in enumerate(self.credentials):
            now = _stamp(c.files)
            if now == self._seen[i] and not force:
                continue
            self._seen[i] = now
            try:
                done = c.load()
            except (OSError, ValueError, ssl.SSLError) as e:
                log.error("%s not re-read, the one in force stays: %s", c.what, e)
            else:
                log.info("%s re-read (%s): %s", c.what, ", ".join(c.files), done)

    async def watch(self, every: float) -> None:
        """check() every `every` seconds (0: never), off the event loop (it reads files)."""
        if every <= 0 or not self.credentials:
            return
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(self.check)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    """The bearer tokens a server accepts, from a file of one token per line (# comments allowed)."""

    what = "token file"

    def __init__(self, path: str):
        self.path = path
        self.files = (path,)
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

    def load(self) -> str:
        self._digests = self._load()
        n = len(self._digests)
        return f"{n} token{'s' if n != 1 else ''} in force"

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():  # the scheme is case-insensitive (RFC 7235): proxies send "bearer"
            return False
        given, ok = _digest(token.strip()), False
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
