"""TLS, mutual TLS and bearer tokens on a real ferserver, with certificates made at test time."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
from ferserver.security import TokenStore
from ferwire.credentials import is_loopback, target_is_local

from ..conftest import ServerProcess, run_client
from .test_e2e import _counter

pytestmark = pytest.mark.slow
TOKEN, ROTATED = "tok-" + "a" * 40, "tok-" + "b" * 40


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject_key, name: str, issuer=None, ca: bool = False, server: bool = False):
    """A certificate for subject_key signed by issuer=(cert, key), self-signed when issuer is None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer or (None, subject_key)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_cert.subject if issuer_cert else subject)
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Paths of a CA, a server pair it signed, a client pair it signed, and a rogue CA with its own client pair."""
    from cryptography.hazmat.primitives import serialization

    d = tmp_path_factory.mktemp("pki")

    def write(name, cert, key):
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    ca_key, rogue_key = _key(), _key()
    ca, rogue = _cert(ca_key, "fercodec test CA", ca=True), _cert(rogue_key, "rogue CA", ca=True)
    write("ca", ca, None)
    write("rogue-ca", rogue, None)
    for name, issuer, server in (("server", (ca, ca_key), True), ("client", (ca, ca_key), False), ("rogue-client", (rogue, rogue_key), False)):
        k = _key()
        write(name, _cert(k, name, issuer=issuer, server=server), k)
    (d / "tokens").write_text(f"# rotated monthly\n{TOKEN}\n\n")
    (d / "token").write_text(TOKEN + "\n")
    (d / "wrong-token").write_text("tok-" + "c" * 40 + "\n")
    return d


@pytest.fixture(scope="module")
def tls_server(pki):
    """TLS and bearer tokens, with a plaintext health-only port for probes."""
    with ServerProcess("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--auth-token-file", str(pki / "tokens"),
                       "--health-port", "0") as s:
        yield s


@pytest.fixture(scope="module")
def mtls_server(pki):
    """Mutual TLS, no tokens, bound to every interface (so no plaintext warning is expected); the metrics page over
    HTTPS, answering only scrapers with a certificate the CA signed."""
    with ServerProcess("--host", "0.0.0.0", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                       "--tls-client-ca", str(pki / "ca.pem"), "--metrics-tls-cert", str(pki / "server.pem"),
                       "--metrics-tls-key", str(pki / "server.key"), "--metrics-tls-client-ca", str(pki / "ca.pem")) as s:
        yield s


def _channel(address, pki, ca="ca", client=None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / f"{ca}.pem").read_bytes(),
        private_key=(pki / f"{client}.key").read_bytes() if client else None,
        certificate_chain=(pki / f"{client}.pem").read_bytes() if client else None,
    )
    return grpc.secure_channel(address, creds)


def _info(channel, token=None):
    md = (("authorization", f"Bearer {token}"),) if token else None
    return pb_grpc.FerCodecStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10, metadata=md)


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code()


def test_tls_with_the_right_ca_and_token_answers(tls_server, pki):
    with _channel(tls_server.address, pki) as ch:
        assert _info(ch, TOKEN).model_id.startswith("fercodec-v1")
    assert "TLS, 1 bearer token;" in tls_server.ready_line and "PLAINTEXT" not in tls_server.output()


def test_the_client_can_trust_the_cas_grpc_trusts(tls_server, pki):
    """--tls-ca system: grpc's default roots, here pointed at the test CA as an operator's trust store would hold a public one."""
    import subprocess

    from ..conftest import BIN

    def info(**env):
        return subprocess.run([str(BIN / "ferclient"), "info", "--server", tls_server.address, "--tls-ca", "system", "--timeout", "5"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "FERCODEC_TOKEN": TOKEN, **env})

    r = info(GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(pki / "ca.pem"))
    assert r.returncode == 0 and "fercodec-v1" in r.stdout, r.stderr
    r = info()  # grpc's bundled public CAs never signed the test CA's server certificate
    assert r.returncode == 1 and "cannot reach server" in r.stderr, r.stderr


def test_tls_refuses_clients_that_do_not_trust_its_ca(tls_server, pki):
    with _channel(tls_server.address, pki, ca="rogue-ca") as ch:
        assert _code(lambda: _info(ch, TOKEN)) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(tls_server.address) as ch:  # plaintext against a TLS port
        assert _code(lambda: _info(ch, TOKEN)) == grpc.StatusCode.UNAVAILABLE


def test_missing_or_wrong_token_is_unauthenticated_and_counted_but_health_stays_open(tls_server, pki):
    before = tls_server.metrics()
    with _channel(tls_server.address, pki) as ch:
        assert _code(lambda: _info(ch)) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: _info(ch, "tok-" + "c" * 40)) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: pb_grpc.FerCodecStub(ch).Recognize(pb.RecognizeRequest(faces=[b"x"]), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        stream = pb_grpc.FerCodecStub(ch).RecognizeStream(iter([pb.RecognizeRequest(faces=[b"x"])]), timeout=10)
        assert _code(lambda: list(stream)) == grpc.StatusCode.UNAUTHENTICATED
        for service in ("fercodec.v1.FerCodec", "fercodec.v1.EncoderRepository"):
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        # bytes that are not a request, without a token: UNAUTHENTICATED first (not INVALID_ARGUMENT, not UNKNOWN)
        assert _code(lambda: ch.unary_unary("/fercodec.v1.FerCodec/Recognize")(b"\xff\xff not protobuf", timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        # the scheme is case-insensitive (RFC 7235); some proxies and SDKs send it in lower case
        for scheme in ("bearer", "BEARER"):
            md = (("authorization", f"{scheme} {TOKEN}"),)
            assert pb_grpc.FerCodecStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=10, metadata=md).model_id
    after = tls_server.metrics()
    grew = {m: _counter(after, "fercodec_requests_total", method=m, code="UNAUTHENTICATED") - _counter(before, "fercodec_requests_total", method=m, code="UNAUTHENTICATED")
            for m in ("GetModelInfo", "Recognize", "RecognizeStream")}
    assert grew == {"GetModelInfo": 2, "Recognize": 2, "RecognizeStream": 1}
    assert TOKEN not in tls_server.output() and "c" * 40 not in tls_server.output()


def test_reflection_follows_the_token_rule(tls_server, pki):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with _channel(tls_server.address, pki) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        assert _code(lambda: list(stub.ServerReflectionInfo(iter([ask]), timeout=10))) == grpc.StatusCode.UNAUTHENTICATED
        replies = list(stub.ServerReflectionInfo(iter([ask]), timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),)))
    assert "fercodec.v1.FerCodec" in {s.name for s in replies[0].list_services_response.service}


def test_ferclient_sends_over_tls_with_a_token(tls_server, pki, astronaut):
    base = ["--server", tls_server.address, "--tls-ca", str(pki / "ca.pem")]
    r = run_client("send", str(astronaut), "--json", *base, "--token-file", str(pki / "token"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["label"] == "happy"
    r = run_client("info", *base, "--token-file", str(pki / "wrong-token"))
    assert r.returncode == 1 and r.stderr.startswith("ferclient: server refused the token: ") and r.stderr.count("\n") == 1
    env = {**os.environ, "FERCODEC_TOKEN": TOKEN, "FERCODEC_TLS_CA": str(pki / "ca.pem")}
    import subprocess

    from ..conftest import BIN

    r = subprocess.run([str(BIN / "ferclient"), "info", "--server", tls_server.address], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["model_id"].startswith("fercodec-v1"), r.stderr


def _wait_for(server, text: str, count: int = 1, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while server.output().count(text) < count and time.time() < deadline:
        time.sleep(0.1)
    assert server.output().count(text) >= count, f"no {count} x {text!r} in:\n{server.output()}"


def test_tokens_rotate_on_sighup(tls_server, pki):
    with _channel(tls_server.address, pki) as ch:
        (pki / "tokens").write_text(ROTATED + "\n")
        tls_server.proc.send_signal(signal.SIGHUP)
        _wait_for(tls_server, "token file re-read (")
        assert "1 token in force" in tls_server.output()
        assert _code(lambda: _info(ch, TOKEN)) == grpc.StatusCode.UNAUTHENTICATED
        assert _info(ch, ROTATED).model_id
        (pki / "tokens").write_text("# nothing\n")  # a broken rotation keeps the tokens in force
        tls_server.proc.send_signal(signal.SIGHUP)
        _wait_for(tls_server, "token file not re-read, the one in force stays")
        assert _info(ch, ROTATED).model_id
        (pki / "tokens").write_text(TOKEN + "\n")
        tls_server.proc.send_signal(signal.SIGHUP)
        _wait_for(tls_server, "token file re-read (", 2)
    assert tls_server.proc.poll() is None
    assert ROTATED not in tls_server.output()


def test_certificates_and_tokens_rotate_without_a_restart(pki, tmp_path):
    """A renewed gRPC and metrics certificate (here from another CA, so that the client can tell which one it met) and a
    rotated token file are put in force by the server's periodic check, no signal: new connections get the new
    certificate, an open one keeps working; a half-done rotation (a key that is not the certificate's) is refused and
    the old pair kept."""
    import shutil

    from cryptography.hazmat.primitives import serialization

    live = tmp_path / "live"
    live.mkdir()
    for name in ("server.pem", "server.key", "tokens"):
        shutil.copy(pki / name, live / name)
        (live / name).chmod(0o600)
    ca2_key, new_key = _key(), _key()
    ca2 = _cert(ca2_key, "renewal CA", ca=True)
    (tmp_path / "ca2.pem").write_bytes(ca2.public_bytes(serialization.Encoding.PEM))
    new_cert = _cert(new_key, "renewed", issuer=(ca2, ca2_key), server=True).public_bytes(serialization.Encoding.PEM)
    new_key_pem = new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tls = ["--tls-cert", str(live / "server.pem"), "--tls-key", str(live / "server.key")]
    with ServerProcess(*tls, "--metrics-tls-cert", str(live / "server.pem"), "--metrics-tls-key", str(live / "server.key"),
                       "--auth-token-file", str(live / "tokens"), "--credential-check-s", "0.2") as s:
        old = _channel(s.address, pki)
        assert _info(old, TOKEN).model_id and "fercodec_requests_total" in _scrape(s.metrics_port, pki)
        (live / "server.key").write_bytes(new_key_pem)  # the key first: for a moment the pair does not match
        _wait_for(s, "TLS certificate not re-read, the one in force stays")
        _wait_for(s, "metrics TLS certificate not re-read, the one in force stays")
        assert "does not load with certificate" in s.output()
        with _channel(s.address, pki) as ch:  # the old pair still serves new connections
            assert _info(ch, TOKEN).model_id
        (live / "server.pem").write_bytes(new_cert)
        (live / "tokens").write_text(ROTATED + "\n")
        _wait_for(s, "TLS certificate re-read (")
        _wait_for(s, "metrics TLS certificate re-read (")
        _wait_for(s, "token file re-read (")
        with _channel(s.address, pki) as ch:  # the first CA no longer vouches for the server
            assert _code(lambda: _info(ch, ROTATED)) == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(s.address, grpc.ssl_channel_credentials((tmp_path / "ca2.pem").read_bytes())) as ch:
            assert _info(ch, ROTATED).model_id
            assert _code(lambda: _info(ch, TOKEN)) == grpc.StatusCode.UNAUTHENTICATED
        assert _info(old, ROTATED).model_id  # the connection opened before the renewal keeps its handshake
        old.close()
        assert "fercodec_requests_total" in _scrape(s.metrics_port, tmp_path, ca="ca2")
        with pytest.raises(OSError):
            _scrape(s.metrics_port, pki)
        assert s.proc.poll() is None and TOKEN not in s.output() and ROTATED not in s.output()


def test_a_client_ca_taken_out_of_the_bundle_is_no_longer_trusted(pki, tmp_path):
    """mTLS on both ports; the client CA bundle re-read holds another CA only: clients of the CA it held are refused
    on new connections (gRPC and the metrics page), clients of the new one admitted. Python's ssl cannot drop a CA
    from a context, so the page's is replaced (MetricsTLS.load; each connection is wrapped with the one in force)."""
    import shutil

    bundle = tmp_path / "client-ca.pem"
    shutil.copy(pki / "ca.pem", bundle)
    with ServerProcess("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(bundle),
                       "--metrics-tls-cert", str(pki / "server.pem"), "--metrics-tls-key", str(pki / "server.key"),
                       "--metrics-tls-client-ca", str(bundle), "--credential-check-s", "0.2") as s:
        with _channel(s.address, pki, client="client") as ch:
            assert _info(ch).model_id
        assert "fercodec_requests_total" in _scrape(s.metrics_port, pki, client="client")
        bundle.write_bytes((pki / "rogue-ca.pem").read_bytes())
        _wait_for(s, "metrics TLS certificate re-read (")
        _wait_for(s, "TLS certificate re-read (")
        with _channel(s.address, pki, client="client") as ch:
            assert _code(lambda: _info(ch)) == grpc.StatusCode.UNAVAILABLE
        with _channel(s.address, pki, client="rogue-client") as ch:
            assert _info(ch).model_id
        with pytest.raises(OSError):
            _scrape(s.metrics_port, pki, client="client")
        assert "fercodec_requests_total" in _scrape(s.metrics_port, pki, client="rogue-client")


def test_a_certificate_expired_not_yet_valid_or_nearly_due_is_warned_of(pki, caplog):
    """An expired certificate was served without a word; every client's handshake then failed. (The test certificates
    are valid from 5 minutes ago for 30 days; `now` moves the clock.)"""
    import logging

    from ferserver.security import warn_if_expiring

    cert = str(pki / "server.pem")
    with caplog.at_level(logging.WARNING, logger="ferserver"):
        for days, says in ((31, "expired on"), (-1, "is not valid until"), (20, "in 10.0 days: renew it"), (1, None)):
            caplog.clear()
            warn_if_expiring(cert, "TLS certificate", now=time.time() + days * 86400)
            assert (says in caplog.text) if says else not caplog.text, (days, caplog.text)


def test_the_tls_pair_checked_is_the_pair_served(pki, monkeypatch):
    """A renewal caught half-written (the new certificate read, the old key) is refused, not handed to grpc: the check
    reads the bytes grpc gets, not the files again, which by then may hold a matching pair."""
    from ferserver import security

    real = security.read_pem
    stale = (pki / "client.key").read_bytes()  # a key that is not the server certificate's
    monkeypatch.setattr(security, "read_pem", lambda path, what, kind: stale if kind == "key" else real(path, what, kind))
    with pytest.raises(ValueError, match="does not load with certificate"):
        security.ServerTLS(str(pki / "server.pem"), str(pki / "server.key"), None)
    monkeypatch.setattr(security, "read_pem", real)
    security.ServerTLS(str(pki / "server.pem"), str(pki / "server.key"), None)  # the files themselves match


def test_a_secret_volume_update_is_seen(tmp_path, caplog):
    """Kubernetes updates a Secret volume by pointing its ..data symlink at a new directory; the file's path stays. The
    watcher sees it (the stamp follows the link), and a check with nothing changed re-reads nothing."""
    import logging

    from ferserver.security import CredentialWatcher

    vol = tmp_path / "secret"
    vol.mkdir()
    for version, token in (("..v1", TOKEN), ("..v2", ROTATED)):
        (vol / version).mkdir()
        (vol / version / "tokens").write_text(token + "\n")
        (vol / version / "tokens").chmod(0o600)
    (vol / "..data").symlink_to("..v1")
    (vol / "tokens").symlink_to("..data/tokens")
    store = TokenStore(str(vol / "tokens"))
    watcher = CredentialWatcher([store, None])
    with caplog.at_level(logging.INFO, logger="ferserver"):
        watcher.check()
        assert "re-read" not in caplog.text and store.accepts(f"Bearer {TOKEN}")
        (vol / "..tmp").symlink_to("..v2")
        os.replace(vol / "..tmp", vol / "..data")  # the kubelet's atomic swap
        watcher.check()
    assert store.accepts(f"Bearer {ROTATED}") and not store.accepts(f"Bearer {TOKEN}")
    assert caplog.text.count("token file re-read") == 1 and ROTATED not in caplog.text


def test_sighup_without_credentials_keeps_serving(server):
    server.proc.send_signal(signal.SIGHUP)
    _wait_for(server, "SIGHUP: no token file or TLS files to re-read; serving on")
    assert server.proc.poll() is None
    r = run_client("info", "--server", server.address)
    assert r.returncode == 0, r.stderr


def test_mutual_tls_refuses_clients_without_a_trusted_certificate(mtls_server, pki):
    address = f"127.0.0.1:{mtls_server.port}"
    with _channel(address, pki, client="client") as ch:
        assert _info(ch).model_id
    for client in (None, "rogue-client"):
        with _channel(address, pki, client=client) as ch:
            assert _code(lambda: _info(ch)) == grpc.StatusCode.UNAVAILABLE
    r = run_client("info", "--server", address, "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key"))
    assert r.returncode == 0, r.stderr
    assert "mutual TLS" in mtls_server.ready_line and "PLAINTEXT" not in mtls_server.output()


