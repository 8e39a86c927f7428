"""Every third-party module gpujob imports is declared for the feature that imports it.

Walks the imports of launcher/ and payloads/ (ast; nothing is imported) and checks them
against pyproject.toml: module-level imports of the core (what `gpujob --help`, `validate`,
`estimate` load) must be in [project.dependencies]; a module that belongs to an extra
(providers/aws* -> aws, providers/gcp* -> gcp, plot.py -> plot, the payload -> train) may also
use that extra's packages; imports inside functions, under `if TYPE_CHECKING:` or guarded by
`except ImportError` may use any declared extra (the feature names the extra when it is missing).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent

# import name -> the distribution that provides it (when the names differ, or it comes with another)
PROVIDED_BY = {"yaml": "pyyaml", "google": "google-cloud-compute", "google.cloud.storage": "google-cloud-storage", "sklearn": "scikit-learn", "PIL": "pillow",
               "dotenv": "python-dotenv",
               "botocore": "boto3",
               # pydantic pins its own pydantic-core exactly: importing it needs no declaration of its own
               "pydantic_core": "pydantic"}
# which extra a module belongs to, by path prefix (relative to the repository)
EXTRA_OWNERS = {"launcher/providers/aws": "aws", "launcher/providers/gcp": "gcp", "launcher/plot.py": "plot",
                "payloads/": "train"}
# the payload run as a script imports its siblings by bare name (payloads/train.py)
# gpujob_payload: the name payloads/train.py, run as a script, loads its siblings under
FIRST_PARTY = {"launcher", "payloads", "templates", "gpujob_payload"} | {p.stem for p in (REPO / "payloads").glob("*.py")}


def _dist(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_dist(r) for r in project["dependencies"]}
    extras = {name: {_dist(r) for r in reqs if not r.startswith("gpujob")}
              for name, reqs in project["optional-dependencies"].items() if name != "dev"}
    return core, extras


def _prefixes(module: str) -> list[str]:
    """'a.b.c' -> ['a.b.c', 'a.b', 'a']: the longest name PROVIDED_BY knows wins."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def owner(rel: str) -> str | None:
    return next((extra for prefix, extra in EXTRA_OWNERS.items() if rel.startswith(prefix)), None)


def _guarded(node: ast.AST) -> bool:
    if isinstance(node, ast.If):
        return "TYPE_CHECKING" in ast.unparse(node.test)
    if isinstance(node, ast.Try):
        return any(h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers)
    return False


def imports(path: Path):
    """(top-level module name, lazy) for every absolute import in the file."""
    out = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _guarded(child)
            if isinstance(child, ast.Import):
                out.extend((a.name, inner or lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module, inner or lazy))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return out


def sources():
    for folder in ("launcher", "payloads"):
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), path


def test_every_third_party_import_is_declared_for_its_feature():
    core, extras = declared()
    any_extra = set().union(*extras.values())
    problems = []
    for rel, path in sources():
        mine = extras.get(owner(rel) or "", set())
        for module, lazy in imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in FIRST_PARTY or top == "__future__":
                continue
            dist = next((PROVIDED_BY[m] for m in _prefixes(module) if m in PROVIDED_BY), top.lower())
            allowed = core | mine | (any_extra if lazy else set())
            if dist not in allowed:
                where = f"extra '{owner(rel)}'" if owner(rel) else "[project.dependencies]"
                problems.append(f"{rel}: imports {module} ({dist}) {'inside a function' if lazy else 'at module level'}"
                                f" but it is not declared in {where}")
    assert not problems, "\n".join(problems)


def test_core_modules_do_not_import_extra_modules_at_module_level():
    # `gpujob --help` on a plain install must not pull boto3 through a provider module.
    problems = []
    for rel, path in sources():
        if owner(rel):
            continue
        for module, lazy in imports(path):
            target = module.replace(".", "/")
            if not lazy and module.startswith("launcher.") and owner(target):
                problems.append(f"{rel}: imports {module} (extra '{owner(target)}') at module level")
    assert not problems, "\n".join(problems)


def test_walker_sees_lazy_and_guarded_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import boto3\n"
                 "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"
                 "def g():\n    import torch\nimport yaml\n")
    assert imports(f) == [("os", False), ("typing", False), ("boto3", True), ("numpy", True), ("torch", True),
                          ("yaml", False)]
    assert owner("launcher/providers/aws/ec2.py") == "aws" and owner("launcher/cli.py") is None


def test_extras_hold_what_their_features_need():
    core, extras = declared()
    assert {"typer", "rich", "pyyaml", "pydantic", "paramiko", "cryptography", "platformdirs"} <= core
    assert {"torch", "numpy", "scikit-learn", "pillow"} <= extras["train"]
    assert "boto3" in extras["aws"] and "google-cloud-compute" in extras["gcp"] and "matplotlib" in extras["plot"]
    assert "google-cloud-storage" in extras["gcp"]  # checkpoint_store gs://
    # click comes with no declared dependency (typer vendors its own): never import it
    assert not any(m.split(".")[0] == "click" for _, p in sources() for m, _ in imports(p))


def test_the_launcher_imports_the_payload_as_installed():
    """launcher/estimate/table.py did 'from payloads import lm_shapes': a top-level name only a
    checkout has. Installed, it raised ModuleNotFoundError inside the estimate, which took it for a
    GPU without hardware figures: gpujob estimate jobs/llama-8b-fsdp.yaml (pip install .) priced no
    GPU ('no hardware figures for A10, A100, ..., H100, H200, ...')."""
    wrong = [f"{rel}: {module}" for rel, path in sources() if rel.startswith("launcher/")
             for module, _ in imports(path) if module.split(".")[0] in ("payloads", "templates")]
    assert not wrong, "\n".join(wrong) + "\nimport them as launcher.payloads / launcher.templates"
