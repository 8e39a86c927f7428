"""Host pre-flight: right after SSH connects one command checks python, torch and the CUDA
GPU count; a failure stops the run before upload with one line naming the fix."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from launcher.errors import UsageError
from launcher.hostcheck import HostNotReady
from launcher.runner import RunOptions, Runner
from launcher.spec import parse_spec
from launcher.store import Store
from tests.test_runner_ssh import ssh_runner  # noqa: F401 - the fixture

TINY_WORKLOAD = ("{model: mlp, image_size: 8, num_classes: 10, in_channels: 1, dataset: digits, "
                 "samples_per_epoch: 512, epochs: 1, batch_size: 64, precision: fp32}")


def _fails_before_upload(runner, opts, spec_text: str) -> HostNotReady:
    with pytest.raises(HostNotReady) as err:
        runner.run(parse_spec(spec_text, check_catalog=False), opts)
    rec = runner.store.list_runs()[0]
    assert rec.state == "failed" and "\n" not in str(err.value)
    kinds = [k for k, _ in runner.events]
    assert "connected" in kinds and "job-started" not in kinds
    assert not any(k == "upload" or k == "uploaded" for k in kinds)
    return err.value


def _python_without(tmp_path: Path, module: str, source: str) -> Path:
    """An interpreter (a wrapper script) where importing ``module`` runs ``source`` instead."""
    shadow = tmp_path / f"no-{module}"
    shadow.mkdir()
    (shadow / f"{module}.py").write_text(source + "\n")
    wrapper = tmp_path / f"py-without-{module}"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shadow} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.sshd
def test_missing_python_names_payload_python(ssh_runner, tmp_path):
    runner, opts = ssh_runner
    err = _fails_before_upload(runner, opts, f"name: t\nworkload: {TINY_WORKLOAD}\npayload: {{python: /nonexistent/py3}}\n")
    assert "payload.python '/nonexistent/py3' does not run" in str(err) and "setup:" in str(err)
    assert not (Path(os.path.expanduser("~")) / "gpujob" / runner.store.list_runs()[0].id).exists()


@pytest.mark.sshd
def test_python_without_torch_names_the_fix(ssh_runner, tmp_path):
    runner, opts = ssh_runner
    wrapper = _python_without(tmp_path, "torch", "raise ImportError('no torch in this interpreter')")
    err = _fails_before_upload(runner, opts, f"name: t\nworkload: {TINY_WORKLOAD}\npayload: {{python: {wrapper}}}\n")
    assert "torch is not importable" in str(err) and "setup:" in str(err) and "payload.python" in str(err)


@pytest.mark.sshd
def test_fewer_cuda_gpus_than_asked_stops_before_upload(ssh_runner):
    runner, opts = ssh_runner
    err = _fails_before_upload(runner, opts, f"name: t\nworkload: {TINY_WORKLOAD}\n"
                                             f"payload: {{python: {sys.executable}}}\nresources: {{accelerators: 'T4:1'}}\n")
    assert "CUDA sees 0 GPU(s)" in str(err) and "needs 1" in str(err) and "nvidia-smi" in str(err)


@pytest.mark.sshd
def test_a_ready_host_is_checked_and_reported(ssh_runner):
    runner, opts = ssh_runner
    result = runner.run(parse_spec(f"name: t\nworkload: {TINY_WORKLOAD}\npayload: {{python: {sys.executable}}}\n"
                                   "limits: {max_duration: 5m}\n"), opts)
    assert result.run.state == "succeeded", result.run.reason
    (checked,) = [f for k, f in runner.events if k == "host-checked"]
    assert checked["python"] == sys.version.split()[0] and checked["torch"]


@pytest.mark.sshd
def test_own_entrypoint_without_gpus_does_not_import_torch_on_the_host(ssh_runner, tmp_path, monkeypatch):
    """Importing torch costs seconds: a job that needs neither our trainer nor GPUs skips it."""
    runner, opts = ssh_runner
    shadow = tmp_path / "no-torch"
    shadow.mkdir()
    marker = tmp_path / "torch-imported"
    (shadow / "torch.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('no torch')\n")
    wrapper = tmp_path / "py-without-torch"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shadow} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text("print('no torch here')\n")
    monkeypatch.chdir(project)
    result = runner.run(parse_spec(f"name: t\npayload: {{entrypoint: job.py, python: {wrapper}}}\n"
                                   "limits: {max_duration: 5m}\n"), opts)
    assert result.run.state == "succeeded", result.run.reason
    (checked,) = [f for k, f in runner.events if k == "host-checked"]
    assert checked["python"] == sys.version.split()[0] and checked["torch"] is None
    assert not marker.exists()


@pytest.mark.parametrize("missing, first_words", [
    ("torch", None),
    # pip install gpujob torch (no [train]): torch no longer brings numpy, which the trainer imports.
    ("numpy", "numpy is not installed in this Python, and the built-in trainer needs it"),
])
def test_local_run_without_a_trainer_module_says_install_gpujob_train(tmp_path, monkeypatch, missing, first_words):
    import importlib.util

    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    runner = Runner(store=Store())
    with pytest.raises(UsageError) as err:
        runner.run(parse_spec(f"name: t\nworkload: {TINY_WORKLOAD}\n"), RunOptions(provider="local", baseline=False))
    if first_words:
        assert str(err.value).startswith(first_words)
    assert "pip install 'gpujob[train]'" in str(err.value) and runner.store.list_runs() == []


@pytest.mark.sshd
def test_python_without_numpy_names_the_fix(ssh_runner, tmp_path):
    runner, opts = ssh_runner
    # torch imports numpy itself when it can: a missing one is a ModuleNotFoundError, as here
    wrapper = _python_without(tmp_path, "numpy", "raise ModuleNotFoundError(\"No module named 'numpy'\", name='numpy')")
    err = _fails_before_upload(runner, opts, f"name: t\nworkload: {TINY_WORKLOAD}\npayload: {{python: {wrapper}}}\n")
    assert "numpy is not importable" in str(err) and "setup:" in str(err) and "payload.python" in str(err)
