"""torchrun commands and environment per topology, and real 2-node x 2-process runs on loopback (gloo)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.distributed import Topology, dist_env, rank_prefix, topology, torchrun_command
from launcher.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
PY = "python3"
ENTRY = "payloads/train.py"
ARGS = ["--config", "job.json", "--output-dir", "my outputs"]  # a space: must stay one argument


def _spec(resources: str):
    return parse_spec(f"name: t\nresources: {resources}\n")


# --- topology ---------------------------------------------------------------------------


@pytest.mark.parametrize("resources, machine_gpus, expected", [
    ("{}", None, (1, 1)),
    ("{accelerators: 'A100:8'}", None, (1, 8)),
    ("{accelerators: 'A100:8', num_nodes: 2}", None, (2, 8)),
    ("{accelerators: 'A100:1', num_nodes: 2}", 8, (2, 8)),  # the machine's GPUs win over the spec
    ("{accelerators: 'A100:8'}", 0, (1, 1)),  # a known CPU-only machine runs one process
])
def test_topology(resources, machine_gpus, expected):
    topo = topology(_spec(resources), machine_gpus)
    assert (topo.nodes, topo.gpus_per_node) == expected
    assert topo.world_size == expected[0] * expected[1]


def test_topology_rejects_empty():
    with pytest.raises(ValueError):
        Topology(0, 1)


# --- commands -----------------------------------------------------------------------------


def test_command_1x1_is_plain_python():
    cmd = torchrun_command(PY, ENTRY, ARGS, Topology(1, 1), 0, None)
    assert cmd == "python3 -u payloads/train.py --config job.json --output-dir 'my outputs'"
    assert shlex.split(cmd)[-1] == "my outputs"


def test_command_1x8_is_standalone():
    cmd = torchrun_command(PY, ENTRY, ARGS, Topology(1, 8), 0, None)
    assert cmd == ("python3 -m torch.distributed.run --standalone --nproc_per_node 8 "
                   "payloads/train.py --config job.json --output-dir 'my outputs'")


@pytest.mark.parametrize("node_rank", [0, 1])
def test_command_2x8_static_rendezvous_on_node0(node_rank):
    cmd = torchrun_command(PY, ENTRY, ARGS, Topology(2, 8), node_rank, "10.0.1.5", 29500, "run-abc")
    assert cmd == ("python3 -m torch.distributed.run --nnodes 2 "
                   f"--node_rank {node_rank} --nproc_per_node 8 --master_addr 10.0.1.5 --master_port 29500 "
                   "--rdzv_id run-abc payloads/train.py --config job.json --output-dir 'my outputs'")


def test_command_quotes_everything():
    cmd = torchrun_command("/opt/my env/bin/python", "my dir/train.py", ["--note", "it's $HOME"],
                           Topology(2, 2), 1, "10.0.0.2", 29400, "id; rm -rf /")
    argv = shlex.split(cmd)
    assert argv[0] == "/opt/my env/bin/python"
    assert argv[argv.index("--rdzv_id") + 1] == "id; rm -rf /"
    assert argv[-3:] == ["my dir/train.py", "--note", "it's $HOME"]


def test_command_errors():
    with pytest.raises(ValueError, match="master_addr"):
        torchrun_command(PY, ENTRY, [], Topology(2, 8), 1, None)
    with pytest.raises(ValueError, match="node_rank"):
        torchrun_command(PY, ENTRY, [], Topology(2, 8), 2, "10.0.0.1")


# --- environment ----------------------------------------------------------------------------


def test_env_1x1_is_empty():
    assert dist_env(Topology(1, 1), 0, cpus=8) == {}


def test_env_1x8():
    assert dist_env(Topology(1, 8), 0, cpus=96) == {"NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": "12"}
    assert dist_env(Topology(1, 8), 0) == {"NCCL_NVLS_ENABLE": "0"}  # cores unknown: torchrun's default


@pytest.mark.parametrize("node_rank", [0, 1])
def test_env_2x8(node_rank):
    assert dist_env(Topology(2, 8), node_rank, cpus=4) == {
        "NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": "1", "NCCL_DEBUG": "WARN"}


def test_rank_prefix():
    assert rank_prefix(1, "a\n\nb\n") == "[node 1] a\n[node 1] \n[node 1] b\n"
    assert rank_prefix(0, "partial") == "[node 0] partial"
    assert rank_prefix(0, "") == ""


# --- real runs: 2 simulated nodes x 2 processes on loopback ---------------------------------

# Each rank starts from different weights and sees different data; DDP must broadcast rank 0's
# weights and average the gradients, or the final sums differ.
DDP_SCRIPT = """
import os, sys, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(100 + rank)
model = torch.nn.Linear(8, 3)
before = float(sum(p.sum() for p in model.parameters()))
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
for _ in range(5):
    x, y = torch.randn(16, 8), torch.randn(16, 3)
    opt.zero_grad()
    torch.nn.functional.mse_loss(ddp(x), y).backward()
    opt.step()
