"""Credential files, read and checked alike by ferclient and ferserver: TLS's PEM files and bearer-token files.

Why PEM files are checked: a file that is not the PEM it should be (a CA bundle given as --tls-ca that is a photo, a key where the
certificate goes) went to grpc as it was. grpc's C core then printed several lines of its own and failed every
connection, which the client reported as a server it could not reach. Checked first, it is one line naming the file.
"""

from __future__ import annotations

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
    return blob
