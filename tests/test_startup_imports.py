"""What the quick commands import: a guard on CLI start-up (issue 12: `gpujob --help` within
0.2 s of bare Python, `gpujob estimate` within 0.5 s; measured by bench/cli_speed.py, never
timed here).

Each case runs the real CLI entry point (launcher.cli.main, as the console script does) in a
child interpreter and lists sys.modules when it exits. A module on a case's list costs start-up
the command does not need: an SDK, torch or numpy for any of them; for `--help` also the spec
parser (pydantic, yaml), the estimator, the catalog and the run store, and for every command
typer's pydantic coercion of plain option values (launcher/typerfast.py); for `estimate --json`
and `validate --json` also rich (its tables and colours are for the human output only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Never needed by help, validate, estimate, gpus or cost (the cloud SDKs, torch and its numpy,
# SSH, plotting, HTTP clients, and gpujob's own run machinery).
NEVER = ("torch", "numpy", "boto3", "botocore", "google.cloud", "google.auth", "paramiko", "cryptography",
         "matplotlib", "pandas", "requests", "http.client", "urllib.request",
         "launcher.providers", "launcher.runner", "launcher.remote", "launcher.uploads")
# What typer's help formatting imports and gpujob's help never uses (launcher/richhelp.py).
HELP_NEVER = ("rich.markdown", "rich.traceback", "rich.syntax", "pygments", "markdown_it", "attr")
# What one command must not import on top of NEVER.
CASES = {
    "--help": ("pydantic", "yaml", "sqlite3", "launcher.spec", "launcher.estimate", "launcher.catalog",
               "launcher.render", "launcher.store", "launcher.jobestimate", *HELP_NEVER),
    "estimate --help": ("yaml", "sqlite3", "launcher.spec", "launcher.estimate", "launcher.catalog",
                        "launcher.store", *HELP_NEVER),
    "estimate jobs/vgg16.yaml --no-baseline": ("sqlite3", "launcher.store", "launcher.liveness", "typer._adapters"),
    "estimate jobs/vgg16.yaml --no-baseline --json": ("sqlite3", "launcher.store", "rich", "launcher.render",
                                                      "typer._adapters"),
    "validate jobs/vgg16.yaml": ("sqlite3", "launcher.store", "launcher.catalog.listing", "launcher.render"),
    "validate jobs/vgg16.yaml --json": ("sqlite3", "launcher.store", "launcher.catalog.listing", "launcher.render",
                                        "rich"),
    "gpus": ("yaml", "sqlite3", "launcher.spec", "launcher.estimate", "launcher.store", "pydantic",
             "typer._adapters"),
    "gpus --min-memory 80 --provider aws": ("yaml", "launcher.spec", "launcher.estimate", "pydantic"),
    "cost": ("yaml", "launcher.spec", "launcher.estimate", "launcher.catalog", "pydantic", "typer._adapters"),
}

_CHILD = """
import atexit, json, sys
out = sys.argv[1]
sys.argv = ["gpujob", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from launcher.cli import main
main()
"""


def _imported(args: list[str], tmp_path: Path) -> set[str]:
    out = tmp_path / "modules.json"
    env = {"PATH": "/usr/bin:/bin", "GPUJOB_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
           "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return set(json.loads(out.read_text()))


def _hits(modules: set[str], names) -> list[str]:
    """Names of ``names`` imported, as themselves or through one of their submodules."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


@pytest.mark.parametrize("command", list(CASES))
def test_quick_commands_import_only_what_they_need(command: str, tmp_path: Path) -> None:
    modules = _imported(command.split(), tmp_path)
    assert "launcher.cli" in modules  # the child really ran the CLI
    assert _hits(modules, NEVER + CASES[command]) == []


def test_the_guard_sees_an_import(tmp_path: Path) -> None:
    """The check is live: `validate` loads the spec parser, so it is in the list the child returns."""
    modules = _imported(["validate", "jobs/vgg16.yaml"], tmp_path)
    assert _hits(modules, ("yaml", "pydantic", "launcher.spec")) == ["launcher.spec", "pydantic", "yaml"]


_REAL_LATER = """
import launcher.cli, typer.rich_utils as ru, rich.markdown, rich.traceback, io
from rich.console import Console
assert rich.markdown.Markdown is not ru.Markdown and rich.traceback.Traceback is not ru.Traceback
md = ru.Markdown("**bold** text")  # typer's markdown mode: the real class, imported on use
assert type(md) is rich.markdown.Markdown and isinstance(md, ru.Markdown)
out = io.StringIO()
Console(file=out, width=40).print(md)
assert "bold text" in out.getvalue()
assert ru.Traceback.from_exception.__func__ is rich.traceback.Traceback.from_exception.__func__
print("ok")
"""


def test_help_stand_ins_behave_as_the_real_classes(tmp_path: Path) -> None:
    """typer.rich_utils gets stand-ins for Markdown and Traceback (launcher/richhelp.py): used,
    they are the real classes; every other importer gets the real modules."""
    env = {"PATH": "/usr/bin:/bin", "GPUJOB_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _REAL_LATER], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
