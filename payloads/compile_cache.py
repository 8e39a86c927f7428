"""Was torch.compile's on-disk cache cold when this process started? (No torch import at module level:
the launcher reads ``holds_a_file`` too, to see whether a recorded run's cache is still there.)

``state(compiling, device_kind)`` -> ("cold" | "warm" | None, the folders looked at):
"warm" when Inductor's cache folder (TORCHINDUCTOR_CACHE_DIR, else torch's default,
/tmp/torchinductor_<user>) or, on CUDA, a Triton cache folder set apart from it (TRITON_CACHE_DIR;
with a torch older than ``cache_dir_utils.triton_cache_dir`` also the default ~/.triton/cache) holds
any file; "cold" when none does, or TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 (nothing is read); None when
not compiling or the folder cannot be told. Any file counts, not only this job's: a warm cache may
still compile this job cold. Each walk stops at the first file found.
"""

from __future__ import annotations

import os

MAX_ENTRIES = 10_000  # folder entries looked at per tree before giving up (None: unknown)


def holds_a_file(path: str) -> bool | None:
    """True when the tree under ``path`` holds a file (stops at the first), False when it holds none
    or does not exist, None when it cannot be read or has more than MAX_ENTRIES entries without one."""
    stack, seen = [path], 0
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    seen += 1
                    if seen > MAX_ENTRIES:
                        return None
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        return True
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return False


def folders(device_kind: str) -> list[str] | None:
    """The cache folders a compile in this process reads, or None when Inductor's cannot be told."""
    try:
        from torch._inductor.runtime import cache_dir_utils

        inductor = os.path.abspath(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or cache_dir_utils.default_cache_dir())
    except Exception:  # a torch without this private module: unknown
        return None
    out = [inductor]
    if device_kind == "cuda":
        triton = os.environ.get("TRITON_CACHE_DIR")
        if not triton and not hasattr(cache_dir_utils, "triton_cache_dir"):  # older torch: Triton's default
            home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
            triton = os.path.join(home, ".triton", "cache")
        if triton:  # else Inductor keeps Triton's kernels under its own folder (looked at already)
            out.append(os.path.abspath(triton))
    return out


def state(compiling: bool, device_kind: str) -> tuple[str | None, list[str]]:
    """("cold" | "warm" | None, the folders looked at); call it before anything compiles."""
    if not compiling:
        return None, []
    dirs = folders(device_kind)
    if dirs is None:
        return None, []
    if os.environ.get("TORCHINDUCTOR_FORCE_DISABLE_CACHES") == "1":
        return "cold", dirs
    found = [holds_a_file(d) for d in dirs]
    if any(f is True for f in found):
        return "warm", dirs
    return (None if None in found else "cold"), dirs
