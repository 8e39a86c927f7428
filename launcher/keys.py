"""SSH key material for one run: the client key and the machine's host key.

Both are generated here (so the client knows the host key before the machine boots and can
pin it) with ``cryptography``; paramiko can load ed25519 keys but cannot create them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.errors import GpujobError


def generate_ed25519(comment: str = "") -> tuple[str, str]:
    """A fresh key pair: (OpenSSH private key PEM, "ssh-ed25519 AAAA... comment")."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
    return pem, f"{public} {comment}" if comment else public


def host_key_line(pem: str, comment: str = "") -> str:
    """The public line ("ssh-ed25519 AAAA...") of an OpenSSH private key."""
    try:
        key = serialization.load_ssh_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError) as err:
        raise GpujobError(f"not an unencrypted OpenSSH private key: {err}") from None
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
    return f"{public} {comment}" if comment else public


def fingerprint(public_line: str) -> str:
    """OpenSSH-style fingerprint of a public line: "SHA256:<unpadded base64>"."""
    fields = public_line.split()
    if len(fields) < 2:
        raise GpujobError(f"not an SSH public key line: {public_line[:40]!r}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise GpujobError(f"not an SSH public key line: {public_line[:40]!r}") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def write_private_key(path: str | os.PathLike, pem: str) -> Path:
    """Write a private key with mode 0600, atomically.

    The temp file is created 0600 by os.open itself (never a chmod after the fact), in the
    target directory so the final os.replace is a same-filesystem rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: O_EXCL, 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(pem if pem.endswith("\n") else pem + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
