"""Credential files, read and checked alike by ferclient and ferserver: TLS's PEM files and bearer-token files; and
which addresses are this machine's, where plaintext is allowed without a word.

Why PEM files are checked: a file that is not the PEM it should be (a CA bundle given as --tls-ca that is a photo, a key where the
certificate goes) went to grpc as it was. grpc's C core then printed several lines of its own and failed every
connection, which the client reported as a server it could not reach. Checked first, it is one line naming the file.
"""

from __future__ import annotations

import ipaddress
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
