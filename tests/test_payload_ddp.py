"""payloads/train.py under torchrun with 2 gloo processes on the CPU."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from payloads.protocol import parse_line

ROOT = Path(__file__).resolve().parents[1]


def test_two_ranks_agree_on_parameters(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "payloads" / "train.py"), "--device", "cpu", "--model", "tinycnn", "--dataset", "digits",
           "--image-size", "16", "--in-channels", "1", "--num-classes", "10", "--batch-size", "32",
           "--samples-per-epoch", "640", "--epochs", "1", "--precision", "fp32", "--log-every", "5",
           "--output-dir", str(tmp_path)]
    # Each rank also saves its own final weights, to compare them.
    env["GPUJOB_TEST_DUMP_RANK_WEIGHTS"] = "1"
    # Own process group: on a timeout the workers die with torchrun instead of lingering.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    events = [e for e in map(parse_line, stdout.splitlines()) if e]
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2 and starts[0]["global_batch_size"] == 64
    end = [e for e in events if e["event"] == "end"][0]
    assert end["status"] == "ok" and end["steps"] == 10 and end["samples"] == 640
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys()
    # Parameters must agree; BatchNorm running stats are per-rank (DDP syncs them from rank 0
    # at the next forward), so they are not compared.
    params = [k for k in w0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 5
    for k in params:
        assert torch.equal(w0[k], w1[k]), k
