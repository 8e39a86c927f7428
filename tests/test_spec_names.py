"""Every name in a spec that the catalog or the GPU table can check is checked at load time,
with the line, the field and a did-you-mean; duplicate keys at any depth name both lines."""

from __future__ import annotations

import pytest

from launcher.errors import SpecError
from launcher.spec import parse_spec


def _err(text: str) -> SpecError:
    with pytest.raises(SpecError) as err:
        parse_spec(text, "job.yaml")
    assert "\n" not in str(err.value)
    return err.value


DUPLICATES = [
    # (yaml, line of the repeat, field, first line)
    ("name: a\nresources:\n  accelerators: A100:1\n  spot: true\nlimits:\n  budget_usd: 5\n  max_duration: 2h\n"
     "resources:\n  accelerators: A100:8\nlimits:\n  max_duration: 4h\n", 8, "resources", 2),
    ("name: a\nname: b\n", 2, "name", 1),
    ("name: a\nresources:\n  spot: true\n  spot: false\n", 4, "resources.spot", 3),
    ("name: a\nworkload:\n  model: vgg16\n  batch_size: 4\n  model: mlp\n", 5, "workload.model", 3),
    ("name: a\nenv:\n  TOKEN: x\n  TOKEN: y\n", 4, "env.TOKEN", 3),
    ("name: a\nresources:\n  accelerators: {name: T4, count: 1, count: 2}\n", 3, "resources.accelerators.count", 3),
]


@pytest.mark.parametrize("text,line,field,first", DUPLICATES)
def test_duplicate_keys_at_any_depth_name_both_lines(text, line, field, first):
    err = _err(text)
    assert err.line == line and err.loc == field
    assert f"first at line {first}" in str(err) and f"again at line {line}" in str(err)


@pytest.mark.parametrize("written,fix", [
    ("A100x1", "A100:1"), ("A100X2", "A100:2"), ("A100 x 4", "A100:4"), ("8xH100", "H100:8"),
    ("H100*8", "H100:8"), ("T4 2", "T4:2"), ("V100=4", "V100:4"), ("a10g/1", "A10G:1"),
])
def test_malformed_shorthand_says_how_to_write_it(written, fix):
    err = _err(f"name: a\nresources:\n  accelerators: '{written}'\n")
    assert err.line == 3 and err.loc == "resources.accelerators"
    assert f"accelerators: {fix}" in str(err)


@pytest.mark.parametrize("gpu,suggest", [("A1000", "A100"), ("H10O", "H100"), ("L40", "L40S"), ("V1OO", "V100"),
                                          ("T4G", None)])
def test_unknown_gpu_names_did_you_mean(gpu, suggest):
    if suggest is None:  # a known name in another case is fine
        assert parse_spec(f"name: a\nresources:\n  accelerators: '{gpu}:1'\n").resources.accelerators
        return
    err = _err(f"name: a\nresources:\n  accelerators: '{gpu}:1'\n")
    assert f"unknown GPU '{gpu}'" in str(err) and suggest in str(err) and err.line == 3


def test_gpu_with_no_similar_name_lists_the_known_ones():
    err = _err("name: a\nresources:\n  accelerators: 'QUANTUM9000:1'\n")
    assert "known GPUs:" in str(err) and "H100" in str(err)


@pytest.mark.parametrize("acc,counts", [
    ("A100:3", "aws: 8; azure: 8; gcp: 1, 2, 4, 8, 16; lambda: 1, 2, 4, 8; vast: 1, 2"),
    ("H200:3", "aws: 8; azure: 8; gcp: 8; vast: 1, 2, 4, 8"),
    ("T4:16", "aws: 1, 4, 8; azure: 1, 4; gcp: 1, 2, 4")])  # estimate-only clouds count: an estimate is a use
def test_a_count_no_provider_sells_names_the_counts_that_exist(acc, counts):
    err = _err(f"name: a\nresources:\n  accelerators: '{acc}'\n")
    assert "no provider sells" in str(err) and counts in str(err)


def test_bring_your_own_gpu_is_known_from_the_gpu_table_and_any_count_passes():
    spec = parse_spec("name: a\nresources:\n  accelerators: 'H100-PCIE:3'\n")
    assert spec.resources.accelerators.count == 3


@pytest.mark.parametrize("region,suggest", [("us-east-l", "us-east-1"), ("europe-west99", "europe-west9"),
                                            ("uscentral1", "us-central1"), ("eu-west-l", "eu-west-1")])
def test_unknown_regions_did_you_mean(region, suggest):
    err = _err(f"name: a\nresources:\n  regions: [us-east-1, {region}]\n")
    assert err.loc == "resources.regions[1]" and err.line == 3
    assert f"'{region}'" in str(err) and suggest in str(err)


def test_regions_are_case_insensitive():
    assert parse_spec("name: a\nresources:\n  regions: [US-EAST-1]\n").resources.regions == ["US-EAST-1"]


def test_gpu_not_offered_in_any_spec_region_names_where_it_is():
    err = _err("name: a\nresources:\n  accelerators: 'P100:1'\n  regions: [us-east-1, us-west-2]\n")
    assert err.loc == "resources.regions" and "P100:1" in str(err) and "us-central1" in str(err)


@pytest.mark.parametrize("itype,suggest", [("g5.xlarg", "g5.xlarge"), ("p4d.24xlarg", "p4d.24xlarge"),
                                           ("a2-highgpu-1", "a2-highgpu-1g")])
def test_instance_type_typos_did_you_mean(itype, suggest):
    err = _err(f"name: a\nresources:\n  instance_type: {itype}\n")
    assert err.loc == "resources.instance_type" and suggest in str(err) and err.line == 3


def test_an_instance_type_that_does_not_carry_the_accelerators_is_refused():
    """`instance_type: p3.2xlarge` with `accelerators: A100:1` validated, and the estimate priced
    (and the launch would rent) the V100 the instance type carries."""
    err = _err("name: a\nresources:\n  instance_type: p3.2xlarge\n  accelerators: A100:1\n")
    assert err.loc == "resources.instance_type" and err.line == 3
    assert "p3.2xlarge carries V100:1, not the A100:1 of resources.accelerators" in str(err)
    assert "T4:1" in str(_err("name: a\nresources:\n  instance_type: n1-standard-8\n  accelerators: A100:1\n"))
    for ok in ("p3.2xlarge\n  accelerators: v100:1", "n1-standard-8\n  accelerators: T4:1",
               "t3.micro\n  accelerators: A100:1"):  # agreeing, a host type's GPU, a type the catalog lacks
        parse_spec(f"name: a\nresources:\n  instance_type: {ok}\n")


def test_instance_type_the_gpu_catalog_cannot_know_passes():
    assert parse_spec("name: a\nresources:\n  instance_type: t3.micro\n").resources.instance_type == "t3.micro"


def test_the_examples_validate():
    from pathlib import Path

    from launcher.spec import load_spec

    for path in sorted((Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml")):
        assert load_spec(path).name


def test_cli_validate_and_estimate_refuse_an_unsold_count(tmp_path):
    from typer.testing import CliRunner

    from launcher.cli import app

    spec = tmp_path / "job.yaml"
    spec.write_text("name: a\nresources:\n  accelerators: 'A100:3'\n")
    for args in (["validate", str(spec)], ["estimate", str(spec), "--no-baseline"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and "no provider sells A100 x3" in res.output
