"""The machine's own guard: the boot lines that start templates/gpujob-guard.sh, and the marks the
client leaves for it.

The guard runs on every cloud machine (aws, gcp) from boot, as root, and powers the machine off
when the job has ended and nobody fetched the results within ``limits.unfetched_grace``, when the
results were fetched and no client is attached, or when no client has been attached for
``limits.idle_timeout`` while no job runs (the rules are in the script's header). The client talks
to it through files in ``GUARD_DIR``: ``job`` ("PGID EXIT_FILE", written by the shell that starts
the job) and ``fetched`` ("release", or "keep" under ``--keep``). Machines of the ssh and local
providers belong to the user: they carry no guard and nothing here touches them.
"""

from __future__ import annotations

import shlex

from launcher.packaged import template_text

GUARD_DIR = "/var/lib/gpujob-guard"  # on the machine; mode 1777 so the login user can write marks
GUARD_PATH = "/usr/local/sbin/gpujob-guard"
GUARD_SCRIPT = "gpujob-guard.sh"  # in launcher.templates
EXTRA_KEY = "guard_dir"  # Machine.extra key: the machine runs a guard watching this directory


def script_text() -> str:
    """The guard script (bash), as shipped in launcher.templates."""
    return template_text(GUARD_SCRIPT)


def command(limits, ssh_port: int = 22, guard_dir: str = GUARD_DIR, path: str = GUARD_PATH) -> str:
    """The guard's command line for these spec limits (``unfetched_grace``, ``idle_timeout``: seconds)."""
    return " ".join(shlex.quote(str(a)) for a in (
        path, "--dir", guard_dir, "--ssh-port", ssh_port,
        "--unfetched-grace", f"{limits.unfetched_grace:g}", "--idle-timeout", f"{limits.idle_timeout:g}"))


def boot_lines(limits) -> str:
    """Boot-script lines (bash, run as root) that install the guard and start it detached.

    A systemd transient unit when systemd is there (restarted if it fails), else setsid nohup."""
    cmd = command(limits)
    return "\n".join([
        f"install -d -m 1777 {GUARD_DIR}",
        f"cat > {GUARD_PATH} <<'GPUJOB_GUARD_END'",
        script_text().rstrip("\n"),
        "GPUJOB_GUARD_END",
        f"chmod 755 {GUARD_PATH}",
        f"if ! systemd-run --unit=gpujob-guard --property=Restart=on-failure {cmd} >/dev/null 2>&1; then",
        f"  nohup setsid {cmd} >/dev/null 2>&1 < /dev/null &",
        "fi",
    ])


def guard_dir(machine_extra: dict | None) -> str | None:
    """The guard directory a machine's ``extra`` names, or None (no guard on that machine)."""
    return (machine_extra or {}).get(EXTRA_KEY)


def job_file(machine_extra: dict | None) -> str | None:
    """Where the shell that starts the job records "PGID EXIT_FILE" for the guard (None: no guard)."""
    d = guard_dir(machine_extra)
    return f"{d}/job" if d else None


def mark_fetched(host, machine_extra: dict | None, keep: bool) -> None:
    """Tell the guard the results are home: "release" (it may power off once no client is
    attached) or, under --keep, "keep" (only the idle rule applies). A no-op without a guard.

    Raises GpujobError (from the host) when the mark cannot be written."""
    d = guard_dir(machine_extra)
    if not d:
        return
    q = shlex.quote
    word = "keep" if keep else "release"
    host.run(f"[ ! -d {q(d)} ] || {{ printf %s {word} > {q(d + '/fetched.tmp')} && "
             f"mv -f {q(d + '/fetched.tmp')} {q(d + '/fetched')}; }}", timeout=30)

