"""The EC2 provider's SDK plumbing: one boto3 session, cached clients, and calls whose SDK
errors come back as ``launcher.errors`` (with ``.code``). boto3 is imported on first use only."""

from __future__ import annotations

import time
from typing import Any, Callable

from launcher.errors import CredentialsError, GpujobError, ProviderError, ProviderUnavailable
from launcher.providers.aws.common import CREDENTIALS_FIX, PROVIDER, translate


# Where boto3's default chain can find credentials (botocore.credentials): environment keys,
# a profile, the shared credentials/config files (profiles, SSO, credential_process), web
# identity, the ECS container endpoint, the EC2 instance role. None of them present means none.
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def credential_source_possible() -> bool:
    """False only when no source boto3's chain reads exists at all: no variable above, no
    shared credentials or config file, not on EC2 (or its metadata service disabled). Lets a
    machine with no AWS setup fail in milliseconds, before botocore is even imported; anything
    else goes through boto3's own chain."""
    import os
    from pathlib import Path

    from launcher.providers.cloudenv import on_ec2

    if any(os.environ.get(v) for v in _CREDENTIAL_ENV):
        return True
    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
             os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config")
    if any(Path(f).expanduser().exists() for f in files):
        return True
    return on_ec2() and os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true"


class AwsApi:
    poll_interval_s = 3.0  # describe cadence while waiting for running / terminated
    teardown_wait_s = 600.0  # bound on waiting for instances to terminate
    sg_delete_attempts = 6  # DependencyViolation until the ENIs are gone

    def __init__(self, session=None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self._session = session
        self.sleep, self.clock = sleep, clock
        self._core = None  # botocore session, until boto3's is needed
        self._clients: dict[tuple[str, str, bool], Any] = {}

    def _core_session(self):
        """The botocore session: the credential chain, without boto3's heavier import (a
        pre-flight that finds no credentials stays fast)."""
        if self._session is not None:
            return self._session._session
        if self._core is None:
            from launcher.providers.cloudenv import quiet_aws_metadata

            quiet_aws_metadata()
            try:
                import botocore.session
            except ImportError:
                raise ProviderUnavailable(PROVIDER, "boto3 is not installed", "pip install 'gpujob[aws]'") from None
            self._core = botocore.session.Session()
        return self._core

    def _boto_session(self):
        if self._session is None:
            core = self._core_session()
            try:
                import boto3
            except ImportError:
                raise ProviderUnavailable(PROVIDER, "boto3 is not installed", "pip install 'gpujob[aws]'") from None
            try:
                self._session = boto3.session.Session(botocore_session=core)
            except Exception as exc:  # e.g. ProfileNotFound for a wrong AWS_PROFILE
                raise translate(exc, "loading the AWS configuration") from None
        return self._session

    def client(self, service: str, region: str, fail_fast: bool = False):
        """A cached client. fail_fast: one attempt (create calls must not be replayed blindly);
        otherwise botocore's standard retry mode handles throttling."""
        key = (service, region, fail_fast)
        if key not in self._clients:
            session = self._boto_session()  # first: it says when boto3 is not installed
            from botocore.config import Config

            retries = {"mode": "standard", "total_max_attempts": 1} if fail_fast else {"mode": "standard"}
            config = Config(retries=retries, connect_timeout=10, read_timeout=60)
            try:
                self._clients[key] = session.client(service, region_name=region, config=config)
            except GpujobError:
                raise
            except Exception as exc:
                raise translate(exc, f"creating the {service} client", region) from None
        return self._clients[key]

    def caller_identity(self, region: str, timeout_s: float = 10.0) -> dict[str, str]:
        """Who AWS says we are: {"account", "arn"} from STS GetCallerIdentity (one attempt,
        ``timeout_s`` seconds to connect and to read). Needs no permission, so it checks exactly
        the credentials. Raises CredentialsError when the chain finds none or AWS rejects them,
        ProviderError when STS cannot be reached."""
        if self._session is None and not credential_source_possible():
            raise CredentialsError(PROVIDER, "no AWS credentials found in the environment, ~/.aws, SSO or an instance role",
                                   hint=CREDENTIALS_FIX)
        try:
            found = self._core_session().get_credentials()
        except Exception as exc:  # e.g. a broken credential_process or SSO cache
            raise translate(exc, "loading AWS credentials") from None
        if found is None:
            raise CredentialsError(PROVIDER, "no AWS credentials found in the environment, ~/.aws, SSO or an instance role",
                                   hint=CREDENTIALS_FIX)
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "total_max_attempts": 1},
                        connect_timeout=timeout_s, read_timeout=timeout_s)
        try:
            ident = self._boto_session().client("sts", region_name=region, config=config).get_caller_identity()
        except Exception as exc:
            raise translate(exc, "checking the AWS credentials (STS GetCallerIdentity)", region) from None
        return {"account": ident.get("Account", ""), "arn": ident.get("Arn", "")}

    def api(self, region: str, service: str, op: str, fail_fast: bool = False, **kwargs) -> dict:
        """Call one operation; SDK errors come back as launcher.errors (with ``.code``)."""
        fn = getattr(self.client(service, region, fail_fast), op)
        try:
            return fn(**kwargs)
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "boto3")):
                raise translate(exc, op, region) from None
            raise

    def describe_instance(self, region: str, iid: str) -> dict | None:
        """The instance's description, or None when EC2 does not know it (yet, or any more)."""
        try:
            res = self.api(region, "ec2", "describe_instances", InstanceIds=[iid])["Reservations"]
        except ProviderError as exc:
            if exc.code == "InvalidInstanceID.NotFound":
                return None
            raise
        for r in res:
            for i in r.get("Instances", []):
                return i
        return None

