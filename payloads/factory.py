"""A user's own model: ``"package.module:callable"`` or ``"path/to/file.py:callable"``.

The same loader serves the payload (what trains on the GPU), the launcher's CPU probe and the
estimator's operation counter, so all three see one model. Imports only the standard library
and torch; the launcher imports it too, the payload ships it as-is.

* ``"pkg.mod:build"``: imported like any module, from the project directory (which gpujob
  uploads and puts first on ``sys.path``) or an installed package.
* ``"models/unet.py:build"``: a file, relative to the project directory (the directory
  ``gpujob`` runs in, the one it uploads), loaded under a private module name.

``build_factory_model(ref, model_args, root)`` calls ``callable(**model_args)`` and checks it
returns a ``torch.nn.Module``. Every failure raises ``FactoryError`` whose message is one line:
``file:line: ExceptionType: message`` where the file and line are the innermost frame of the
user's own code (or of the module import), e.g.
``models/unet.py:12: NameError: name 'nn2' is not defined``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from typing import Any


class FactoryError(ValueError):
    """A model factory that cannot be found, imported or built (one-line message)."""


class FactoryModuleMissing(FactoryError):
    """The package of a ``"package.module:callable"`` reference is not importable here
    (``module``: its name); the machine a job runs on may still install it."""

    def __init__(self, message: str, module: str):
        super().__init__(message)
        self.module = module


def is_factory(model: str) -> bool:
    """True for ``"x:y"`` references, False for built-in model names."""
    return ":" in str(model)


def split_ref(ref: str) -> tuple[str, str]:
    """``"a/b.py:build"`` -> (``"a/b.py"``, ``"build"``); raises FactoryError when malformed."""
    target, _, attr = str(ref).rpartition(":")
    if not target or not attr or not attr.replace("_", "a").replace(".", "a").isalnum():
        raise FactoryError(f"model {ref!r}: write a factory as 'package.module:callable' or 'path/to/file.py:callable'")
    return target, attr


def _where(exc: BaseException, files: tuple[str, ...], called: Any = None) -> str:
    """``file:line`` of the innermost traceback frame inside ``files``; else, when the call of
    ``called`` itself failed (arguments that do not fit), its ``def`` line; else the innermost."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_rel(exc.filename)}:{exc.lineno}"
    wanted = [f for f in frames if os.path.abspath(f.filename) in files]
    code = getattr(called, "__code__", None)
    if not wanted and code is not None and frames and os.path.abspath(frames[-1].filename) == os.path.abspath(__file__):
        return f"{_rel(code.co_filename)}:{code.co_firstlineno}"
    frame = (wanted or frames or [None])[-1]
    return f"{_rel(frame.filename)}:{frame.lineno}" if frame is not None else "?"


def project_frame(exc: BaseException, root: str) -> str | None:
    """``file:line`` of the innermost traceback frame in the user's project directory ``root``
    (not in gpujob's own package, torch or another installed package); None when there is none."""
    root = os.path.abspath(root)
    ours = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename)
        if (path.startswith(root + os.sep) and os.path.dirname(path) not in ours
                and f"{os.sep}site-packages{os.sep}" not in path and f"{os.sep}launcher{os.sep}" not in path):
            return f"{_rel(path)}:{frame.lineno}"
    return None


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _one_line(exc: BaseException) -> str:
    msg = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    text = f"{type(exc).__name__}: {msg}".strip()
    return " ".join(text.split())[:400]


# source_digest follows at most this many files (a model is a few; a package can be hundreds).
MAX_SOURCE_FILES = 200


def _module_file(name: str, bases: list[str]) -> str | None:
    """The file of module ``name`` ("a.b") under one of ``bases``: a/b.py or a/b/__init__.py."""
    parts = name.split(".")
    for base in bases:
        stem = os.path.join(base, *parts)
        for path in (stem + ".py", os.path.join(stem, "__init__.py")):
            if os.path.isfile(path):
                return path
    return None


def _imported_names(tree, path: str) -> list[tuple[str, str]]:
    """(module name, directory to resolve it from first) for each import of a parsed file;
    ``from .x import y`` is resolved in the file's package directory."""
    import ast

    here = os.path.dirname(path)
    out: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, here) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(max(node.level - 1, 0)):
                base = os.path.dirname(base)
            mod = node.module or ""
            if node.level:  # relative: resolved from the package directory alone
                out += [(f"{mod}.{a.name}" if mod else a.name, "rel:" + base) for a in node.names]
                if mod:
                    out.append((mod, "rel:" + base))
            else:
                out += [(f"{mod}.{a.name}", here) for a in node.names] + [(mod, here)]
    return out


