"""This machine as a job host, with the same surface as ``remote.Session``.

The runner drives the local provider through it exactly as it drives an SSH session, so
the lifecycle (upload, detached start, log + exit-code file, streaming by byte offset,
fetch) is written once and tested on both.
"""

from __future__ import annotations

import codecs
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from launcher import signals
from launcher.errors import RemoteCommandFailed
from launcher.uploads import select_files


def group_alive(pgid: int) -> bool:
    """Does the process group hold a live, non-zombie process? (An init that never reaps
    would otherwise keep a finished job "alive" forever.)"""
    try:
        out = subprocess.run(["ps", "-e", "-o", "pgid=", "-o", "stat="], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    return any(f[0] == str(pgid) and not f[1].startswith("Z") for f in (ln.split() for ln in out.splitlines()) if len(f) == 2)


class LocalHost:
    connections_opened = 0

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = signals.sleep):
        self._clock, self._sleep = clock, sleep

    def connect(self) -> None:
        pass

    def wait_until_reachable(self, deadline_s: float) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, cmd: str, timeout: float | None = None, check: bool = True) -> tuple[int, str, str]:
        """``cmd`` in bash here, as remote.Session runs it there. In its own session: a Ctrl-C at the
        terminal reaches gpujob alone (which stops at its next safe point, killing the command), not
        the command, whose death would read as a failure ("exited -2") instead of an interrupt."""
        proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = None if timeout is None else self._clock() + timeout
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    signals.check()  # raises Stop on a signal (not in a shielded teardown)
                    if deadline is not None and self._clock() > deadline:
                        raise subprocess.TimeoutExpired(cmd, timeout) from None
        except BaseException:
            self.kill_job(proc.pid, "KILL")  # its whole group: a setup's children too
            proc.wait()
            raise
        if check and proc.returncode != 0:
            raise RemoteCommandFailed(cmd, proc.returncode, err[-2000:])
        return proc.returncode, out, err

    def put_dir(self, local_dir: str | Path, remote_dir: str | Path, ignore: list[str] | None = None) -> list[str]:
        src, dst = Path(local_dir), Path(remote_dir)
        files = select_files(src, ignore or ())  # the same selection an SSH upload makes
        for rel in files:
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target)
        return files

    def put_bytes(self, data: bytes, remote_path: str | Path, mode: int = 0o600) -> None:
        p = Path(remote_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def get_dir(self, remote_dir: str | Path, local_dir: str | Path, on_skip=None) -> list[Path]:
        """Copy a tree of files (links followed, as a copy would; nothing to skip on this machine)."""
        src, dst = Path(remote_dir), Path(local_dir)
        if not src.is_dir():
            return []
        got = []
        for path in sorted(src.rglob("*")):
            if path.is_file():
                target = dst / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                same = target.is_file() and target.stat().st_size == path.stat().st_size
                if path.resolve() != target.resolve() and not same:  # resumed fetch: complete files stay
                    shutil.copy2(path, target)
                got.append(target)
        return got

    def get_file(self, remote_path: str | Path, local_path: str | Path) -> None:
        shutil.copyfile(remote_path, local_path)

    def read_file(self, path: str | Path) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    def start_detached(self, command: str, workdir: str | Path, log_path: str | Path, exit_path: str | Path,
                       env: dict[str, str] | None = None, started_file: str | Path | None = None) -> int:
        # Same shape as on a remote machine: the exit file appears atomically when the job ends.
        exit_q = shlex.quote(str(exit_path))
        # The wrapper ignores TERM so that it outlives a group signal and still writes the exit file.
        wrapped = f"trap : TERM INT\n(exec bash -c {shlex.quote(command)})\necho $? > {exit_q}.tmp && mv {exit_q}.tmp {exit_q}"
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(["bash", "-c", wrapped], cwd=str(workdir), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                    start_new_session=True)
        finally:
            log.close()
        self._proc = proc  # reaped in stream(); a detached run is reaped by init
        if started_file is not None and Path(started_file).parent.is_dir():  # as remote.Session does
            Path(started_file).write_text(f"{proc.pid} {Path(exit_path).absolute()}\n")
        return proc.pid

    def stream(self, log_path: str | Path, exit_path: str | Path, on_text: Callable[[str], None], offset: int = 0,
               poll_s: float = 0.2, reconnect_deadline_s: float = 120, pid: int | None = None) -> tuple[int, int]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        log_path, exit_path = Path(log_path), Path(exit_path)
        while True:
            done = exit_path.exists()  # checked before reading so the last bytes are never missed
            try:
                with open(log_path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                text = decoder.decode(chunk)
                offset += len(chunk)
                if text:
                    on_text(text)
            elif done:
                tail = decoder.decode(b"", final=True)
                if tail:
                    on_text(tail)
                proc = getattr(self, "_proc", None)
                if proc is not None:
                    proc.poll()
                raw = exit_path.read_text().strip()
                return (int(raw) if raw.lstrip("-").isdigit() else -1), offset
            else:
                self._sleep(poll_s)

    def kill_job(self, pid: int, sig: str = "TERM") -> None:
        try:
            os.killpg(pid, getattr(signal, "SIG" + sig))
        except (ProcessLookupError, PermissionError):
            pass

    def is_running(self, pid: int) -> bool:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            proc.poll()  # reap our own child so it does not linger as a zombie
        return group_alive(pid)
