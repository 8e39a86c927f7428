"""The EC2 provider's SDK plumbing: one boto3 session, cached clients, and calls whose SDK
errors come back as ``launcher.errors`` (with ``.code``). boto3 is imported on first use only."""

from __future__ import annotations

import time
from typing import Any, Callable

from launcher.errors import GpujobError, ProviderError, ProviderUnavailable
from launcher.providers.aws.common import PROVIDER, translate


class AwsApi:
    poll_interval_s = 3.0  # describe cadence while waiting for running / terminated
    teardown_wait_s = 600.0  # bound on waiting for instances to terminate
    sg_delete_attempts = 6  # DependencyViolation until the ENIs are gone

    def __init__(self, session=None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self._session = session
        self.sleep, self.clock = sleep, clock
        self._clients: dict[tuple[str, str, bool], Any] = {}

    def _boto_session(self):
        if self._session is None:
            from launcher.providers.cloudenv import quiet_aws_metadata

            quiet_aws_metadata()
            try:
                import boto3
            except ImportError:
                raise ProviderUnavailable(PROVIDER, "boto3 is not installed", "pip install 'gpujob[aws]'") from None
            try:
                self._session = boto3.session.Session()
            except Exception as exc:  # e.g. ProfileNotFound for a wrong AWS_PROFILE
                raise translate(exc, "loading the AWS configuration") from None
        return self._session

    def client(self, service: str, region: str, fail_fast: bool = False):
        """A cached client. fail_fast: one attempt (create calls must not be replayed blindly);
        otherwise botocore's standard retry mode handles throttling."""
        key = (service, region, fail_fast)
        if key not in self._clients:
            from botocore.config import Config

            retries = {"mode": "standard", "total_max_attempts": 1} if fail_fast else {"mode": "standard"}
            config = Config(retries=retries, connect_timeout=10, read_timeout=60)
            try:
                self._clients[key] = self._boto_session().client(service, region_name=region, config=config)
            except GpujobError:
                raise
            except Exception as exc:
                raise translate(exc, f"creating the {service} client", region) from None
        return self._clients[key]

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