def source_digest(ref: str, root: str | None = None) -> str | None:
    """sha256 (16 hex) of a factory's source: its file (or module) and every file of the project
    (``root``, default the current directory) or of the factory's own package that it imports,
    followed through their imports, read without importing anything. What counts a model (its
    FLOPs, the CPU probe, a run's measurements) is keyed on it, so editing ``models/blocks.py``
    that ``models/net.py:build`` imports is a new model. None when the source cannot be found
    (a package not installed here)."""
    import ast
    import hashlib

    try:
        target, _ = split_ref(ref)
    except FactoryError:
        return None
    root = os.path.abspath(root or os.getcwd())
    bases, allowed, pending = [root], [root], []
    if target.endswith(".py") or "/" in target or os.sep in target:
        first = target if os.path.isabs(target) else os.path.join(root, target)
        first = first if os.path.isfile(first) else None
        allowed.append(os.path.dirname(first or root))  # an absolute path outside the project
    else:
        first = _module_file(target, bases)
        if first is None:  # an installed package: found without running its __init__
            try:
                spec = importlib.util.find_spec(target.split(".")[0])
            except (ImportError, ValueError):
                spec = None
            origin = getattr(spec, "origin", None)
            allowed = list(getattr(spec, "submodule_search_locations", None) or []) or (
                [os.path.dirname(origin)] if origin else [])
            bases = [os.path.dirname(a) for a in allowed]
            first = _module_file(target, bases)
        parts = target.split(".")  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        pending = [p for p in (_module_file(".".join(parts[:i]), bases) for i in range(1, len(parts))) if p]
    if first is None:
        return None
    # An installed package's release is its first file: its imports are followed only in a source
    # tree (the project, an editable install), not through site-packages (torch: 2.6 s for 200 files).
    if any(f"{os.sep}{d}-packages{os.sep}" in os.path.abspath(a) + os.sep for a in allowed for d in ("site", "dist")):
        allowed = []
    allowed = tuple(os.path.abspath(a) + os.sep for a in allowed)
    digest = hashlib.sha256()
    seen: set[str] = set()
    pending.insert(0, first)
    while pending and len(seen) < MAX_SOURCE_FILES:
        path = os.path.abspath(pending.pop(0))
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        digest.update(os.path.relpath(path, root).encode() + b"\0" + data + b"\0")
        if not allowed:
            continue
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError):  # the import reports it; its bytes are in the digest
            continue
        for name, where in _imported_names(tree, path):
            if where.startswith("rel:"):
                found = _module_file(name, [where[4:]]) if name else os.path.join(where[4:], "__init__.py")
            else:
                found = _module_file(name, [where] + bases)
            if found and os.path.abspath(found).startswith(allowed):
                pending.append(found)
    return digest.hexdigest()[:16]


def load_factory(ref: str, root: str | None = None) -> tuple[Any, str]:
    """The callable a reference names and the source file it came from.

    root: the project directory (default: the current directory); file paths are relative to it
    and it is put first on ``sys.path``, so the model's code imports the project's other modules
    (``from models.blocks import Block``); a file's own directory is searched last (``from blocks
    import Block`` beside it), after the standard library and the installed packages.
    """
    target, attr = split_ref(ref)
    root = os.path.abspath(root or os.getcwd())
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = target if os.path.isabs(target) else os.path.join(root, target)
        if not os.path.isfile(path):
            raise FactoryError(f"model {ref!r}: no file {target} in {root}; paths are relative to the project "
                               "directory, the one gpujob runs in and uploads")
        if root not in sys.path:
            sys.path.insert(0, root)
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in sys.path:  # last: a models/token.py beside it never hides the standard library's
            sys.path.append(folder)
        name = "gpujob_user_model_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise FactoryError(f"model {ref!r}: {target} cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise FactoryError(f"{_where(exc, (os.path.abspath(path),))}: importing model {ref!r}: "
                               f"{_one_line(exc)}") from None
        source = os.path.abspath(path)
    else:
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise FactoryModuleMissing(f"model {ref!r}: no module named {exc.name!r} in {root} or the "
                                           "installed packages", exc.name) from None
            raise FactoryError(f"{_where(exc, ())}: importing model {ref!r}: {_one_line(exc)}") from None
        except Exception as exc:
            raise FactoryError(f"{_where(exc, ())}: importing model {ref!r}: {_one_line(exc)}") from None
        source = os.path.abspath(getattr(module, "__file__", "") or target)
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise FactoryError(f"model {ref!r}: {_rel(source)} defines no {attr!r}")
    if not callable(fn):
        raise FactoryError(f"model {ref!r}: {attr} in {_rel(source)} is not callable")
    return fn, source


