"""How a job spreads over GPUs and machines: PyTorch's own launcher (torchrun), no home-made one.

``topology`` reads how many machines and GPUs a job gets, ``torchrun_command`` builds the
command line for one machine of it, ``dist_env`` the environment that goes with it, and
``rank_prefix`` tags each machine's log lines when several machines stream at once.
Pure functions: nothing here touches the network, the clock or the terminal.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.spec import JobSpec

DEFAULT_MASTER_PORT = 29500  # torchrun's own default; the firewall rule between nodes opens it


@dataclass(frozen=True)
class Topology:
    """``nodes`` machines with ``gpus_per_node`` training processes each (one per GPU)."""

    nodes: int
    gpus_per_node: int

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(f"a topology needs >= 1 node and >= 1 process per node, got {self.nodes}x{self.gpus_per_node}")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def __str__(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}"


def topology(spec: "JobSpec", machine_gpu_count: int | None) -> Topology:
    """The spec's node count and the GPUs of one machine.

    A known machine decides the process count (its GPUs, 0 meaning a CPU-only machine: one
    process), since the spec may name fewer GPUs than the instance type carries. ``None``
    means no machine yet (planning): the spec's accelerator count stands in for it.
    """
    if machine_gpu_count is None:
        acc = spec.resources.accelerators
        per_node = acc.count if acc is not None else 1
    else:
        per_node = machine_gpu_count
    return Topology(nodes=spec.resources.num_nodes, gpus_per_node=max(1, per_node))


def torchrun_command(python: str, entrypoint: str, args: list[str], topo: Topology, node_rank: int,
                     master_addr: str | None, master_port: int = DEFAULT_MASTER_PORT, run_id: str = "") -> str:
    """The shell command that starts ``entrypoint`` on machine ``node_rank`` of ``topo``.

    1x1 runs the script directly (no launcher process, no rendezvous); 1xN uses torchrun's
    ``--standalone`` (a private rendezvous on a free local port); MxN uses the static
    rendezvous on node 0's private address (see the comment below).
    """
    q = shlex.quote
    if not 0 <= node_rank < topo.nodes:
        raise ValueError(f"node_rank {node_rank} is outside 0..{topo.nodes - 1}")
    tail = " ".join(q(str(a)) for a in [entrypoint, *args])
    if topo.world_size == 1:
        return f"{q(python)} -u {tail}"
    launch = [q(python), "-m", "torch.distributed.run"]
    if topo.nodes == 1:
        launch += ["--standalone", "--nproc_per_node", str(topo.gpus_per_node)]
    else:
        if not master_addr:
            raise ValueError("a multi-node run needs master_addr: node 0's private address")
        # Static rendezvous, not c10d: c10d numbers nodes by join order (it ignores
        # --node_rank), so global rank 0 - the one that prints the progress protocol and
        # writes outputs/ - could land on any machine. Static keeps it on node 0, the machine
        # whose log the runner parses and whose outputs it fetches. rdzv_id prefixes the
        # rendezvous keys, so a straggler from another run cannot join this one; the join
        # waits torchrun's default 600 s for missing nodes, then every node exits non-zero.
        launch += ["--nnodes", str(topo.nodes), "--node_rank", str(node_rank),
                   "--nproc_per_node", str(topo.gpus_per_node),
                   "--master_addr", q(master_addr), "--master_port", str(int(master_port))]
        if run_id:
            launch += ["--rdzv_id", q(run_id)]
    return f"{' '.join(launch)} {tail}"


def dist_env(topo: Topology, node_rank: int, cpus: int | None = None) -> dict[str, str]:
    """Environment for every process of node ``node_rank`` beyond what torchrun sets itself.

    torchrun exports RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT and friends. NCCL and
    gloo choose their network interface themselves; it is left alone, because forcing a
    name (eth0, ens5, ...) breaks on whichever image names it differently.
    """
    if not 0 <= node_rank < topo.nodes:
        raise ValueError(f"node_rank {node_rank} is outside 0..{topo.nodes - 1}")
    if topo.world_size == 1:
        return {}  # one plain process: torch's own defaults are right
    env = {
        # NVLink SHARP (multicast) helps only large all-reduces on NVSwitch machines, and DDP
        # hides most of its all-reduce behind the backward pass anyway; multicast setups
        # have wedged GPUs until a reset. A spec's env: NCCL_NVLS_ENABLE: "1" turns it back on.
        "NCCL_NVLS_ENABLE": "0",
    }
    if cpus:
        # torchrun sets 1 thread per process when this is unset; a fair share of the cores
        # is faster for CPU-side work (data decode, the optimizer on CPU) without oversubscribing.
        env["OMP_NUM_THREADS"] = str(max(1, cpus // topo.gpus_per_node))
    if topo.nodes > 1:
        env["NCCL_DEBUG"] = "WARN"  # a failed cross-node connection then says which peer and why
    return env


def rank_prefix(node_rank: int, text: str) -> str:
    """``[node R] `` before every line of ``text``; a trailing newline opens no new line.

    Feed it whole lines: a line split across two calls would be prefixed twice. Prefix only
    what is shown or stored, after protocol parsing, since a prefixed JSON line is no event.
    """
    prefix = f"[node {node_rank}] "
    lines = text.split("\n")
    last = lines.pop()  # "" when text ends with a newline
    return "".join(f"{prefix}{line}\n" for line in lines) + (prefix + last if last else "")
