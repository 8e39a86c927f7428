"""Job spec parsing: every example parses; every error names file, line, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.errors import SpecError
from launcher.spec import JobSpec, load_spec, parse_duration, parse_spec

JOBS = sorted((Path(__file__).resolve().parent.parent / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_every_example_job_parses(path):
    spec = load_spec(path)
    assert isinstance(spec, JobSpec)
    assert spec.workload.total_samples > 0


def test_examples_exist():
    names = {p.name for p in JOBS}
    assert {"vgg16.yaml", "quickstart.yaml"} <= names


def test_vgg16_example_is_what_it_says():
    spec = load_spec(JOBS[0].parent / "vgg16.yaml")
    assert spec.workload.model == "vgg16" and spec.workload.image_size == 224
    assert spec.workload.samples_per_epoch == 1281167
    assert spec.resources.accelerators.count == 1


@pytest.mark.parametrize("text", ["V100:1", "A100-80GB:8", "t4"])
def test_accelerator_shorthand(text):
    spec = parse_spec(f"name: a\nresources:\n  accelerators: {text}\n")
    name, _, count = text.partition(":")
    assert spec.resources.accelerators.name == name.upper()
    assert spec.resources.accelerators.count == int(count or 1)


def test_accelerator_mapping():
    spec = parse_spec("name: a\nresources:\n  accelerators: {name: v100, count: 2}\n")
    assert str(spec.resources.accelerators) == "V100:2"


@pytest.mark.parametrize("value,seconds", [("90m", 5400), ("2h", 7200), ("45s", 45), (3600, 3600), ("1.5h", 5400),
                                           ("1d", 86400)])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


def _err(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "job.yaml")
    return info.value


def test_unknown_key_did_you_mean_with_line():
    err = _err("name: a\nworkload:\n  model: vgg16\n  batchsize: 64\n")
    assert err.line == 4 and err.loc == "workload.batchsize"
    assert "did you mean 'batch_size'" in str(err) and str(err).startswith("job.yaml:4:")


def test_unknown_top_level_key():
    err = _err("name: a\nresource:\n  spot: true\n")
    assert err.line == 2 and "did you mean 'resources'" in str(err)


def test_bad_enum_suggests():
    err = _err("name: a\nworkload:\n  precision: bf61\n")
    assert err.line == 3 and "bf16" in str(err)


def test_a_bad_env_name_points_at_its_own_line_and_says_what_is_allowed():
    """`env: {my-var: x}` was reported at line 1 (the spec's first line) with no fix."""
    err = _err("name: a\nenv:\n  OK: '1'\n  my-var: x\n")
    assert err.line == 4 and err.loc == "env.my-var" and "'my-var' is not a valid environment variable name" in str(err)
    assert "letters, digits and _" in str(err)


def test_an_artifacts_entry_that_would_not_come_home_is_refused():
    """`artifacts: [model/, outputs/]` validated and ran, and model/ was left on the machine (torn
    down with it): only outputs/ and the log are fetched."""
    err = _err("name: a\npayload: {entrypoint: job.py}\nartifacts: [model/, outputs/]\n")
    assert err.line == 3 and err.loc == "artifacts" and "'model/' would not come home" in str(err)
    assert "outputs/model/" in str(err)
    for ok in ("[outputs/]", "[outputs]", "[./outputs/]", "[]"):
        parse_spec(f"name: a\nartifacts: {ok}\n")


def test_a_name_in_the_wrong_case_suggests_itself():
    """`precision: BF16` said "did you mean 'fp16'?" and `model: TinyCNN` suggested nothing."""
    assert "did you mean 'bf16'?" in str(_err("name: a\nworkload:\n  precision: BF16\n"))
    assert "did you mean 'tinycnn'?" in str(_err("name: a\nworkload:\n  model: TinyCNN\n"))
    assert "did you mean 'on-demand'?" in str(_err("name: a\nresources:\n  spot: true\n  spot_fallback: On-Demand\n"))


def test_bad_model_lists_or_suggests():
    err = _err("name: a\nworkload:\n  model: resnet5\n")
    assert "resnet50" in str(err) or "resnet18" in str(err)


def test_bad_duration():
    err = _err("name: a\nlimits:\n  max_duration: soon\n")
    assert err.line == 3 and "90m" in str(err)


def test_bad_type_names_line():
    err = _err("name: a\nworkload:\n  batch_size: lots\n")
    assert err.line == 3 and err.loc == "workload.batch_size"


def test_missing_name():
    err = _err("workload:\n  model: vgg16\n")
    assert "name" in err.loc and "required" in str(err)


def test_invalid_yaml_has_line():
    err = _err("name: a\nworkload: [\n  model: x\n")
    assert err.line is not None and "invalid YAML" in str(err)


def test_not_a_mapping_and_empty():
    assert "mapping" in str(_err("- a\n- b\n"))
    assert "empty" in str(_err(""))


def test_bad_accelerator_count():
    err = _err("name: a\nresources:\n  accelerators: V100:two\n")
    assert err.loc == "resources.accelerators" and err.line == 3


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_env_key_validated():
    assert "env" in str(_err("name: a\nenv:\n  1BAD: x\n"))


# --- fuzzing: whatever the bytes, the result is a JobSpec or a one-line SpecError ------------

_keys = st.sampled_from(["name", "workload", "resources", "limits", "model", "batch_size", "accelerators",
                         "max_duration", "budget_usd", "spot", "regions", "epochs", "precision", "x", "env"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


def _check(text: str) -> None:
    try:
        spec = parse_spec(text, "fuzz.yaml")
    except SpecError as err:
        msg = str(err)
        assert msg.startswith("fuzz.yaml") and "\n" not in msg.strip() and "Traceback" not in msg
    else:
        assert isinstance(spec, JobSpec)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=5))
def test_fuzz_structured(data):
    _check(yaml.safe_dump(data))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("name: workload\n -[]{}:,'\"&*!|>%@`#?0123456789.\t")), max_size=80))
