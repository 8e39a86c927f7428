"""Which precision a job asked for runs at on a CPU: bf16 only where the CPU computes it natively.

Imports only the standard library, so the launcher (the CPU probe's precision, without torch)
and the payload (the precision a CPU run trains at) read the same rule from one place.

bf16 autocast on a CPU without AVX512-BF16 or AMX is emulated and several times slower than
fp32 (jobs/tokenlm.yaml on 2 AMD EPYC cores with AVX2 only, one-sequence probe: 294 tokens/s in
fp32, 29 in bf16; ``payloads/train.py --device cpu --probe-seconds 15`` at each precision); fp16
autocast on a CPU is emulated everywhere; tf32 is a GPU mode (fp32 on a CPU).
"""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


def native_bf16(cpuinfo: str | None = None) -> bool:
    """True when this CPU (``cpuinfo``: the text of /proc/cpuinfo, read when None) lists
    AVX512-BF16 or AMX-BF16; False where the file cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    return bool(set(NATIVE_BF16_FLAGS) & set(cpuinfo.split()))


def cpu_precision(precision: str, cpuinfo: str | None = None) -> str:
    """The precision a job asking for ``precision`` trains at on this CPU: "bf16" when it asks
    for bf16 and the CPU has it natively (``native_bf16``), else "fp32"."""
    return "bf16" if precision == "bf16" and native_bf16(cpuinfo) else "fp32"
