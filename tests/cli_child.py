"""The real `gpujob` CLI in a child process, with a fake cloud's machines booting as loopback sshd.

    python -m tests.cli_child run job.yaml --provider aws ...   # what `gpujob run ...` does, plus:

- aws (moto server: AWS_ENDPOINT_URL) and gcp (tests/fake_gce.py: GPUJOB_GCP_API_ENDPOINT): each
  launched machine "boots" as a real sshd on its 127.0.0.x address, presenting the host key the
  run generated and accepting the run's key (the pids are in GPUJOB_TEST_BOOT_DIR/*/sshd.pid for
  the parent to reap); the host pre-flight is answered as the GPU VM would (see _as_launched).
- GPUJOB_TEST_HOLD=STAGE, GPUJOB_TEST_ANNOUNCE=FILE: when the run is inside STAGE the file is
  written and the process holds there until a signal arrives (then goes on: the runner's next
  safe point decides), so the parent's signal lands inside the stage every time:
  provisioning: the machine exists, `launch` has not returned; connecting: the cloud machine never
  boots (its SSH is refused, the client waits and retries), the ssh provider's host holds before
  the connect; uploading: the tar stream is open and no byte sent yet; running: no hold, the file
  is written once the job's log is stored; fetching: the fetch has begun, no file copied yet.
- Only loopback can be dialled (as tests/e2e_support.guard_loopback).

Nothing here changes what the runner, the providers or the CLI do after a signal.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sys
import time
from pathlib import Path

HOLD = os.environ.get("GPUJOB_TEST_HOLD", "")
ANNOUNCE = os.environ.get("GPUJOB_TEST_ANNOUNCE", "")
BOOT_DIR = os.environ.get("GPUJOB_TEST_BOOT_DIR", "")
HOLD_LIMIT_S = 120.0  # a parent that never signals must not leave a child behind forever


def _loopback_only() -> None:
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if isinstance(host, str) and host != "localhost":
            try:
                ok = ipaddress.ip_address(host).is_loopback
            except ValueError:
                ok = False
            if not ok:
                raise OSError(f"test child tried to reach {address}")
        return real(self, address)

    socket.socket.connect = connect


def hold(stage: str) -> None:
    """Announce `stage`, then wait until a signal arrives (the runner's handler sets the flag)."""
    if HOLD != stage:
        return
    from launcher import signals

    Path(ANNOUNCE).write_text(stage)
    end = time.monotonic() + HOLD_LIMIT_S
    while not signals.received() and time.monotonic() < end:
        time.sleep(0.01)


def _boot(machine, ctx):
    """The machine boots: a real sshd on its address with the run's host key and the run's key."""
    from tests.sshd import Sshd, free_port

    port = free_port(machine.host)
    if HOLD != "connecting":  # held there: the machine never answers, the client keeps waiting
        Sshd(Path(BOOT_DIR) / machine.id, authorized_keys=[ctx.ssh_public_key], host=machine.host, port=port,
             host_key_pem=ctx.host_key_private).start()
    import getpass

    return dataclasses.replace(machine, user=getpass.getuser(), port=port)


def _as_launched(host, gpus: int) -> None:
    """The host pre-flight on a booted "machine" answers as the GPU VM would: this python, the
    installed torch, ``gpus`` CUDA devices (without importing torch: seconds per cell saved)."""
    import shlex
    from importlib.metadata import version

    from launcher.hostcheck import _SCRIPT

    real_run = host.run

    def run(cmd, timeout=None, check=True):
        if shlex.quote(_SCRIPT) in cmd:
            return 0, f"python {sys.version.split()[0]}\ntorch {version('torch')}\ncuda {gpus}\n", ""
        return real_run(cmd, timeout=timeout, check=check)

    host.run = run


def _wrap_launch(cls, boots: bool) -> None:
    real = cls.launch

    def launch(self, spec, ctx, deadline_s):
        machine = real(self, spec, ctx, deadline_s)
        if boots:
            machine = _boot(machine, ctx)
        hold("provisioning")
        return machine

    cls.launch = launch


def _install() -> None:
    from launcher import job, remote, runner
    from launcher.providers.ssh import SshProvider

    _wrap_launch(SshProvider, boots=False)
    if BOOT_DIR:
        from launcher.providers.aws.launch import AwsProvider

        _wrap_launch(AwsProvider, boots=True)
        try:
            from launcher.providers.gcp.launch import GcpProvider
        except ImportError:
            pass
        else:
            _wrap_launch(GcpProvider, boots=True)

    real_host = job.default_host

    def default_host(machine):
        host = real_host(machine)
        if machine.provider in ("aws", "gcp"):
            _as_launched(host, machine.gpu_count)
        return host

    runner.default_host = default_host

    real_wait = remote.Session.wait_until_reachable

    def wait_until_reachable(self, deadline_s):
        if HOLD == "connecting":
            Path(ANNOUNCE).write_text("connecting")
            if self.port and BOOT_DIR == "":  # the ssh provider's host is up: hold before the connect
                hold("connecting")
        return real_wait(self, deadline_s)

    remote.Session.wait_until_reachable = wait_until_reachable

    from launcher.store import Store

    real_append = Store.append_log

    def append_log(self, *args, **kwargs):  # running: announced once the job's log is stored
        out = real_append(self, *args, **kwargs)
        if HOLD == "running" and not Path(ANNOUNCE).exists():
            Path(ANNOUNCE).write_text("running")
        return out

    Store.append_log = append_log

    real_write = remote._ChannelWriter.write

    def write(self, data):
        hold("uploading")
        return real_write(self, data)

    remote._ChannelWriter.write = write

    real_get_dir = remote.Session.get_dir

    def get_dir(self, remote_dir, local_dir, **kw):
        hold("fetching")
        return real_get_dir(self, remote_dir, local_dir, **kw)

    remote.Session.get_dir = get_dir
    from launcher import artifacts

    real_fetch = artifacts.fetch  # the runner's way in, whatever carries the bytes below it

    def fetch(*args, **kwargs):
        hold("fetching")
        return real_fetch(*args, **kwargs)

    artifacts.fetch = fetch


def main() -> None:
    _loopback_only()
    _install()
    from launcher.cli import main as cli_main

    sys.argv[0] = "gpujob"
    cli_main()


if __name__ == "__main__":
    main()
