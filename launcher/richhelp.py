"""typer's help formatting without the two rich modules it imports and help never uses.

typer.rich_utils (imported by typer to print any help page or usage error) starts with
``from rich.markdown import Markdown`` and ``from rich.traceback import Traceback``: markdown-it,
pygments and attrs, about half of what `gpujob --help` costs (`python -X importtime -m launcher
--help`). gpujob's help is rich markup, never markdown (``rich_markup_mode`` is left at typer's
default), and its tracebacks are plain (``pretty_exceptions_enable=False``), so neither class is
used. ``install()`` makes that one import see stand-ins: classes that import the real module on
first use (a call, an attribute, an isinstance check), so the behaviour is the same if typer ever
does use them. The stand-ins are in sys.modules only while typer.rich_utils executes; any other
``import rich.markdown`` gets the real module.
"""

from __future__ import annotations

import sys

TARGET = "typer.rich_utils"
DEFERRED = (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback"))


def _real(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


class _StandIn(type):
    """Metaclass of a stand-in: class attributes and type checks go to the real class."""

    def __getattr__(cls, attr):
        if attr.startswith("__") and attr.endswith("__"):  # introspection must not import
            raise AttributeError(attr)
        return getattr(_real(cls._module, cls._name), attr)

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, _real(cls._module, cls._name))

    def __subclasscheck__(cls, sub) -> bool:
        return issubclass(sub, _real(cls._module, cls._name))


def stand_in(module: str, name: str) -> type:
    """A class that behaves as ``module.name`` and imports ``module`` only when used."""

    def __new__(cls, *args, **kwargs):  # an instance of the real class (its __init__ runs there)
        return _real(module, name)(*args, **kwargs)

    return _StandIn(name, (), {"__new__": __new__, "__module__": module, "_module": module, "_name": name})


class _Loader:
    """typer.rich_utils' own loader, run with the stand-ins in place."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, attr):
        return getattr(self.real, attr)

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module) -> None:
        import types

        added = []
        for mod, name in DEFERRED:
            if mod not in sys.modules:
                fake = types.ModuleType(mod)
                setattr(fake, name, stand_in(mod, name))
                sys.modules[mod] = fake
                added.append((mod, fake))
        try:
            self.real.exec_module(module)
        finally:
            for mod, fake in added:
                if sys.modules.get(mod) is fake:
                    del sys.modules[mod]


class _Finder:
    """A meta path finder for typer.rich_utils only; it removes itself once used."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        from importlib.machinery import PathFinder

        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Defer rich.markdown and rich.traceback in typer.rich_utils, when it is first imported."""
    if TARGET not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