after = float(sum(p.double().sum() for p in model.parameters()))
with open(os.path.join(sys.argv[1], f"rank{rank}.txt"), "w") as f:
    f.write(f"{dist.get_world_size()} {before!r} {after!r}")
dist.destroy_process_group()
os._exit(0)  # as the payload does: gloo's threads may abort a normal interpreter exit
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_2x2(entry: str, args: list[str], cwd: Path, tmp_path: Path, timeout_s: float = 240) -> list[str]:
    """Both nodes' torchrun commands, as the launcher builds them, run at once; returns their stdouts."""
    topo, port = Topology(2, 2), _free_port()
    # One thread per process: 4 workers share a small CI machine. lo: nothing else is reachable here.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **dist_env(topo, 0)}
    procs, logs = [], []
    for node in range(topo.nodes):
        cmd = torchrun_command(sys.executable, entry, args, topo, node, "127.0.0.1", port, "test-run")
        out = open(tmp_path / f"node{node}.log", "w+")
        logs.append(out)
        procs.append(subprocess.Popen(cmd, shell=True, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    try:
        codes = [p.wait(timeout=timeout_s) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:  # our own process groups only: torchrun and its workers
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    texts = []
    for f in logs:
        f.seek(0)
        texts.append(f.read())
        f.close()
    detail = "\n".join(rank_prefix(n, t) for n, t in enumerate(texts))[-4000:]
    assert codes == [0, 0], f"exit codes {codes}\n{detail}"
    return texts


def test_2x2_ranks_agree(tmp_path):
    script = tmp_path / "ddp_linear.py"
    script.write_text(DDP_SCRIPT)
    _run_2x2(str(script), [str(tmp_path)], tmp_path, tmp_path)
    rows = [(tmp_path / f"rank{r}.txt").read_text().split() for r in range(4)]
    assert {row[0] for row in rows} == {"4"}
    assert len({row[1] for row in rows}) == 4  # the ranks really started apart
    assert len({row[2] for row in rows}) == 1, rows  # and ended identical


def test_2x2_real_payload_trains(tmp_path):
    out = tmp_path / "out"
    args = ["--model", "mlp", "--dataset", "synthetic", "--image-size", "8", "--in-channels", "1",
            "--num-classes", "10", "--samples-per-epoch", "256", "--batch-size", "16", "--epochs", "1",
            "--precision", "fp32", "--device", "cpu", "--output-dir", str(out)]
    node0, node1 = _run_2x2("payloads/train.py", args, ROOT, tmp_path)
    events = [json.loads(line) for line in node0.splitlines() if line.startswith('{"event"')]
    start = next(e for e in events if e["event"] == "start")
    end = next(e for e in events if e["event"] == "end")
    assert start["world_size"] == 4 and start["global_batch_size"] == 64
    assert end["status"] == "ok" and end["samples"] == 256
    assert '"event"' not in node1  # only global rank 0, on node 0, speaks the protocol
    assert (out / "model.pt").exists()
