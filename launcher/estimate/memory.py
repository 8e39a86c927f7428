"""Memory planning for language models: will it fit, on how many GPUs of which kind.

Per GPU, for AdamW with fp32 master weights (payloads/lm_shapes.memory_plan counts the bytes):
weights 4 B, gradients 4 B and AdamW's two moments 8 B per parameter, divided by the GPU count
under FSDP; the half-precision working copies (autocast's weight casts, or FSDP's gathered
blocks); saved activations per layer per token, with or without activation checkpointing; the
logits around the loss. That total is what ``torch.cuda.max_memory_allocated`` reports
(checked on H200s in docs/benchmarks.md); it fits when it is at most
``lm_shapes.FITS_FRACTION`` of the GPU's memory, leaving the rest to the CUDA context, NCCL
and the caching allocator. The payload makes the same decision with the same numbers when
``parallel: auto`` and ``activation_checkpointing`` is unset.

No torch: the estimate imports this for every language-model spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from launcher.payloads import lm_shapes

GIB = 1024**3
MAX_NODES = 64  # the spec's limit on resources.num_nodes


@dataclass(frozen=True)
class MemoryPlan:
    world: int  # GPUs in the job (per machine x machines)
    parallel: str  # single | ddp | fsdp
    checkpointing: bool
    allocated_gib: float  # planned max_memory_allocated per GPU
    gpu_memory_gib: float
    fits: bool
    breakdown_gib: dict  # params, grads, optimizer, working_params, activations, logits

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        how = {"single": "one GPU", "ddp": f"DDP over {self.world}", "fsdp": f"FSDP over {self.world}"}[self.parallel]
        ac = ", activation checkpointing" if self.checkpointing else ""
        return f"{how}{ac}: {self.allocated_gib:.1f} of {self.gpu_memory_gib:.0f} GiB per GPU"


def _options(workload, world: int) -> list[tuple[str, bool]]:
    """(parallel, checkpointing) in the order the payload's auto rules try them."""
    if world == 1:
        modes = ["single"]
    elif workload.parallel in ("ddp", "fsdp"):
        modes = [workload.parallel]
    else:
        modes = ["ddp", "fsdp"]
    if workload.activation_checkpointing is not None:  # the spec decides
        return [(m, workload.activation_checkpointing) for m in modes]
    return [(m, False) for m in modes] + [(modes[-1], True)]  # checkpointing only when nothing else fits


def plan_lm(workload, world: int, gpu_memory_gib: float) -> MemoryPlan:
    """The plan the payload would pick on ``world`` GPUs of ``gpu_memory_gib`` each: the first of
    (ddp, fsdp, fsdp + checkpointing) that fits, else the last (then ``fits`` is False)."""
    shape, seq = workload.lm_shape(), workload.effective_seq_len
    plan = None
    for mode, ac in _options(workload, world):
        raw = lm_shapes.memory_plan(shape, seq, workload.batch_size, world=world, parallel=mode, checkpointing=ac,
                                    precision=workload.precision, compiled=workload.compile is not False)
        fits = lm_shapes.fits(raw["total"], gpu_memory_gib * GIB)
        plan = MemoryPlan(world, mode, ac, raw["total"] / GIB, gpu_memory_gib, fits,
                          {k: round(raw[k] / GIB, 3) for k in lm_shapes.MEMORY_TERMS})
        if fits:
            return plan
    return plan


def smallest_fit(workload, gpu_memory_gib: float, counts: list[int], nodes_allowed: bool = True,
                 checkpointing: bool | None = None) -> tuple[int, int, MemoryPlan] | None:
    """(GPUs per machine, machines, plan) with the fewest GPUs that fits, trying each machine
    size in ``counts`` and then machines of the largest size; None when nothing up to
    MAX_NODES machines fits. ``checkpointing`` forces it on or off (None: the spec's choice)."""
    w = workload if checkpointing is None else workload.model_copy(update={"activation_checkpointing": checkpointing})
    for count in sorted(set(counts)):
        plan = plan_lm(w, count, gpu_memory_gib)
        if plan.fits:
            return count, 1, plan
    if nodes_allowed and counts:
        big = max(counts)
        for nodes in range(2, MAX_NODES + 1):
            plan = plan_lm(w, big * nodes, gpu_memory_gib)
            if plan.fits:
                return big, nodes, plan
    return None


def memory_table(workload, offers, get_gpu) -> list[dict]:
    """Per GPU type in ``offers``: the fewest GPUs (and the instance) that fit the job without and
    with activation checkpointing. Rows sorted by GPU memory, largest first."""
    by_gpu: dict[str, list] = {}
    for o in offers:
        by_gpu.setdefault(o.gpu, []).append(o)
    rows = []
    for gpu_name, group in by_gpu.items():
        try:
            mem = get_gpu(gpu_name).memory_gib
        except Exception:
            continue  # no hardware figures: the table notes it elsewhere
        row = {"gpu": gpu_name, "gpu_memory_gib": mem}
        for key, ac in (("without_checkpointing", False), ("with_checkpointing", True)):
            found = smallest_fit(workload, mem, [o.gpu_count for o in group], checkpointing=ac)
            if found is None:
                row[key] = None
                continue
            count, nodes, plan = found
            same = [o for o in group if o.gpu_count == count]
            cheapest = min(same, key=lambda o: (o.price is None, o.price or 0.0))
            row[key] = {"gpus": count * nodes, "gpus_per_machine": count, "machines": nodes,
                        "instance": f"{cheapest.provider} {cheapest.instance_type}", **plan.to_dict()}
        rows.append(row)
    rows.sort(key=lambda r: (-r["gpu_memory_gib"], r["gpu"]))
    return rows
