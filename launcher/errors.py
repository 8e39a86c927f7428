"""The one error tree of gpujob.

Everything below the CLI raises a ``GpujobError`` subclass; ``cli.py`` catches the root,
prints ``str(err)`` (one line: what, where, how to fix) and exits with ``err.exit_code``.
Each class carries fields, not only text, so callers and tests can act on them.
"""

from __future__ import annotations


class GpujobError(Exception):
    """Root of every error gpujob reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(GpujobError):
    """A command-line option or argument is wrong."""

    exit_code = 2


class SpecError(GpujobError):
    """The YAML job spec is malformed or invalid. Carries file, line and field path."""

    exit_code = 2

    def __init__(self, path: str, line: int | None, loc: str, message: str, hint: str | None = None):
        self.path, self.line, self.loc = path, line, loc
        where = f"{path}:{line}" if line else path
        field = f" {loc}:" if loc else ""
        super().__init__(f"{where}:{field} {message}", hint)


class ModelError(GpujobError):
    """The spec's model cannot be built or trained as the spec describes it: a factory
    (``workload.model: "file.py:fn"``) that fails to import, build or return a module, or a model
    that cannot train one step at the spec's input shape. Bad input, like a SpecError (exit 2);
    the message is one line naming the file, the line and the exception.

    missing_module: for a ``"package.module:fn"`` factory whose package is not importable on
    this machine, the package's name (the job's machine may still install it with ``setup:``);
    else None."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, missing_module: str | None = None):
        self.missing_module = missing_module
        super().__init__(message, hint)


class CatalogError(GpujobError):
    """The price catalog is missing, unreadable, or cannot be refreshed."""


class UnknownGPU(CatalogError):
    """A GPU name with no hardware figures (launcher/catalog/gpus.py). The estimate shows such an
    offer unpredicted, with a note; any other failure of a prediction is a bug and propagates."""

    def __init__(self, gpu: str, hint: str | None = None):
        self.gpu = gpu
        super().__init__(f"unknown GPU {gpu!r}", hint)


class EstimateError(GpujobError):
    """The estimate cannot be computed (unknown model, no candidate, ...)."""


class BudgetError(GpujobError):
    """The estimate exceeds limits.budget_usd; --force overrides."""

    exit_code = 7


class StoreError(GpujobError):
    """The run database cannot be read or written, or a run id is unknown."""


class ProviderError(GpujobError):
    """A cloud or machine provider refused or failed a call."""

    exit_code = 3

    def __init__(self, provider: str, message: str, hint: str | None = None, code: str | None = None):
        self.provider, self.code = provider, code
        super().__init__(f"{provider}: {message}", hint)


class ProviderUnavailable(ProviderError):
    """The provider's SDK is not installed."""


class CredentialsError(ProviderError):
    """Missing or invalid cloud credentials."""


class CapacityError(ProviderError):
    """No capacity for the instance type in a zone: the caller tries the next one."""


class QuotaError(ProviderError):
    """An account quota stops the launch; the message names the quota and how to raise it."""


class InstanceNotFound(ProviderError):
    """The instance does not exist (teardown treats this as success)."""


class WaitTimeout(GpujobError):
    """A bounded wait ran out. Names what it waited for and the last state seen."""

    exit_code = 4

    def __init__(self, what: str, waited_s: float, last_state: str | None = None):
        self.what, self.waited_s, self.last_state = what, waited_s, last_state
        tail = f"; last state: {last_state}" if last_state else ""
        super().__init__(f"timed out after {waited_s:.0f}s waiting for {what}{tail}")


class RemoteError(GpujobError):
    """SSH or remote-execution failure."""

    exit_code = 5


class HostKeyError(RemoteError):
    """The machine's SSH host key is unknown or changed: refused, never auto-accepted."""


class SSHConnectError(RemoteError):
    """Could not connect or authenticate over SSH."""


class RemoteCommandFailed(RemoteError):
    def __init__(self, command: str, exit_status: int, stderr_tail: str = ""):
        self.command, self.exit_status, self.stderr_tail = command, exit_status, stderr_tail
        tail = f": {stderr_tail.strip().splitlines()[-1]}" if stderr_tail.strip() else ""
        super().__init__(f"remote command exited {exit_status}: {command}{tail}")


class JobFailed(GpujobError):
    """The training job itself exited non-zero (logs and artifacts were still fetched)."""

    exit_code = 8

    def __init__(self, run_id: str, exit_status: int | None, reason: str = ""):
        self.run_id, self.exit_status = run_id, exit_status
        why = f" ({reason})" if reason else ""
        super().__init__(f"run {run_id}: job exited {exit_status}{why}")


class FetchFailed(GpujobError):
    """Bringing the results home failed: the machine (the only copy) is kept, in state fetch-failed."""

    exit_code = 9

    def __init__(self, run_id: str, why: str):
        self.run_id = run_id
        super().__init__(f"run {run_id}: fetching the results failed ({why}); the machine is kept so nothing is lost",
                         f"retry with `gpujob fetch {run_id}`, or release it without the results: "
                         f"`gpujob down {run_id} --discard`")


class MachineGone(GpujobError):
    """The machine went away under a running job: reclaimed (spot-interrupted) or terminated.

    ``state`` is the run's final state; a spot reclaim has its own exit code (10), not a timeout."""

    STATES = ("spot-interrupted", "terminated")
    exit_code = 10

    def __init__(self, run_id: str, how: str, attempts: int = 1, checkpoint: str | None = None,
                 why_stopped: str | None = None):
        """attempts: how many machines the run had; checkpoint: where its last checkpoint is safe
        (client path or bucket URL; None: none was saved); why_stopped: why no further attempt ran."""
        self.run_id, self.how, self.attempts, self.checkpoint = run_id, how, attempts, checkpoint
        self.state = "spot-interrupted" if how == "spot-interrupted" else "failed"
        what = "spot instance was reclaimed by the cloud" if how == "spot-interrupted" else "machine was terminated"
        if attempts > 1 or checkpoint or why_stopped:
            ran = f" ({attempts} attempt{'s' if attempts != 1 else ''} ran" + (f"; {why_stopped}" if why_stopped else "") + ")"
            where = (f"the last checkpoint is safe at {checkpoint}" if checkpoint
                     else "no checkpoint was saved (set limits.checkpoint_every)")
            super().__init__(f"run {run_id}: the {what} while the job ran{ran}; {where}",
                             "raise limits.max_restarts, set resources.spot_fallback: on-demand, "
                             "or use on-demand capacity (resources.spot: false)")
            return
        super().__init__(f"run {run_id}: the {what} while the job ran",
                         "its checkpoint is on the client only if it was fetched; rerun with `gpujob run`, "
                         "or use on-demand capacity (resources.spot: false)")


class TeardownError(GpujobError):
    """Something could not be deleted. The message lists each leftover and its delete command."""

    exit_code = 6

    def __init__(self, leftovers: list[tuple[str, str]]):
        self.leftovers = leftovers
        lines = "; ".join(f"{what} -> run: {cmd}" for what, cmd in leftovers)
        super().__init__(f"teardown left {len(leftovers)} resource(s) behind: {lines}")


class Interrupted(GpujobError):
    """SIGINT/SIGTERM reached the client; teardown has run."""

    exit_code = 130
