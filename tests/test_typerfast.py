"""launcher/typerfast.py returns what typer's own pydantic coercion returns, for every value.

Each case builds typer's coercion for one parameter annotation and gpujob's lazy one in front of
it, then coerces the same values through both: plain values (taken without pydantic) and the
rest (handed to typer) must give equal results of the same types, or the same error.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import typer._coercion as coercion
from typer.models import ArgumentInfo, OptionInfo

from launcher.typerfast import LazyRuntimeParam

REPO = Path(__file__).resolve().parent.parent
SPEC = str(REPO / "jobs" / "vgg16.yaml")
ONE, MANY, ARGS = (SimpleNamespace(multiple=False, nargs=1), SimpleNamespace(multiple=True, nargs=1),
                   SimpleNamespace(multiple=False, nargs=-1))
CASES = [
    (str, OptionInfo(), ONE, ["abc", "", " x ", "ünï", 5, 2.5, b"bytes"]),
    (int, OptionInfo(min=1), ONE, ["25", 25, "1", "0", "-3", "007", " 7", "+7", "1_000", "abc", "", 2.0, True,
                                   "99999999999999999999", 10**30]),
    (int, OptionInfo(), ONE, ["-0", "-12", "0", 0, "12345678901234567890123"]),
    (float, OptionInfo(min=1, max=600), ONE, ["15", "15.5", 15.0, 15, "0.5", "601", "600", "1e3", "nan", "inf",
                                              "1.", ".5", " 2", "abc", float("nan"), True]),
    (float, OptionInfo(min=0), ONE, ["-0.0", "0.1", "0.30000000000000004", "-1", "123456789.123456789"]),
    (float, OptionInfo(), ONE, ["-0.0", "1.7976931348623157", "-2.5", "0.000001"]),
    (Path, ArgumentInfo(), ONE, [SPEC, "jobs/vgg16.yaml", "", "missing/x.yaml", "/", "-", ".", "a//b/", Path(SPEC),
                                 3]),
    (list[str], OptionInfo(), MANY, [("aws", "gcp"), ["aws"], (), "aws", ("a", 3), ("",)]),
    (list[Path], ArgumentInfo(), ARGS, [(SPEC, "missing.yaml"), (), ("",), [SPEC], SPEC]),
    (bool, OptionInfo(), ONE, ["true", "no", "", "maybe", 1]),
]


def _outcome(fn):
    try:
        out = fn()
    except Exception as exc:  # typer's BadParameter, or whatever typer's own coercion raises
        return ("error", type(exc).__name__, str(exc))
    kinds = [type(x) for x in out] if isinstance(out, (list, tuple)) else None
    return ("ok", out, type(out), kinds)


@pytest.mark.parametrize("annotation,info,param,values", CASES, ids=[str(c[0]) for c in CASES])
def test_the_lazy_coercion_gives_typers_result(annotation, info, param, values):
    descriptor = coercion.resolve_type_descriptor(annotation, info)
    real = coercion.build_runtime_param(descriptor)
    lazy = LazyRuntimeParam(descriptor, coercion.build_runtime_param)
    for value in [None, *values]:
        expect = _outcome(lambda: real.coerce(value, param=param, ctx=None))
        got = _outcome(lambda: lazy.coerce(value, param=param, ctx=None))
        assert got == expect, (annotation, value)


def test_plain_values_never_build_typers_coercion():
    """The point of it: the values the quick commands pass every time need no pydantic adapter."""
    built = []

    def build(descriptor):
        built.append(descriptor)
        return coercion.build_runtime_param(descriptor)

    plain = [(str, OptionInfo(), ONE, "aws"), (int, OptionInfo(min=1), ONE, 25), (int, OptionInfo(), ONE, "30"),
             (float, OptionInfo(min=1, max=600), ONE, 15.0), (float, OptionInfo(), ONE, "2.5"),
             (Path, ArgumentInfo(), ONE, SPEC), (list[str], OptionInfo(), MANY, ["aws", "gcp"]),
             (list[Path], ArgumentInfo(), ARGS, (SPEC,)), (str, OptionInfo(), ONE, None)]
    for annotation, info, param, value in plain:
        LazyRuntimeParam(coercion.resolve_type_descriptor(annotation, info), build).coerce(value, param, None)
    assert built == []