def test_failed_handshakes_are_one_line_that_says_what_to_give(mtls_server, pki):
    """grpc's C core printed its own lines before ferclient's (2 for an untrusted CA, 12 for a key that is not the
    certificate's), and the line said only "Socket closed": now one line, with what to give."""
    address = f"127.0.0.1:{mtls_server.port}"
    ca, client = ["--tls-ca", str(pki / "ca.pem")], ["--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key")]
    for flags, hint in ((["--tls-ca", str(pki / "rogue-ca.pem"), *client[:2], "--tls-key", str(pki / "client.key")],
                         f"does not chain to --tls-ca {pki / 'rogue-ca.pem'}"),
                        (ca, "give --tls-cert and --tls-key"),
                        ([], "if the server uses TLS, give its CA with --tls-ca")):
        r = run_client("info", "--server", address, *flags)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.rstrip().endswith(hint), r.stderr
    r = run_client("info", "--server", address, *ca, "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "rogue-client.key"))
    assert r.returncode == 2 and r.stderr == (f"ferclient: client TLS key {pki / 'rogue-client.key'} does not load with certificate "
                                              f"{pki / 'client.pem'}: KEY_VALUES_MISMATCH\n"), r.stderr


def test_tls_against_a_plaintext_server_says_so(server, pki):
    """--tls-ca to a server without TLS was grpc's raw "WRONG_VERSION_NUMBER" with no hint (an audit, 2026-12-08)."""
    r = run_client("info", "--server", server.address, "--tls-ca", str(pki / "ca.pem"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "the server speaks plaintext, not TLS: leave out --tls-ca" in r.stderr, r.stderr


def _scrape(port: int, pki, client: str | None = None, https: bool = True, ca: str = "ca") -> str:
    import ssl
    import urllib.request

    ctx = None
    if https:
        ctx = ssl.create_default_context(cafile=str(pki / f"{ca}.pem"))
        if client:
            ctx.load_cert_chain(str(pki / f"{client}.pem"), str(pki / f"{client}.key"))
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        return r.read().decode()


def test_the_metrics_page_can_demand_tls_and_a_client_certificate(mtls_server, pki):
    assert f"metrics https, client certificates 127.0.0.1:{mtls_server.metrics_port}/metrics" in mtls_server.ready_line
    assert "fercodec_requests_total" in _scrape(mtls_server.metrics_port, pki, client="client")
    for client, https in ((None, True), ("rogue-client", True), (None, False)):  # no certificate, one the CA never signed, plain HTTP
        with pytest.raises(OSError):  # urllib's URLError, ssl's SSLError, a reset connection: all OSError
            _scrape(mtls_server.metrics_port, pki, client=client, https=https)



def test_an_idle_connection_does_not_hold_up_the_tls_metrics_page(mtls_server, pki):
    """prometheus_client's TLS page shook hands in its one accept loop: one TCP connection that sent nothing (no
    certificate needed) stopped every scrape until it closed. The handshake now runs on the connection's own thread."""
    import socket

    idle = [socket.create_connection(("127.0.0.1", mtls_server.metrics_port)) for _ in range(3)]
    try:
        t0 = time.monotonic()
        assert "fercodec_requests_total" in _scrape(mtls_server.metrics_port, pki, client="client")
        assert time.monotonic() - t0 < 5
    finally:
        for s in idle:
            s.close()


def test_metrics_tls_settings_are_checked_at_start(pki, tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate")
    for extra, message in ((["--metrics-tls-cert", str(pki / "server.pem")], "--metrics-tls-cert and --metrics-tls-key go together"),
                           (["--metrics-tls-client-ca", str(pki / "ca.pem")], "--metrics-tls-client-ca needs --metrics-tls-cert"),
                           (["--metrics-tls-cert", str(tmp_path / "junk.pem"), "--metrics-tls-key", str(pki / "server.key")],
                            f"metrics TLS certificate {tmp_path / 'junk.pem'} is not PEM"),
                           (["--metrics-tls-cert", str(pki / "server.pem"), "--metrics-tls-key", str(pki / "client.key")],
                            f"metrics TLS key {pki / 'client.key'} does not load with certificate {pki / 'server.pem'}: KEY_VALUES_MISMATCH")):
        with pytest.raises(RuntimeError, match="exited with 2") as e:
            ServerProcess(*extra, timeout=120)
        assert "ferserver: " in str(e.value) and message in str(e.value) and "Traceback" not in str(e.value), str(e.value)


def test_tls_without_authentication_on_a_network_warns_and_ipv6_literals_bind(pki):
    """--host :: (an IPv6 literal) failed after the models loaded (grpc read ":::50051" as a misformatted name); and TLS on a
    network address without tokens or client certificates started silently, open to anyone who reaches it."""
    with ServerProcess("--host", "::", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")) as s:
        assert "with TLS but no authentication: anyone who reaches it can send faces" in s.output()
        assert f"ready on :::{s.port} (TLS, no auth" in s.ready_line
        with _channel(s.address, pki) as ch:  # "::" takes IPv4 too (127.0.0.1)
            assert _info(ch).model_id


def test_plaintext_on_a_network_address_warns(astronaut):
    with ServerProcess("--host", "0.0.0.0", "--metrics-host", "0.0.0.0") as s:
        assert "serving PLAINTEXT on 0.0.0.0" in s.output()
        assert "metrics page in plain HTTP on 0.0.0.0, without authentication" in s.output()
        assert "plaintext, no auth" in s.ready_line
        # the client's side: faces sent unencrypted to another address are sent, with one warning line
        ip = _outward_address()
        if ip is None:
            pytest.skip("this machine has no address but loopback to reach its own server by")
        warning = f"ferclient: warning: faces go to {ip}:{s.port} unencrypted, readable on the way: give --tls-ca"
        for cmd in (["send", str(astronaut), "--json"], ["watch", str(astronaut), "--json"]):
            r = run_client(*cmd, "--server", f"{ip}:{s.port}")
            assert r.returncode == 0 and r.stderr.startswith(warning) and r.stderr.count("warning") == 1, r.stderr
            assert json.loads(r.stdout.splitlines()[0])["label"], r.stdout
        for where, extra in ((f"{ip}:{s.port}", ["--plaintext-token"]), (f"localhost:{s.port}", [])):  # told it is encrypted; this machine
            r = run_client("send", str(astronaut), "--json", "--server", where, *extra)
            assert r.returncode == 0 and "warning" not in r.stderr and r.stdout, r.stderr
        r = run_client("info", "--server", f"{ip}:{s.port}")  # no faces sent: nothing to warn of
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


class _DefaultHost(ServerProcess):
    """A ferserver started without --host, as a user starts it."""

    def command(self, extra) -> list[str]:
        cmd = super().command(extra)
        i = cmd.index("--host")
        return cmd[:i] + cmd[i + 2 :]


def _outward_address() -> str | None:
    """This machine's address on its network (the route to a private address; no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if is_loopback(ip) or ip == "0.0.0.0" else ip


def test_by_default_the_server_is_reachable_from_this_machine_only():
    with _DefaultHost("--metrics-port", "-1") as s:
        assert f"ready on localhost:{s.port} (plaintext, no auth" in s.ready_line and "PLAINTEXT" not in s.output()
        assert "this machine only: --host 0.0.0.0 serves the network" in s.ready_line
        r = run_client("info", "--server", f"localhost:{s.port}")
        assert r.returncode == 0 and "fercodec-v1" in r.stdout, r.stderr
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
        outward = _outward_address()
        if outward is None:
            pytest.skip("this machine has no network address to try the server on")
        with pytest.raises(ConnectionRefusedError):  # before the change (0.0.0.0 by default) this connected
            socket.create_connection((outward, s.port), timeout=5).close()
        r = run_client("info", "--server", f"{outward}:{s.port}", "--timeout", "5")  # what a client on another machine is told
        assert r.returncode == 1 and "serves only its own machine unless started with --host 0.0.0.0" in r.stderr, r.stderr


def _encrypted_key(path) -> None:
    """A private key encrypted with a passphrase, as `openssl genpkey -aes256` writes one."""
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"passphrase")))


def test_bad_credentials_stop_the_server_at_once_with_one_line(pki, tmp_path):
    (tmp_path / "empty").write_text("\n# only a comment\n")
    (tmp_path / "junk.pem").write_text("not a certificate")
    _encrypted_key(tmp_path / "encrypted.key")
    for extra, message in ((["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(pki / "server.key")], "cannot read TLS certificate"),
                           (["--tls-cert", str(tmp_path / "junk.pem"), "--tls-key", str(pki / "server.key")], "is not PEM"),
                           (["--tls-cert", str(pki / "server.key"), "--tls-key", str(pki / "server.key")], "is not PEM: no -----BEGIN CERTIFICATE----- line"),
                           (["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(tmp_path / "junk.pem")],
                            f"client CA bundle {tmp_path / 'junk.pem'} is not PEM"),
                           (["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "client.key")],
                            f"TLS key {pki / 'client.key'} does not load with certificate {pki / 'server.pem'}: KEY_VALUES_MISMATCH"),
                           (["--tls-cert", str(pki / "server.pem"), "--tls-key", str(tmp_path / "encrypted.key")],
                            f"TLS key {tmp_path / 'encrypted.key'} is encrypted with a passphrase, which gRPC cannot ask for"),
                           (["--auth-token-file", str(tmp_path / "empty")], "holds no tokens")):
        with pytest.raises(RuntimeError, match="exited with 2") as e:
            ServerProcess(*extra, timeout=60)
        assert "ferserver: " in str(e.value) and message in str(e.value) and "Traceback" not in str(e.value)


def test_client_setting_errors_are_one_line_exit_2(tmp_path, astronaut, pki):
    r = run_client("info", "--tls-ca", str(tmp_path / "missing.pem"))
    assert r.returncode == 2 and r.stderr.startswith("ferclient: cannot read CA bundle") and r.stderr.count("\n") == 1
    (tmp_path / "empty").write_text("\n")
    r = run_client("info", "--token-file", str(tmp_path / "empty"))
    assert r.returncode == 2 and "holds no token" in r.stderr and "Traceback" not in r.stderr
    r = run_client("info", "--tls-cert", str(tmp_path / "c.pem"))
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr
    # A file that is not the PEM it should be: one line naming it, not grpc's C-core lines and an "unreachable" server.
    (tmp_path / "photo.pem").write_bytes(astronaut.read_bytes())
    _encrypted_key(tmp_path / "encrypted.key")
    for flags, says in ((["--tls-ca", str(tmp_path / "photo.pem")], f"CA bundle {tmp_path / 'photo.pem'} is not PEM: no -----BEGIN CERTIFICATE----- line"),
                        (["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.key"), "--tls-key", str(pki / "client.key")],
                         f"TLS certificate {pki / 'client.key'} is not PEM"),
                        (["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.pem")],
                         f"TLS key {pki / 'client.pem'} is not PEM: no -----BEGIN ... PRIVATE KEY----- line"),
                        (["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"), "--tls-key", str(tmp_path / "encrypted.key")],
                         f"TLS key {tmp_path / 'encrypted.key'} is encrypted with a passphrase")):
        r = run_client("send", str(astronaut), *flags)
        assert r.returncode == 2 and r.stderr.startswith(f"ferclient: {says}") and r.stderr.count("\n") == 1, r.stderr


def test_the_client_sends_a_token_in_plaintext_to_this_machine_only(pki, server, astronaut):
    for cmd in (["info"], ["send", str(astronaut)], ["watch", str(astronaut)], ["models", "pull", "fercodec-v1"]):
        r = run_client(*cmd, "--server", "192.0.2.1:50051", "--token-file", str(pki / "tokens"))  # TEST-NET-1: never reached
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("ferclient: a bearer token would cross the network in plaintext to 192.0.2.1:50051: give --tls-ca")
    r = run_client("info", "--server", f"localhost:{server.port}", "--token-file", str(pki / "tokens"))  # this machine: allowed
    assert r.returncode == 0 and "fercodec-v1" in r.stdout, r.stderr
    # told the network is encrypted, it connects (and, TEST-NET-1 being unreachable, says so after its timeout)
    r = run_client("info", "--server", "192.0.2.1:50051", "--token-file", str(pki / "tokens"), "--plaintext-token", "--timeout", "1")
    assert r.returncode != 0 and "cannot reach server at 192.0.2.1:50051" in r.stderr and "bearer token" not in r.stderr, r.stderr


def test_a_secret_every_user_can_read_is_warned_of(tmp_path, caplog):
    import logging

    f = tmp_path / "tokens"
    f.write_text(TOKEN + "\n")
    for mode, warned in ((0o644, True), (0o604, True), (0o600, False), (0o440, False)):  # 0440: Kubernetes' fsGroup mounts
        f.chmod(mode)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ferserver"):
            TokenStore(str(f))
        assert (f"token file {f} is open to every user of this machine (mode {mode:03o}): chmod 600 it" in caplog.text) == warned, (mode, caplog.text)


def test_token_store_and_loopback(tmp_path):
    (tmp_path / "t").write_text(f"{TOKEN}\n# comment\n{ROTATED}\n")
    store = TokenStore(str(tmp_path / "t"))
    assert len(store) == 2
    assert store.accepts(f"Bearer {TOKEN}") and store.accepts(f"Bearer {ROTATED}")
    assert not any(store.accepts(h) for h in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", "Bearer # comment", "Bearer "))
    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))
    assert all(target_is_local(t) for t in ("localhost:50051", "127.0.0.1:1", "[::1]:50051", "dns:///localhost:50051",
                                            "ipv4:127.0.0.1:1,127.0.0.2:2", "ipv6:[::1]:1", "unix:/tmp/s", "localhost"))
    assert not any(target_is_local(t) for t in ("10.0.0.5:50051", "fercodec.example:443", "dns:///fercodec.example:50051",
                                                "dns://8.8.8.8/localhost.example:1", "ipv4:127.0.0.1:1,10.0.0.1:2", "[2001:db8::1]:50051"))


def test_the_health_only_port_answers_probes_in_plaintext_and_serves_nothing_else(tls_server):
    import re

    hport = int(re.search(r"health only :(\d+)", tls_server.ready_line).group(1))
    with grpc.insecure_channel(f"127.0.0.1:{hport}") as ch:
        for service in ("", "fercodec.v1.FerCodec"):
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert _code(lambda: _info(ch, TOKEN)) == grpc.StatusCode.UNIMPLEMENTED
