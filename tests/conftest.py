"""Shared fixtures. The SSH ones come first: `client_key` and `sshd` (a real OpenSSH sshd on
loopback, see tests/sshd.py); other fixtures are added below them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.keys import generate_ed25519, write_private_key
from tests.sshd import Sshd


@dataclass(frozen=True)
class ClientKey:
    path: Path  # private key file, mode 0600
    public: str  # "ssh-ed25519 AAAA... gpujob-test"
    pem: str


@pytest.fixture
def client_key(tmp_path: Path) -> ClientKey:
    pem, public = generate_ed25519("gpujob-test")
    return ClientKey(write_private_key(tmp_path / "id_ed25519", pem), public, pem)


@pytest.fixture
def sshd(tmp_path: Path, client_key: ClientKey):
    """A started sshd on 127.0.0.1:<free port> that accepts `client_key` for the current user."""
    why_not = Sshd.available()
    if why_not:
        pytest.skip(why_not)
    server = Sshd(tmp_path / "sshd", authorized_keys=[client_key.public]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def session(sshd, client_key):
    """A launcher.remote.Session to the `sshd` fixture, pinned to its host key; closed at the end."""
    from launcher.remote import Session

    s = Session(sshd.host, sshd.port, sshd.user, client_key.path, host_keys=[sshd.host_public])
    yield s
    s.close()
