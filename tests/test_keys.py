import os
import stat
import subprocess
import shutil

import pytest

from launcher.keys import fingerprint, generate_ed25519, host_key_line, write_private_key


def test_generate_pair_matches_and_carries_comment():
    pem, public = generate_ed25519("run-abc")
    assert pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public.startswith("ssh-ed25519 AAAA") and public.endswith(" run-abc")
    assert host_key_line(pem) == public.rsplit(" ", 1)[0]


def test_fingerprint_matches_ssh_keygen(tmp_path):
    if not shutil.which("ssh-keygen"):
        pytest.skip("no ssh-keygen")
    _, public = generate_ed25519("x")
    (tmp_path / "k.pub").write_text(public + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == fingerprint(public)


def test_private_key_written_0600_even_with_open_umask(tmp_path):
    old = os.umask(0)
    try:
        path = write_private_key(tmp_path / "sub" / "key", generate_ed25519()[0])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key"]  # no temp file left behind


def test_rewrite_replaces_atomically(tmp_path):
    first, second = generate_ed25519()[0], generate_ed25519()[0]
    write_private_key(tmp_path / "key", first)
    write_private_key(tmp_path / "key", second)
    assert (tmp_path / "key").read_text() == second
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