def _unknown_args(fn: Any, exc: BaseException) -> str:
    """For a model_args key the factory does not take ("unexpected keyword argument 'widht'"):
    '; it takes width, depth (did you mean 'width'?)'; else ''."""
    import difflib
    import inspect
    import re

    got = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
    if not isinstance(exc, TypeError) or not got:
        return ""
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        return ""
    close = difflib.get_close_matches(got.group(1), names, n=1, cutoff=0.6)
    return (f"; it takes {', '.join(names) if names else 'no keyword arguments'}"
            + (f" (did you mean '{close[0]}'?)" if close else ""))


def build_factory_model(ref: str, model_args: dict | None = None, root: str | None = None):
    """``callable(**model_args)`` -> torch.nn.Module (built on torch's current default device)."""
    import torch

    fn, source = load_factory(ref, root)
    try:
        module = fn(**(model_args or {}))
    except Exception as exc:
        moved = "CUDA" in str(exc) or "meta tensor" in str(exc)
        raise FactoryError(f"{_where(exc, (source,), fn)}: building model {ref!r} with model_args "
                           f"{model_args or {}}: {_one_line(exc)}" + (
                               "; the factory moves the model to a device with .cuda() or .to(): return it as "
                               "built, gpujob moves it to the GPU itself and counts it on PyTorch's meta device"
                               if moved else _unknown_args(fn, exc))) from None
    if not isinstance(module, torch.nn.Module):
        raise FactoryError(f"model {ref!r}: {fn.__name__ if hasattr(fn, '__name__') else ref} returned "
                           f"{type(module).__name__}, not a torch.nn.Module")
    return module


def output_logits(out: Any):
    """The tensor a model's output is trained on (cross-entropy against the labels).

    A tensor is itself. Models often return more: an auxiliary head (``(logits, aux)``), a
    dictionary (``{"logits": ..., "aux": ...}``) or a Hugging Face ``ModelOutput``. The logits
    are then the ``"logits"`` entry (key or attribute) when there is one, else the first tensor
    of the tuple, list or dictionary; the other entries are not trained (no gradient flows
    through them), exactly as the payload trains the model. Raises FactoryError (one line)
    for an output holding no tensor.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out
    named = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
    if isinstance(named, torch.Tensor):
        return named
    values = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (tuple, list)) else []
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise FactoryError(f"the model returned {type(out).__name__}, not logits: its forward must return a tensor "
                       "[batch, classes, ...], or a tuple/list whose first item or a dict whose 'logits' entry "
                       "is one")


def check_classes(logits_shape: tuple, num_classes: int) -> None:
    """Refuse logits that cannot be trained on labels of ``num_classes`` classes (FactoryError, one
    line): the class dimension (dim 1 of [batch, classes, ...]) must hold every label."""
    shown = "[" + ", ".join(["batch", *(str(d) for d in logits_shape[1:])]) + "]"
    if len(logits_shape) < 2:
        raise FactoryError(f"the model's output has shape {shown}: gpujob trains a classifier with "
                           "cross-entropy, so it must be [batch, classes, ...]")
    if logits_shape[1] < num_classes:
        raise FactoryError(f"the model's output has {logits_shape[1]} classes (dim 1 of {shown}) but "
                           f"workload.num_classes is {num_classes}: labels up to {num_classes - 1} are out of range; "
                           f"set num_classes: {logits_shape[1]} or build the model with {num_classes} outputs")


def check_trainable(module, ref: str) -> None:
    """Refuse a model with no parameter to train (FactoryError, one line): every one frozen
    (``requires_grad=False``) leaves the optimizer nothing to update."""
    if not any(p.requires_grad for p in module.parameters()):
        n = sum(p.numel() for p in module.parameters())
        raise FactoryError(f"model {ref!r} has no trainable parameter ({n:,} parameters, every one with "
                           "requires_grad=False): there is nothing to train; leave at least the head trainable")