def test_fuzz_raw_text(text):
    _check(text)


@pytest.mark.parametrize("field, value, fragment", [
    ("max_restarts", "true", "whole number"),  # YAML's true became 1 restart
    ("checkpoint_every", "-5m", "not a duration: it must be positive"),
    ("idle_timeout", "-1m", "not a duration: it must be positive"),
])
def test_spot_and_guard_limits_refuse_booleans_and_negative_durations(field, value, fragment):
    err = _err(f"name: a\nlimits:\n  {field}: {value}\n")
    assert err.line == 3 and err.loc == f"limits.{field}" and fragment in str(err), str(err)


def test_an_epoch_of_a_real_dataset_is_one_pass_over_it(tmp_path, monkeypatch):
    # 'dataset: digits' with no samples_per_epoch trained (and priced) 1,281,167 samples an epoch,
    # ImageNet's, over 1,438 training digits: 2 epochs were 2,562,334 samples, 1.8 h on this CPU.
    import numpy as np

    monkeypatch.chdir(tmp_path)

    def epoch(dataset: str, **w) -> int:
        return parse_spec(yaml.safe_dump({"name": "a", "workload": {"model": "tinycnn", "dataset": dataset,
                                                                     **w}})).workload.samples_per_epoch

    assert epoch("digits") == 1438 and epoch("digits", samples_per_epoch=1797) == 1797
    for rel in ("imgs/cat/a.png", "imgs/cat/sub/b.jpg", "imgs/dog/c.JPEG", "imgs/dog/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert epoch("imgs") == 3
    for rel in ("split/train/cat/a.png", "split/train/dog/b.png", "split/val/cat/c.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert epoch("split") == 2  # the training images, not val/
    np.savez(tmp_path / "d.npz", x=np.zeros((37, 8, 8), np.uint8), y=np.zeros(37, np.int64))
    assert epoch("d.npz") == 37
    assert epoch("synthetic") == 1281167 and epoch("missing-here") == 1281167  # the machine's path: as given


def test_a_dataset_the_machine_would_not_get_is_refused_before_anything_runs(tmp_path, monkeypatch):
    """`dataset: digit` validated, was priced at ImageNet's 1,281,167 samples and failed on the
    machine ("digit: no such file or directory"); a data folder in .gitignore or a `../data` path
    was sized from this machine and never reached the run's. Now one line, exit 2, at load."""
    import numpy as np

    from launcher.spec import load_job, project_dataset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "d.npz", x=np.zeros((37, 8, 8), np.uint8), y=np.zeros(37, np.int64))

    def load(dataset: str, extra: str = "") -> JobSpec:
        (tmp_path / "job.yaml").write_text(f"name: t\nworkload:\n  model: tinycnn\n  dataset: {dataset}\n{extra}")
        return load_job(tmp_path / "job.yaml")

    assert load("data/d.npz").workload.samples_per_epoch == 37 and project_dataset("data/d.npz") == "data/d.npz"
    (tmp_path / ".gitignore").write_text("data/\n")
    with pytest.raises(SpecError, match=r"job.yaml:4: workload.dataset: data/d.npz is not uploaded.*'!data/d.npz'"):
        load("data/d.npz")
    (tmp_path / ".gpujobignore").write_text("!data/\n")
    load("data/d.npz")
    with pytest.raises(SpecError, match=r"'digit' is neither a built-in dataset nor a path in .*did you mean 'digits'"):
        load("digit")
    (tmp_path / "inner").mkdir()
    monkeypatch.chdir(tmp_path / "inner")
    with pytest.raises(SpecError, match=r"\.\./data/d.npz is outside the project directory"):
        load("../data/d.npz")
    # the machine's own paths pass: made by setup, absolute, or missing here
    assert load("digit", "setup: make-digit\n").workload.dataset == "digit"
    assert project_dataset("../data/d.npz") is None and project_dataset("digits") is None
    for dataset in ("/data/imagenet", "~/data", "data/train.npz", "synthetic", "digits"):
        load(dataset)
