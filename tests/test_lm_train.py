"""payloads/train.py with language models on the CPU: one process, DDP and FSDP2 (gloo, 2
processes), sharded checkpoints resumed on 1 and on 2 processes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from payloads.protocol import parse_line

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "payloads" / "train.py")
TINY = json.dumps({"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_ff": 64})
GLOBAL_BATCH = 4
STEPS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    return path


def train(out, corpus, procs=1, parallel="auto", extra=(), expect=0):
    config = out / "job.json"  # model_args travels in the config file, as the launcher sends it
    config.write_text(json.dumps({"model": "lm", "model_args": json.loads(TINY), "vocab_size": 256}))
    args = [TRAIN, "--config", str(config), "--device", "cpu", "--dataset", str(corpus), "--seq-len", "16",
            "--batch-size", str(GLOBAL_BATCH // procs), "--samples-per-epoch", str(STEPS * GLOBAL_BATCH * 16),
            "--precision", "fp32", "--log-every", "1", "--output-dir", str(out), "--lr", "0.003",
            "--parallel", parallel, *extra]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    if procs > 1 and expect:  # torchrun itself exits 1 and names each worker's exit code
        assert proc.returncode == 1 and stderr.count(f"exitcode  : {expect}") == procs, stderr[-3000:]
    else:
        assert proc.returncode == expect, stderr[-3000:]
    events = [e for e in map(parse_line, stdout.splitlines()) if e]
    return events, stderr


def losses(events):
    return {e["step"]: e["loss"] for e in events if e["event"] == "step"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """One process, no sharding, all steps."""
    events, _ = train(tmp_path_factory.mktemp("ref"), corpus)
    start = events[0]
    assert start["parallel"] == "single" and start["tokens_per_step"] == GLOBAL_BATCH * 16
    end = [e for e in events if e["event"] == "end"][0]
    assert end["status"] == "ok" and end["steps"] == STEPS and end["samples"] == STEPS * GLOBAL_BATCH * 16
    ref = losses(events)
    assert sorted(ref) == list(range(1, STEPS + 1)) and ref[STEPS] < ref[1]  # it learns
    return ref


@pytest.mark.slow
def test_fsdp_two_processes_then_resume_on_one(tmp_path, corpus, reference):
    events, _ = train(tmp_path, corpus, procs=2, parallel="fsdp", extra=["--max-steps", "3"], expect=75)
    assert events[0]["parallel"] == "fsdp" and events[0]["world_size"] == 2
    first = losses(events)
    for s in (1, 2, 3):
        assert first[s] == pytest.approx(reference[s], rel=1e-4, abs=1e-5)
    meta = json.loads((tmp_path / "checkpoints" / "lm" / "last.json").read_text())
    assert meta["step"] == 3 and meta["world_size"] == 2 and meta["parallel"] == "fsdp"
    events, stderr = train(tmp_path, corpus, procs=1, extra=["--resume"])
    assert events[0]["resumed_from_step"] == 3 and "written by 2 process(es), read by 1" in stderr
    rest = losses(events)
    assert sorted(rest) == [4, 5, 6]
    for s in rest:
        assert rest[s] == pytest.approx(reference[s], rel=1e-4, abs=1e-5)
    assert (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_one_process_then_resume_on_two_with_fsdp(tmp_path, corpus, reference):
    events, _ = train(tmp_path, corpus, extra=["--max-steps", "2"], expect=75)
    assert losses(events) == pytest.approx({1: reference[1], 2: reference[2]}, rel=1e-4)
    events, stderr = train(tmp_path, corpus, procs=2, parallel="fsdp", extra=["--resume"])
    assert "written by 1 process(es), read by 2" in stderr
    rest = losses(events)
    assert sorted(rest) == [3, 4, 5, 6]
    for s in rest:
        assert rest[s] == pytest.approx(reference[s], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_ddp_and_activation_checkpointing_match(tmp_path, corpus, reference):
    events, _ = train(tmp_path, corpus, procs=2, parallel="ddp", extra=["--activation-checkpointing"])
    assert events[0]["parallel"] == "ddp" and events[0]["activation_checkpointing"] is True
    got = losses(events)
    for s in reference:
        assert got[s] == pytest.approx(reference[s], rel=1e-4, abs=1e-5)


def test_one_process_checkpoints_without_torch_distributed_warnings(tmp_path, corpus):
    """dcp.save and dcp.load warn 'torch.distributed is disabled, unavailable or uninitialized'
    on every call in one process; that line landed in the middle of a local run's output."""
    said = []
    for extra, expect in ((["--max-steps", "2"], 75), (["--resume"], 0)):  # save, then load and save
        events, stderr = train(tmp_path, corpus, extra=extra, expect=expect)
        said.append(stderr)
    assert events[0]["resumed_from_step"] == 2
    assert not [s for s in said if "torch.distributed is" in s], said


