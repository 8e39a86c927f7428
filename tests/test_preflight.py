"""Pre-flight: the spec, then provider credentials, quota and the caller's address, all before
the CPU probe, the run record and anything billable. A failure is one line with the fix (exit 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from launcher.errors import CredentialsError, ProviderError, QuotaError  # noqa: E402
from launcher.providers.aws.launch import AwsProvider  # noqa: E402
from launcher.runner import RunOptions, Runner  # noqa: E402
from launcher.store import Store  # noqa: E402
from tests.aws_fixtures import ACCOUNT, aws, aws_env, fast_session, iam_enforced, make_ctx, make_spec  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]


def _no_probe(*args, **kwargs):
    pytest.fail("the CPU probe / estimate ran before the pre-flight failed")


def _no_address():
    pytest.fail("the caller's address was looked up before the credentials were checked")


def _runner(provider, monkeypatch, tmp_path) -> Runner:
    monkeypatch.setenv("GPUJOB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("launcher.runner.job_estimate", _no_probe)
    return Runner(store=Store(), provider_factory=lambda name, **cfg: provider)


def _drop_credentials(monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)


def test_aws_without_credentials_fails_before_probe_address_and_record(aws_env, monkeypatch, tmp_path):
    _drop_credentials(monkeypatch)
    provider = AwsProvider(regions=["us-east-1"], session=fast_session(), detect_ip=_no_address)
    runner = _runner(provider, monkeypatch, tmp_path)
    spec = make_spec(instance_type="g5.xlarge")
    with pytest.raises(CredentialsError) as err:
        runner.run(spec, RunOptions(provider="aws"))
    text = str(err.value)
    assert "no AWS credentials" in text and "aws configure" in text and "\n" not in text
    assert err.value.exit_code == 3
    assert runner.store.list_runs(10) == []  # no record, so nothing can claim leftovers


def test_aws_credentials_are_checked_with_sts(aws):
    ctx = make_ctx()
    checked = AwsProvider(regions=["us-east-1"], session=fast_session()).preflight(ctx.spec, ctx)
    assert checked["account"] == ACCOUNT and checked["ssh_cidr"] == "203.0.113.7/32"
    assert ctx.intents == []


def test_aws_credentials_sts_rejects_fail_the_preflight(aws, monkeypatch, tmp_path):
    provider = AwsProvider(regions=["us-east-1"], session=fast_session(), detect_ip=_no_address)
    runner = _runner(provider, monkeypatch, tmp_path)
    spec = make_spec(instance_type="g5.xlarge")
    with iam_enforced(0):  # moto checks keys like IAM: "testing" is unknown
        with pytest.raises(CredentialsError) as err:
            runner.run(spec, RunOptions(provider="aws"))
    assert "InvalidClientTokenId" in str(err.value) and "aws configure" in str(err.value)
    assert runner.store.list_runs(10) == []


def test_aws_quota_below_one_instance_everywhere_fails_the_preflight(aws, monkeypatch, tmp_path):
    from moto.servicequotas.models import ServiceQuotasBackend

    def zero(self, service_code, quota_code):
        return {"ServiceCode": service_code, "QuotaCode": quota_code, "QuotaName": "x", "Value": 0.0}

    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota", zero)
    provider = AwsProvider(regions=["us-east-1", "us-west-2"], session=fast_session(), detect_ip=_no_address)
    runner = _runner(provider, monkeypatch, tmp_path)
    with pytest.raises(QuotaError, match="Running On-Demand G and VT instances"):
        runner.run(make_spec(instance_type="g5.xlarge", regions=["us-east-1", "us-west-2"]), RunOptions(provider="aws"))
    assert runner.store.list_runs(10) == []


def test_aws_address_detection_failure_names_the_service_before_the_probe(aws, monkeypatch, tmp_path):
    def offline():
        raise OSError("network is unreachable")

    provider = AwsProvider(regions=["us-east-1"], session=fast_session(), detect_ip=offline)
    runner = _runner(provider, monkeypatch, tmp_path)
    with pytest.raises(ProviderError) as err:
        runner.run(make_spec(instance_type="g5.xlarge"), RunOptions(provider="aws"))
    assert "checkip.amazonaws.com" in str(err.value) and "--ssh-cidr" in str(err.value)
    assert runner.store.list_runs(10) == []


def test_gcp_without_adc_fails_before_probe_and_record(monkeypatch, tmp_path):
    pytest.importorskip("google.cloud.compute_v1")
    from launcher.providers.gcp.launch import GcpProvider

    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT",
                "GPUJOB_GCP_API_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    provider = GcpProvider(regions=["us-central1"], detect_ip=_no_address)
    runner = _runner(provider, monkeypatch, tmp_path)
    spec = make_spec(accelerators="T4:1")
    with pytest.raises(CredentialsError) as err:
        runner.run(spec, RunOptions(provider="gcp"))
    assert "Application Default Credentials" in str(err.value) and "\n" not in str(err.value)
    # one clean line: was "... (Your default credentials were not found. ...) (run `gcloud ...` (or set ...))"
    assert str(err.value).count("(") == 1 and str(err.value).endswith(" or set GOOGLE_CLOUD_PROJECT)"), str(err.value)
    assert runner.store.list_runs(10) == []


def test_cli_run_aws_without_credentials_exits_3_with_one_line_and_no_record(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_"))}
    env.update(HOME=str(tmp_path), GPUJOB_HOME=str(tmp_path / "gpujob"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "launcher", "run", str(REPO / "jobs" / "vgg16.yaml"),
                           "--provider", "aws"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no AWS credentials" in lines[0] and "aws configure" in lines[0]
    assert lines[0].count("(") == 1, lines[0]  # the fix only: "(environment, ~/.aws, ...) (run ...)" before
    assert "teardown" not in proc.stdout + proc.stderr and "gc" not in lines[0]
    assert "measuring" not in proc.stdout + proc.stderr
    ls = subprocess.run([sys.executable, "-m", "launcher", "ls", "--json"], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    assert ls.returncode == 0 and ls.stdout.strip() == "[]"


@pytest.mark.parametrize("setup", ["key", "profile", "credentials-file", "config-file", "web-identity", "container"])
def test_any_credential_source_defers_to_boto3s_chain(setup, monkeypatch, tmp_path):
    from launcher.providers.aws.api import credential_source_possible

    for var in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "creds"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert not credential_source_possible()
    if setup == "key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    elif setup == "profile":
        monkeypatch.setenv("AWS_PROFILE", "work")
    elif setup == "credentials-file":
        (tmp_path / "creds").write_text("[default]\n")
    elif setup == "config-file":
        (tmp_path / "config").write_text("[profile sso]\nsso_session = x\n")
    elif setup == "web-identity":
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
    else:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x")
    assert credential_source_possible()


def test_no_credential_source_fails_without_importing_botocore(tmp_path):
    code = ("import sys\nfrom launcher.providers.aws.launch import AwsProvider\nfrom launcher.errors import CredentialsError\n"
            "try:\n    AwsProvider().caller_identity('us-east-1')\nexcept CredentialsError as e:\n    print('refused', e)\n"
            "assert 'botocore' not in sys.modules, 'botocore imported'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "refused aws: no AWS credentials found" in out.stdout, out.stderr
