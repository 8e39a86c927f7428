"""What runs on the job host: where its files live, its command line and environment, and how to reach it."""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from launcher.errors import UsageError
from launcher.providers.base import Machine

DEFAULT_ENTRYPOINT = "payloads/train.py"
EXIT_SIGNALLED = 75  # the payload's "checkpointed and stopped on a signal"
EXIT_TIMEOUT = 124  # coreutils timeout: limits.max_duration reached


def payload_exit_status(status: int, end_event: dict | None) -> int:
    """The job's exit status as the payload meant it. torchrun reports a worker's 75 (stopped
    with a checkpoint) as 1; the payload's own `end` event with status "interrupted" (emitted
    after the checkpoint is written) says what it was, so that wins over the launcher's code."""
    if status not in (0, EXIT_SIGNALLED, EXIT_TIMEOUT) and (end_event or {}).get("status") == "interrupted":
        return EXIT_SIGNALLED
    return status
GRACE_S = 120  # how long a signalled payload gets to checkpoint before SIGKILL


@dataclass
class Paths:
    """Where things live on the job host (relative to the SSH user's home, or absolute locally)."""

    workdir: str

    @property
    def log(self) -> str:
        return f"{self.workdir}/job.log"

    @property
    def exit(self) -> str:
        return f"{self.workdir}/job.exit"

    @property
    def outputs(self) -> str:
        return f"{self.workdir}/outputs"


def job_command(spec, machine: Machine, paths: Paths, node_rank: int = 0, master_addr: str | None = None,
                run_id: str = "") -> str:
    """The detached command line: the payload (under torchrun for many GPUs) inside `timeout`."""
    from launcher.distributed import topology, torchrun_command

    python = sys.executable if machine.provider == "local" else spec.payload.python
    args = list(spec.payload.args)
    if spec.payload.entrypoint == DEFAULT_ENTRYPOINT:
        args = ["--config", "job.json", "--output-dir", "outputs", *args]  # --device auto: CUDA when present
    launch = torchrun_command(python, spec.payload.entrypoint, args, topology(spec, machine.gpu_count), node_rank,
                              master_addr, run_id=run_id)
    limit = int(math.ceil(spec.limits.max_duration))
    # `timeout` enforces limits.max_duration on the host itself: TERM (the payload checkpoints), then KILL.
    # The host starts it inside paths.workdir. --foreground keeps `timeout` in the job's process
    # group, so `kill_job` (a group signal) reaches the payload too.
    return f"PYTHONUNBUFFERED=1 timeout --foreground --signal=TERM --kill-after={GRACE_S} {limit} {launch}"


def job_env(spec, machine: Machine, node_rank: int = 0) -> dict[str, str]:
    from launcher.distributed import dist_env, topology

    return {**dist_env(topology(spec, machine.gpu_count), node_rank, machine.extra.get("cpus")), **spec.env}


def describes_work(spec) -> bool:
    """Our trainer always does; a custom payload only when the spec has a workload section."""
    return spec.payload.entrypoint == DEFAULT_ENTRYPOINT or "workload" in spec.model_fields_set


def host_paths(machine: Machine, run_id: str, run_dir: Path, host) -> Paths:
    """The run's directory on its host: under the state dir locally, ~/gpujob/RUN remotely."""
    if machine.provider == "local":
        work = run_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        return Paths(str(work))
    # Absolute paths: valid for SFTP, for exec, and after the job's own `cd`.
    home = host.run('printf %s "$HOME"')[1].strip() or "/tmp"
    return Paths(f"{home}/gpujob/{run_id}")


def machine_dict(m: Machine) -> dict[str, Any]:
    return asdict(m)


def machine_public(m: Machine) -> dict[str, Any]:
    """The machine without its key path and host keys (for events a user may see)."""
    d = asdict(m)
    d.pop("key_path", None)
    d.pop("extra", None)
    d.pop("host_keys", None)
    return d


def machine_from(d: dict[str, Any]) -> Machine:
    fields_ = {k: v for k, v in d.items() if k in Machine.__dataclass_fields__}
    return Machine(**fields_)


def default_host(machine: Machine):
    """A LocalHost for the local provider, else an SSH Session pinned to the machine's host key."""
    if machine.provider == "local":
        from launcher.localhost import LocalHost

        return LocalHost()
    from launcher.remote import Session

    if not machine.host:
        raise UsageError(f"machine {machine.id} has no address to connect to")
    return Session.from_machine(machine)


def q(s: str) -> str:
    return shlex.quote(str(s))