def test_bad_language_model_input_is_one_line_exit_2(tmp_path, corpus):
    for extra, match in ((["--precision", "fp16"], "use bf16"), (["--parallel", "fsdp"], "several processes"),
                         (["--vocab-size", "100"], "vocab_size >= 256")):
        _, stderr = train(tmp_path, corpus, extra=extra, expect=2)
        assert match in stderr and "Traceback" not in stderr


def test_probe_reports_tokens_per_second(tmp_path, corpus):
    events, _ = train(tmp_path, corpus, extra=["--probe-steps", "2", "--warmup-steps", "1"])
    probe = [e for e in events if e["event"] == "probe"][0]
    assert probe["tokens_per_second"] > 0 and probe["seq_len"] == 16 and probe["flops_per_token"] > 0
    assert probe["memory_plan_gib"]["total"] > 0


def test_token_files_and_global_batch_slices(tmp_path):
    import numpy as np

    from payloads import lm_data

    tokens = np.arange(1000, dtype="<u2") % 500
    (tmp_path / "plain.bin").write_bytes(tokens.tobytes())
    header = np.zeros(256, dtype="<i4")
    header[:3] = (lm_data.LLMC_MAGIC, 1, len(tokens))
    (tmp_path / "llmc.bin").write_bytes(header.tobytes() + tokens.tobytes())
    for name in ("plain.bin", "llmc.bin"):
        data = lm_data.open_tokens(str(tmp_path / name), vocab_size=500)
        assert len(data) == 1000
        x, y = data.batch(step=3, rank=0, world=1, batch=4, seq_len=16, seed=0)
        assert x.shape == y.shape == (4, 16) and (y[:, :-1] == x[:, 1:]).all()
        # two processes of batch 2 read exactly what one process of batch 4 does
        halves = [data.batch(step=3, rank=r, world=2, batch=2, seq_len=16, seed=0)[0] for r in (0, 1)]
        assert (np.concatenate(halves) == x.numpy()).all()
    text = tmp_path / "t.txt"
    text.write_text("hello world, " * 10)
    x, _ = lm_data.open_tokens(str(text), 256).batch(0, 0, 1, 2, 8, 0)
    assert int(x.max()) < 256
    with pytest.raises(lm_data.DataError, match="outside the vocabulary"):
        lm_data.open_tokens(str(tmp_path / "plain.bin"), vocab_size=100)
    (tmp_path / "odd.bin").write_bytes(b"abc")
    with pytest.raises(lm_data.DataError, match="whole number"):
        lm_data.open_tokens(str(tmp_path / "odd.bin"), vocab_size=500)
    with pytest.raises(lm_data.DataError, match="fewer than seq_len"):
        lm_data.open_tokens(str(text), 256).batch(0, 0, 1, 1, 4096, 0)
    with pytest.raises(lm_data.DataError, match="no such file"):
        lm_data.open_tokens(str(tmp_path / "missing.bin"), 500)
