"""Names in a job spec checked against the price catalog and the GPU table, at load time.

``check_names(spec, catalog, where)`` raises ``SpecError`` (file, line, field, did-you-mean)
for: a GPU name neither table knows, malformed shorthand such as ``A100x1``, a GPU count no
provider sells (naming the counts that exist), a region no provider has, a GPU that no spec
region offers, an instance type that looks like a typo of a catalog type, and one that does not
carry the spec's accelerators. The catalog lists
GPU machines only, so an instance type with no close catalog match (a CPU type) passes.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from typing import Any, Callable

from launcher.errors import SpecError

# "A100x1", "A100 x 1", "A100*2", "8xH100", "A100 2", "A100=2", "A100/2": a count glued to a name.
_GLUED = (re.compile(r"^\s*(?P<name>[A-Za-z][\w-]*?)\s*(?:[xX*=/]|\s)\s*(?P<count>\d+)\s*$"),
          re.compile(r"^\s*(?P<count>\d+)\s*[xX*]?\s*(?P<name>[A-Za-z][\w-]*)\s*$"))


def _known_gpus(catalog: Any) -> dict[str, str]:
    """casefold -> canonical name, from the GPU table and the catalog."""
    from launcher.catalog.gpus import GPUS

    names = set(GPUS) | set(catalog.gpus() if catalog is not None else ())
    return {n.casefold(): n for n in names}


def _did_you_mean(word: str, options: list[str], cutoff: float = 0.6, n: int = 3) -> list[str]:
    folded = {o.casefold(): o for o in options}
    return [folded[m] for m in difflib.get_close_matches(word.casefold(), list(folded), n=n, cutoff=cutoff)]


def _counts_line(by_provider: dict[str, set[int]]) -> str:
    return "; ".join(f"{p}: {', '.join(str(c) for c in sorted(cs))}" for p, cs in sorted(by_provider.items()))


def check_names(spec: Any, catalog: Any, where: Callable[[tuple], int | None], path: str) -> None:
    """Raise SpecError for the first name in ``spec.resources`` the catalog or GPU table refutes.

    ``where(loc)`` gives the 1-based line of a field path such as ("resources", "regions", 0).
    ``catalog`` is a ``launcher.catalog.Catalog`` (None skips the catalog checks)."""
    res = spec.resources
    if res.accelerators is not None:
        _check_gpu(res, catalog, where, path)
    if catalog is None:
        return
    regions = catalog.regions()
    for i, region in enumerate(res.regions):
        if region.casefold() not in {r.casefold() for r in regions}:
            close = _did_you_mean(region, regions)
            hint = f"did you mean {' or '.join(close)}?" if close else "see `gpujob catalog show` for the regions"
            raise SpecError(path, where(("resources", "regions", i)), f"resources.regions[{i}]",
                            f"no provider has a GPU region '{region}'", hint)
    if res.instance_type:
        types = sorted({o.instance_type for o in catalog.offers})
        if res.instance_type not in types:
            close = _did_you_mean(res.instance_type, types, cutoff=0.85)
            if close:
                raise SpecError(path, where(("resources", "instance_type")), "resources.instance_type",
                                f"no provider sells an instance type '{res.instance_type}'",
                                f"did you mean {' or '.join(close)}?")
    if res.instance_type and res.accelerators is not None:
        _check_type_carries_gpu(res, catalog, where, path)
    if res.accelerators is not None and res.regions:
        acc = res.accelerators
        offered = catalog.query(gpu=acc.name, count=acc.count)
        if offered and not catalog.query(gpu=acc.name, count=acc.count, regions=res.regions):
            where_sold = sorted({o.region for o in offered})
            shown = ", ".join(where_sold[:8]) + (f" and {len(where_sold) - 8} more" if len(where_sold) > 8 else "")
            raise SpecError(path, where(("resources", "regions")), "resources.regions",
                            f"no provider offers {acc} in {', '.join(res.regions)}",
                            f"it is offered in {shown}; add one of them or drop resources.regions")


def _check_type_carries_gpu(res: Any, catalog: Any, where: Callable[[tuple], int | None], path: str) -> None:
    """An instance type the catalog knows must carry the spec's accelerators (a GCP host type such
    as n1-standard-8 carries any of several): the estimate and the launch follow instance_type, so
    `instance_type: p3.2xlarge` with `accelerators: A100:1` priced and would rent a V100."""
    from launcher.catalog.model import normalize_gpu

    acc = res.accelerators
    carries = {(o.gpu, o.gpu_count) for o in catalog.offers if o.instance_type == res.instance_type}
    want = normalize_gpu(acc.name).casefold()
    if carries and not any(g.casefold() == want and n == acc.count for g, n in carries):
        shown = " or ".join(f"{g}:{n}" for g, n in sorted(carries))
        raise SpecError(path, where(("resources", "instance_type")), "resources.instance_type",
                        f"{res.instance_type} carries {shown}, not the {acc} of resources.accelerators",
                        "make them agree, or keep one: instance_type picks the machine, accelerators any "
                        "machine with that GPU")


def _check_gpu(res: Any, catalog: Any, where: Callable[[tuple], int | None], path: str) -> None:
    from launcher.catalog.model import normalize_gpu

    acc = res.accelerators
    known = _known_gpus(catalog)
    line = where(("resources", "accelerators"))
    canonical = known.get(normalize_gpu(acc.name).casefold())
    if canonical is None:
        for pattern in _GLUED:
            m = pattern.match(acc.name)
            name = known.get(normalize_gpu(m.group("name")).casefold()) if m else None
            if name:
                raise SpecError(path, line, "resources.accelerators", f"'{acc.name}' is not a GPU name",
                                f"write the name and the count with a colon: accelerators: {name}:{int(m.group('count'))}")
        close = _did_you_mean(acc.name, sorted(known.values()))
        hint = f"did you mean {' or '.join(close)}?" if close else f"known GPUs: {', '.join(sorted(known.values()))}"
        raise SpecError(path, line, "resources.accelerators", f"unknown GPU '{acc.name}'", hint)
    if catalog is None:
        return
    sold: dict[str, set[int]] = defaultdict(set)
    for o in catalog.query(gpu=canonical):
        sold[o.provider].add(o.gpu_count)
    if sold and not any(acc.count in counts for counts in sold.values()):
        raise SpecError(path, line, "resources.accelerators", f"no provider sells {canonical} x{acc.count}",
                        f"counts sold: {_counts_line(sold)}; write e.g. {canonical}:{min(min(c) for c in sold.values())}")
