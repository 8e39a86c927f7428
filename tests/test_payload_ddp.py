"""payloads/train.py under torchrun with 2 gloo processes on the CPU: what must hold at two GPUs."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from payloads.protocol import EXIT_INTERRUPTED, EXIT_TRAINING_ERROR, parse_line

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "payloads" / "train.py")
# 640 digits a run: 10 steps of 2 x 32 on two ranks, 20 steps of 32 on one.
JOB = ["--device", "cpu", "--model", "tinycnn", "--dataset", "digits", "--image-size", "16", "--in-channels", "1",
       "--num-classes", "10", "--batch-size", "32", "--samples-per-epoch", "640", "--epochs", "1",
       "--precision", "fp32", "--log-every", "5"]


def _run(cmd: list[str], timeout: float = 280) -> tuple[int, list[dict], str]:
    # Each rank also saves its own final weights (rank<N>.pt), to compare them.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPUJOB_TEST_DUMP_RANK_WEIGHTS": "1"}
    # Own process group: on a timeout the workers die with torchrun instead of lingering.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    return proc.returncode, [e for e in map(parse_line, stdout.splitlines()) if e], stderr


def _torchrun(nproc: int, out: Path, *extra: str) -> tuple[int, list[dict], str]:
    return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                 TRAIN, *JOB, "--output-dir", str(out), *extra])


def _one(events: list[dict], kind: str) -> dict:
    found = [e for e in events if e["event"] == kind]
    assert len(found) == 1, (kind, events)
    return found[0]


def _same_weights(out: Path) -> None:
    w0, w1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert w0.keys() == w1.keys()
    assert sum(k.endswith("running_mean") for k in w0) == 3  # tinycnn's BatchNorm layers
    for k in w0:  # parameters by DDP; BatchNorm running statistics averaged before the checkpoint
        assert torch.equal(w0[k], w1[k]), k


def test_two_ranks_agree_on_parameters_and_statistics_and_count_globally(tmp_path):
    rc, events, stderr = _torchrun(2, tmp_path)
    assert rc == 0, stderr[-3000:]
    start = _one(events, "start")
    assert start["world_size"] == 2 and start["global_batch_size"] == 64
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["step"], e["samples"]) for e in steps] == [(5, 320), (10, 640)]  # global counts
    end = _one(events, "end")
    assert end["status"] == "ok" and end["steps"] == 10 and end["samples"] == 640
    # Both ranks scored half of the held-out split; the accuracy is over all of it.
    assert isinstance(_one(events, "epoch")["accuracy"], float)
    assert _one(events, "checkpoint")["reason"] == "end"  # written once, by rank 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]
    _same_weights(tmp_path)


def test_resume_on_two_ranks_and_on_one(tmp_path):
    """Stopped at step 4 of 10 on two ranks; resumed there on two ranks, and on one process."""
    rc, events, stderr = _torchrun(2, tmp_path, "--max-steps", "4")
    # Both ranks exit 75 (stopped with a checkpoint); torchrun reports any non-zero worker as 1.
    assert rc == 1 and "exitcode  : 75" in stderr, stderr[-3000:]
    assert _one(events, "end")["status"] == "interrupted"
    ck = _one(events, "checkpoint")
    assert ck["step"] == 4 and ck["reason"] == "max_steps"
    saved = (tmp_path / "checkpoints" / "last.pt").read_bytes()

    two = tmp_path / "two"
    (two / "checkpoints").mkdir(parents=True)
    (two / "checkpoints" / "last.pt").write_bytes(saved)
    rc, events, stderr = _torchrun(2, two, "--resume")
    assert rc == 0, stderr[-3000:]
    assert _one(events, "start")["resumed_from_step"] == 4
    end = _one(events, "end")
    assert end["steps"] == 10 and end["samples"] == 640
    assert "[train rank 1/2] resumed from" in stderr and "[train rank 0/2] resumed from" in stderr
    _same_weights(two)

    # One process, batch 32: 256 samples done are step 8 of 20; the run still ends at 640 samples.
    one = tmp_path / "one"
    (one / "checkpoints").mkdir(parents=True)
    (one / "checkpoints" / "last.pt").write_bytes(saved)
    rc, events, stderr = _torchrun(1, one, "--resume")
    assert rc == 0, stderr[-3000:]
    assert "256 samples done = step 8 of 20" in stderr
    end = _one(events, "end")
    assert end["steps"] == 20 and end["samples"] == 640


def test_a_diverged_run_stops_with_an_error_and_keeps_its_checkpoint(tmp_path):
    rc, _, stderr = _run([sys.executable, TRAIN, *JOB, "--output-dir", str(tmp_path), "--max-steps", "5"])
    assert rc == EXIT_INTERRUPTED, stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    rc, events, stderr = _run([sys.executable, TRAIN, *JOB, "--output-dir", str(tmp_path), "--resume",
                               "--lr", "1e30"])
    assert rc == EXIT_TRAINING_ERROR, stderr[-3000:]
    err = _one(events, "error")
    assert "diverged" in err["message"] and "lower learning_rate" in err["message"]
    assert not [e for e in events if e["event"] in ("checkpoint", "end")]
    assert ckpt.read_bytes() == before
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.sshd
def test_torchrun_turns_a_checkpointed_stop_into_1_and_the_runner_still_says_stopped(tmp_path, monkeypatch, sshd,
                                                                                       client_key):
    """Two gloo ranks under torchrun on a "2-GPU" machine (loopback sshd): the payload stops early with
    a checkpoint (--max-steps, as if signalled) and exits 75, which torchrun reports as 1. The
    runner trusts the payload's `end` event (status interrupted) over torchrun's code: exit status
    75, "stopped by a signal (checkpoint written)", not "job exited 1"; the checkpoint comes home."""
    import dataclasses
    import re

    from launcher.errors import JobFailed
    from launcher.job import EXIT_SIGNALLED, default_host
    from launcher.providers import get_provider
    from launcher.runner import RunOptions, Runner
    from launcher.spec import parse_spec
    from launcher.store import Store
    from tests.e2e_support import gpus_as_launched, require_sshd

    require_sshd()
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    provider = get_provider("ssh", host=sshd.host, port=sshd.port, user=sshd.user, identity=str(client_key.path),
                            known_hosts=str(known))
    real_launch = provider.launch
    provider.launch = lambda spec, ctx, deadline: dataclasses.replace(real_launch(spec, ctx, deadline), gpu_count=2)
    runner = Runner(store=Store(), provider_factory=lambda name, **c: provider,
                    host_factory=lambda m: gpus_as_launched(default_host(m), 2))
    spec = parse_spec("name: ddp-stop\nworkload: {model: tinycnn, image_size: 16, num_classes: 10, in_channels: 1, "
                      "dataset: digits, samples_per_epoch: 640, epochs: 1, batch_size: 32, precision: fp32}\n"
                      f"payload: {{python: {sys.executable}, args: ['--max-steps', '4', '--log-every', '2']}}\n"
                      "resources: {accelerators: 'T4:2'}\nlimits: {max_duration: 5m}\n")
    with pytest.raises(JobFailed) as info:
        runner.run(spec, RunOptions(provider="ssh", baseline=False))
    (rec,) = runner.store.list_runs()
    log = runner.store.log_text(rec.id)
    assert "ChildFailedError" in log and re.search(r"exitcode\s*:\s*75", log), log[-3000:]  # torchrun: 75 -> 1
    assert info.value.exit_status == EXIT_SIGNALLED and rec.exit_status == EXIT_SIGNALLED, log[-3000:]
    assert "stopped by a signal (checkpoint written)" in rec.reason
    assert rec.result["end"]["status"] == "interrupted" and rec.result["end"]["steps"] == 4
    assert (Path(rec.artifacts_dir) / "outputs" / "checkpoints" / "last.pt").is_file()
