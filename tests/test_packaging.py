"""What the wheel ships equals what the checkout runs.

The packaged calibration equals bench/results; the payload and templates install under
`launcher` (no top-level `payloads`/`templates` in site-packages); and the estimate of an
installed wheel equals the checkout's, field by field. The wheel is built here with pip
(no network: --no-deps, --no-build-isolation) into a venv that borrows this environment's
dependencies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import launcher
from launcher.estimate.calibration import DATA_FILES, MANIFEST, provenance

REPO = Path(__file__).resolve().parent.parent
PACKAGED = REPO / "launcher" / "estimate" / "calibration"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_packaged_calibration_equals_bench_results():
    manifest = json.loads((PACKAGED / MANIFEST).read_text())
    fix = "run `python3 bench/package_calibration.py`"
    for name in DATA_FILES:
        raw, packaged = REPO / "bench" / "results" / name, PACKAGED / name
        assert raw.is_file() == packaged.is_file(), f"{name}: bench/results and the package disagree; {fix}"
        if raw.is_file():
            assert packaged.read_bytes() == raw.read_bytes(), f"{packaged} differs from {raw}: {fix}"
        assert manifest["files"].get(name, "missing") == (_sha(raw) if raw.is_file() else None), \
            f"{MANIFEST} is stale: {fix}"


def test_calibration_provenance_says_what_was_fitted():
    info = provenance()
    assert info["points"] > 10 and info["fitted_at"] == json.loads((PACKAGED / MANIFEST).read_text())["fitted_at"]
    assert all(name in info["source"] for name in DATA_FILES)


def test_checkout_binds_payloads_and_templates_under_launcher():
    import importlib.resources

    from launcher.payloads import protocol

    assert Path(protocol.__file__).resolve() == REPO / "payloads" / "protocol.py"
    assert (importlib.resources.files("launcher.templates") / "aws-user-data.sh").is_file()
    setup_py = (REPO / "setup.py").read_text()
    assert "launcher.CHECKOUT_FOLDERS" in setup_py and launcher.CHECKOUT_FOLDERS == ("payloads", "templates")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # From a clean copy: setuptools would pack stale files left in an in-tree build/ folder.
    out = tmp_path_factory.mktemp("wheel")
    src = shutil.copytree(REPO, out / "src", ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".dev-*", "gpujob-runs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    return next(out.glob("gpujob-*.whl"))


def test_wheel_holds_data_and_no_generic_top_level_names(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("gpujob-")}
    assert tops == {"launcher"}, tops
    for name in ("launcher/payloads/train.py", "launcher/payloads/protocol.py", "launcher/templates/aws-user-data.sh",
                 "launcher/templates/gcp-startup.sh", "launcher/catalog/data/offers.json.gz",
                 "launcher/estimate/model_costs.json", f"launcher/estimate/calibration/{MANIFEST}",
                 *(f"launcher/estimate/calibration/{n}" for n in DATA_FILES if (PACKAGED / n).is_file())):
        assert name in names, f"{name} is not in the wheel"


def test_installed_estimate_equals_the_checkouts(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # --ignore-installed: the borrowed site-packages may hold an editable gpujob
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["GPUJOB_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([str(py), "-c", "import launcher, launcher.payloads as p; print(launcher.__file__, p.__file__)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    where = proc.stdout.split()
    assert all(str(venv) in w for w in where), f"not the installed copy: {where}"
    # every example of a built-in model: jobs/llama-8b-fsdp.yaml took a path only a checkout had
    # (priced no GPU installed) while vgg16's estimate matched
    specs = sorted(str(p) for p in (REPO / "jobs").glob("*.yaml") if ":" not in yaml.safe_load(p.read_text())
                   .get("workload", {}).get("model", ""))
    assert len(specs) >= 4
    for spec in specs:
        env.pop("PYTHONPATH", None)
        installed = json.loads(subprocess.run([str(venv / "bin" / "gpujob"), "estimate", spec, "--no-baseline",
                                               "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                              check=True).stdout)
        env["PYTHONPATH"] = str(REPO)
        checkout = json.loads(subprocess.run([sys.executable, "-m", "launcher", "estimate", spec, "--no-baseline",
                                              "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                             check=True).stdout)
        assert installed["calibration"]["points"] > 10
        assert installed.keys() == checkout.keys()
        for key in checkout:
            assert installed[key] == checkout[key], (spec, key)
