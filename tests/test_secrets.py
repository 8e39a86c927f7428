"""Secrets reach the job through its 0600 environment file only: not in runs.db, not printed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.errors import UsageError
from launcher.secrets import REDACTED, cli_env, redact_spec, redact_spec_text

REPO = Path(__file__).resolve().parents[1]
CHECK = """import os, pathlib, sys
want = {"SPEC_TOKEN": "spec-value-7d1f", "CALLER_TOKEN": "caller-value-93ab", "FILE_TOKEN": "file-value-c0de"}
got = {k: os.environ.get(k) for k in want}
pathlib.Path("outputs").mkdir(exist_ok=True)
pathlib.Path("outputs/ok").write_text("yes" if got == want else "no")
print("job ran; secrets present:", got == want)
sys.exit(0 if got == want else 3)
"""
SPEC = """name: secret-job
payload: {entrypoint: check_env.py, python: %s}
env:
  SPEC_TOKEN: spec-value-7d1f
  PLAIN: "1"
limits: {max_duration: 2m}
"""


def test_cli_env_reads_the_callers_environment_and_env_files(tmp_path):
    f = tmp_path / "secrets.env"
    f.write_text("# comment\nexport FILE_TOKEN='file value'\nOTHER=2\n")
    assert cli_env(["A"], [f], {"A": "x"}) == {"FILE_TOKEN": "file value", "OTHER": "2", "A": "x"}
    with pytest.raises(UsageError, match="--env MISSING: MISSING is not set"):
        cli_env(["MISSING"], [], {})
    with pytest.raises(UsageError, match="shell history"):
        cli_env(["A=b"], [], {})
    with pytest.raises(UsageError, match="no such file"):
        cli_env([], [tmp_path / "nope.env"], {})
    bad = tmp_path / "bad.env"
    bad.write_text("JUSTANAME\n")
    with pytest.raises(UsageError, match="'JUSTANAME' has no value"):
        cli_env([], [bad], {})


def test_an_env_file_line_dotenv_cannot_parse_is_refused_without_printing_it(tmp_path, capfd):
    """`--env-file bad.env` with a line such as `HF TOKEN=...` logged "python-dotenv could not parse
    statement starting at line 4" and the run went on without that variable (on a cloud: after the
    machine was rented). Now a UsageError naming the file and line, never the line's text."""
    bad = tmp_path / "bad.env"
    bad.write_text("FOO=bar\n\n# comment\nHF TOKEN=hunter2-secret\n")
    with pytest.raises(UsageError, match=r"bad.env:4: not a NAME=VALUE line") as exc:
        cli_env([], [bad], {})
    assert "hunter2" not in str(exc.value) and "hunter2" not in "".join(capfd.readouterr())
    with pytest.raises(UsageError, match="not a file"):
        cli_env([], [tmp_path], {})


def test_redaction_keeps_names_and_the_rest_of_the_text():
    text = "name: a  # c\nenv:\n  TOKEN: abc123\n  B: \"quoted value\"\nresources: {spot: true}\n"
    red = redact_spec_text(text)
    assert "abc123" not in red and "quoted value" not in red
    assert red == f"name: a  # c\nenv:\n  TOKEN: '{REDACTED}'\n  B: '{REDACTED}'\nresources: {{spot: true}}\n"
    assert redact_spec_text("env: {A: x, B: y}\n") == f"env: {{A: '{REDACTED}', B: '{REDACTED}'}}\n"
    assert redact_spec({"env": {"A": "x"}, "name": "n"}) == {"env": {"A": REDACTED}, "name": "n"}


def test_local_run_passes_secrets_to_the_job_and_keeps_them_out_of_db_and_output(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "check_env.py").write_text(CHECK)
    spec = project / "job.yaml"
    spec.write_text(SPEC % sys.executable)
    (tmp_path / "s.env").write_text("FILE_TOKEN=file-value-c0de\n")
    home = tmp_path / "gpujob"
    env = {**os.environ, "GPUJOB_HOME": str(home), "CALLER_TOKEN": "caller-value-93ab", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "launcher", "run", str(spec), "--provider", "local", "--no-baseline",
                           "--env", "CALLER_TOKEN", "--env-file", str(tmp_path / "s.env"),
                           "--artifacts", str(tmp_path / "out")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "outputs" / "ok").read_text() == "yes"  # the job saw all three
    secrets = ("spec-value-7d1f", "caller-value-93ab", "file-value-c0de")
    for value in secrets:
        assert value not in proc.stdout + proc.stderr
    stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    stored += b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    for value in secrets:
        assert value.encode() not in stored, value
    db = sqlite3.connect(home / "runs.db")
    spec_json, spec_text = db.execute("SELECT spec_json, spec_text FROM runs").fetchone()
    assert f'"SPEC_TOKEN": "{REDACTED}"' in spec_json and "CALLER_TOKEN" in spec_json
    assert f"SPEC_TOKEN: '{REDACTED}'" in spec_text
