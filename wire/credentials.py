"""Credential files, read and checked alike by ferclient and ferserver: TLS's PEM files and bearer-token files; and
which addresses are this machine's, where plaintext is allowed without a word.

Why PEM files are checked: a file that is not the PEM it should be (a CA bundle given as --tls-ca that is a photo, a key where the
certificate goes) went to grpc as it was. grpc's C core then printed several lines of its own and failed every
connection, which the client reported as a server it could not reach. Checked first, it is one line naming the file.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

_MARKS = {"certificate": b"-----BEGIN CERTIFICATE-----", "key": b"PRIVATE KEY-----"}  # keys: PKCS#8, RSA, EC


def read(path: str, what: str) -> bytes:
    """The file's bytes; OSError with one line naming it (`what`: "token file", ...) when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise OSError(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_pem(path: str, what: str, kind: str) -> bytes:
    """The bytes of the PEM file at path, which must hold a `kind` ("certificate" or "key"); `what` names the file in
    errors. OSError when it cannot be read, ValueError when it holds no such PEM block."""
    blob = read(path, what)
    if _MARKS[kind] not in blob or b"-----BEGIN" not in blob:
        raise ValueError(f"{what} {path} is not PEM: no {'-----BEGIN ... ' if kind == 'key' else ''}{_MARKS[kind].decode()} line")
    if kind == "key" and (b"ENCRYPTED PRIVATE KEY" in blob or b"Proc-Type: 4,ENCRYPTED" in blob):  # grpc takes no passphrase
        raise ValueError(f"{what} {path} is encrypted with a passphrase, which gRPC cannot ask for: "
                         f"write it unencrypted (openssl pkey -in {path} -out KEY) and chmod 600 it")
    return blob


def load_pair(ctx, cert: str, key: str, what: str, pair: tuple[bytes, bytes] | None = None):
    """ctx (an ssl.SSLContext) holding the certificate and key; ValueError naming both files when the key is not the
    certificate's (what: "TLS", "client TLS", ...). pair: (key, certificate) bytes already read from those files, checked
    instead of the files as they are now: what is checked is then what grpc is given, even while a renewal rewrites them."""
    import ssl

    try:
        if pair is not None and hasattr(os, "memfd_create"):
            _load_pair_from_memory(ctx, *pair)
        else:  # the files as they are now (no memfd: not Linux)
            ctx.load_cert_chain(cert, key, password=b"")  # never a passphrase prompt (read_pem refuses encrypted keys first)
    except ssl.SSLError as e:
        raise ValueError(f"{what} key {key} does not load with certificate {cert}: {getattr(e, 'reason', None) or e}") from None
    return ctx


def _load_pair_from_memory(ctx, key: bytes, cert: bytes) -> None:
    """ctx.load_cert_chain on bytes: Python's ssl reads a pair from files only, so the bytes go into anonymous
    in-memory files (never on a disk, gone when closed), read through /proc."""
    fds = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("tls-cert", "tls-key")]
    try:
        for fd, blob in zip(fds, (cert, key)):
            while blob:
                blob = blob[os.write(fd, blob):]
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}", password=b"")
    finally:
        for fd in fds:
            os.close(fd)


def is_loopback(host: str) -> bool:
    """Whether host (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def target_is_local(target: str) -> bool:
    """Whether every address a grpc target names is this machine: host:port, [v6]:port, dns:[//authority]/name:port,
    ipv4:/ipv6: address lists, unix: sockets."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    if target.startswith("dns:"):
        target = target.split("/", 3)[-1] if target.startswith("dns://") else target[4:]
    if target.startswith(("ipv4:", "ipv6:")):
        return all(is_loopback(host_port(t)[0]) for t in target[5:].split(","))
    return is_loopback(host_port(target)[0])


def host_port(address: str) -> tuple[str, str]:
    """(host, port) of host:port or [v6]:port; port "" when the address has none."""
    return tuple(address.rsplit(":", 1)) if ":" in address.rsplit("]", 1)[-1] else (address, "")
