"""typer's option coercion without pydantic for the values gpujob's commands take every time.

typer (0.29) converts every parameter's value through a pydantic TypeAdapter built when the
command runs, even a default of None: `gpujob gpus` and `gpujob cost`, which need no pydantic of
their own, imported it for that (typer._adapters: about 110 ms of CPU, `python -X importtime -m
launcher gpus`). ``install()`` puts a lazy coercer in front of typer's: it returns, for the plain
values below, exactly what typer's adapter returns, and hands every other value (an out-of-range
number, an unusual spelling, a string for a flag, an unreadable file) to typer's own coercion,
built then, so messages and results stay typer's. Plain values:

* None: () for a multi-value parameter, else None (typer's RuntimeParam.coerce does the same
  before it consults the adapter);
* str: a str; int: an int or a decimal integer string; float: a float or a plain decimal string,
  within the option's min/max (not clamped);
* pathlib.Path with typer's default path checks: a non-empty str, as ``Path(value)``, when the
  path does not exist or is readable;
* a list of any of these (list[str], list[Path]), as a new list.

tests/test_typerfast.py compares the two on each kind of value, valid and not.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?")
_NO = object()  # "not a plain value: ask typer"


class LazyRuntimeParam:
    """typer's RuntimeParam contract (``coerce``) with typer's own built only when needed."""

    def __init__(self, descriptor, build) -> None:
        self.descriptor = descriptor
        self._build = build
        self._real = None

    def real(self):
        if self._real is None:
            self._real = self._build(self.descriptor)
        return self._real

    def coerce(self, value, param, ctx):
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        if multi and isinstance(value, (list, tuple)):
            items = [self._leaf(_item_type(self.descriptor.annotation), v) for v in value]
            if _item_type(self.descriptor.annotation) is not None and not any(x is _NO for x in items):
                return items
        elif not multi:
            out = self._leaf(self.descriptor.annotation, value)
            if out is not _NO:
                return out
        return self.real().coerce(value, param=param, ctx=ctx)

    def _leaf(self, annotation, value):
        info = self.descriptor.parameter_info
        if info.parser is not None or self.descriptor.file_annotation is not None or self.descriptor.is_choice:
            return _NO
        if annotation is str:
            return value if type(value) is str else _NO
        if annotation is int or annotation is float:
            if type(value) is str:
                if not (_INT if annotation is int else _FLOAT).fullmatch(value):
                    return _NO
                value = annotation(value)
            elif type(value) is not annotation:
                return _NO
            if info.clamp or (info.min is not None and not value >= info.min) or \
                    (info.max is not None and not value <= info.max):
                return _NO
            return value
        if annotation is Path and _default_path_checks(info):
            if type(value) is not str or not value:
                return _NO
            path = Path(value)
            try:
                os.stat(path)
            except OSError:
                return path  # typer: a path that need not exist, returned as it is
            return path if os.access(path, os.R_OK) else _NO
        return _NO


def _item_type(annotation):
    """str or Path for list[str] / list[Path]; None for anything else."""
    from typing import get_args, get_origin

    if get_origin(annotation) is list and get_args(annotation) in ((str,), (Path,)):
        return get_args(annotation)[0]
    return None


def _default_path_checks(info) -> bool:
    return (not info.exists and info.file_okay and info.dir_okay and not info.writable and info.readable
            and not info.resolve_path and not info.allow_dash and info.path_type is None)


def install() -> bool:
    """Route typer's per-parameter coercion through LazyRuntimeParam; False (nothing changed)
    when this typer does not build its coercion where 0.29 does."""
    try:
        import typer.core as core
    except ImportError:
        return False
    build = getattr(core, "build_runtime_param", None)
    if build is None or getattr(build, "_gpujob_lazy", False):
        return build is not None
    if not hasattr(getattr(core, "_TyperParameter", None), "get_runtime_param"):
        return False

    def lazy(descriptor):
        return LazyRuntimeParam(descriptor, build)

    lazy._gpujob_lazy = True
    core.build_runtime_param = lazy
    return True
