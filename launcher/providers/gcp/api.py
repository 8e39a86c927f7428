"""Talking to Compute Engine: endpoint, credentials, clients, operations, errors.

google.cloud is imported only inside functions, so importing the CLI costs nothing.
Two traps of google-cloud-compute are avoided here on purpose:
- ``ExtendedOperation.result()/done()`` poll through an operations client built without our
  client_options (so they dial compute.googleapis.com even with an endpoint override): we use
  the ``*_unary`` calls and wait with our own operations clients.
- an operation that ends with only ``error.errors`` (no httpErrorStatusCode) counts as success
  to ``.result()``: we read ``op.error.errors[*].code`` ourselves.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

from launcher.errors import CredentialsError, ProviderError, ProviderUnavailable, QuotaError, WaitTimeout

ENDPOINT_ENV = "GPUJOB_GCP_API_ENDPOINT"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
CALL_TIMEOUT_S = 60.0

CAPACITY_CODES = {
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "UNSUPPORTED_OPERATION",
}
QUOTA_CODES = {"QUOTA_EXCEEDED", "quotaExceeded"}
NOT_FOUND_CODES = {"RESOURCE_NOT_FOUND", "notFound"}
_CODE_IN_TEXT = re.compile(r"\b(ZONE_RESOURCE_POOL_EXHAUSTED(?:_WITH_DETAILS)?|UNSUPPORTED_OPERATION|QUOTA_EXCEEDED)\b")
# "accelerator/machine type not offered in this zone" reads as 400/404 naming the zone's type.
_NOT_IN_ZONE = re.compile(r"(acceleratorTypes|machineTypes|diskTypes)/")
_QUOTA_NAME = re.compile(r"Quota '([A-Za-z0-9_-]+)' exceeded")
_QUOTA_REGION = re.compile(r"in region ([a-z]+-[a-z]+\d+)")
_ADC_HINT = "run `gcloud auth application-default login`, and pass --project PROJECT or set GOOGLE_CLOUD_PROJECT"


def parse_endpoint(url: str | None) -> tuple[str | None, bool]:
    """(endpoint, anonymous) from GPUJOB_GCP_API_ENDPOINT. Plain http only to this machine."""
    if not url:
        return None, False
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https") or not host:
        raise ProviderError("gcp", f"{ENDPOINT_ENV}={url!r} is not an http(s) URL",
                            hint="write it like https://compute-psc.example.com or http://127.0.0.1:8080")
    if parsed.scheme == "http":
        if not _is_loopback(host):
            raise ProviderError("gcp", f"{ENDPOINT_ENV}={url}: plain http is allowed only for a loopback host",
                                hint="use https:// for a remote endpoint (e.g. a Private Service Connect address)")
        return url.rstrip("/"), True  # a local fake: no Google credentials to send
    return url.rstrip("/"), False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Clients:
    project: str
    instances: Any
    zone_ops: Any
    global_ops: Any
    firewalls: Any
    images: Any
    resource_policies: Any  # compact placement of multi-node runs (regional)
    region_ops: Any
    regions: Any = None  # regional quotas for the pre-flight (RegionsClient)


def build_clients(project: str | None, credentials: Any, endpoint: str | None, anonymous: bool) -> Clients:
    """Every client with the same endpoint, credentials and REST transport."""
    from launcher.providers.cloudenv import quiet_gce_metadata

    quiet_gce_metadata()
    try:
        from google.api_core.client_options import ClientOptions
        from google.cloud import compute_v1
    except ImportError:
        raise ProviderUnavailable("gcp", "google-cloud-compute is not installed", hint="pip install 'gpujob[gcp]'") from None
    if credentials is None and anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
        project = project or _env_project()
    elif credentials is None:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, adc_project = google.auth.default(scopes=SCOPES)
        except DefaultCredentialsError as exc:
            raise CredentialsError("gcp", f"no Application Default Credentials: {first_line(exc)}", hint=_ADC_HINT) from None
        project = project or adc_project or _env_project()
    else:
        project = project or _env_project()
    if not project:
        raise CredentialsError("gcp", "no GCP project given", hint=_ADC_HINT)
    opts = ClientOptions(api_endpoint=endpoint) if endpoint else None
    kw = dict(credentials=credentials, client_options=opts, transport="rest")
    return Clients(project, compute_v1.InstancesClient(**kw), compute_v1.ZoneOperationsClient(**kw),
                   compute_v1.GlobalOperationsClient(**kw), compute_v1.FirewallsClient(**kw),
                   compute_v1.ImagesClient(**kw), compute_v1.ResourcePoliciesClient(**kw),
                   compute_v1.RegionOperationsClient(**kw), compute_v1.RegionsClient(**kw))


def _env_project() -> str | None:
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- errors -------------------------------------------------------------------------------


@dataclass
class Failure:
    """One error from an operation or an HTTP reply, reduced to what we act on."""

    codes: list[str]
    message: str
    http_status: int | None = None
    quota_metric: str | None = None
    quota_region: str | None = None

    @property
    def kind(self) -> str:
        codes = set(self.codes)
        if codes & QUOTA_CODES or _QUOTA_NAME.search(self.message):
            return "quota"
        if codes & CAPACITY_CODES:
            return "capacity"
        if (codes & NOT_FOUND_CODES or self.http_status in (400, 404)) and _NOT_IN_ZONE.search(self.message):
            return "capacity"  # this zone does not offer the GPU or machine type
        if codes & NOT_FOUND_CODES or self.http_status == 404:
            return "not-found"
        if self.http_status == 401 or (self.http_status == 403 and "permission" in self.message.lower()):
            return "auth"
        return "other"

    @property
    def code(self) -> str:
        return self.codes[0] if self.codes else (str(self.http_status) if self.http_status else "UNKNOWN")


def op_failure(op: Any) -> Failure | None:
    """The error a DONE operation carries, from error.errors even without httpErrorStatusCode."""
    errors = list(op.error.errors) if op.error else []
    if not errors and not op.http_error_status_code:
        return None
    codes = [e.code for e in errors if e.code]
    message = "; ".join(e.message for e in errors if e.message) or op.http_error_message or ""
    metric = region = None
    for e in errors:
        for d in e.error_details:
            if d.quota_info and d.quota_info.metric_name:
                metric = d.quota_info.metric_name.rsplit("/", 1)[-1].upper()
                region = d.quota_info.dimensions.get("region")
    return Failure(codes, message, op.http_error_status_code or None, metric, region)


def api_failure(exc: Exception) -> Failure:
    """A google.api_core exception, reduced to codes and message."""
    message = getattr(exc, "message", None) or str(exc)
    codes = [e.get("reason") for e in getattr(exc, "errors", None) or () if isinstance(e, dict) and e.get("reason")]
    reason = getattr(exc, "reason", None)
    if reason:
        codes.append(reason)
    codes += [c for c in _CODE_IN_TEXT.findall(message) if c not in codes]
    status = getattr(exc, "code", None)
    return Failure(codes, message, status if isinstance(status, int) else None)


def raise_failure(f: Failure, project: str, what: str) -> None:
    """Turn a Failure that is not a zone problem into the error tree."""
    if f.kind == "quota":
        raise quota_error(f, project, what)
    if f.kind == "auth":
        raise CredentialsError("gcp", f"{what}: {f.message}", code=f.code,
                               hint=f"grant your account roles/compute.instanceAdmin.v1 and roles/compute.securityAdmin on {project}, "
                                    "and check the Compute Engine API is enabled")
    raise ProviderError("gcp", f"{what}: {f.code}: {f.message}", code=f.code)


def quota_error(f: Failure, project: str, what: str) -> QuotaError:
    m = _QUOTA_NAME.search(f.message)
    name = f.quota_metric or (m.group(1) if m else "a Compute Engine quota")
    r = _QUOTA_REGION.search(f.message)
    region = f.quota_region or (r.group(1) if r else None)
    where = f" in region {region}" if region else (" (all regions)" if "ALL_REGIONS" in name else "")
    see = (f"gcloud compute regions describe {region} --project {project}" if region
           else f"gcloud compute project-info describe --project {project}")
    hint = (f"request more {name} at https://console.cloud.google.com/iam-admin/quotas?project={project} "
            f"(see current limits: {see}); GPUS_ALL_REGIONS is a separate project-wide cap")
    return QuotaError("gcp", f"{what}: quota {name} exceeded{where}: {f.message}", hint=hint, code="QUOTA_EXCEEDED")


def is_transient(exc: Exception) -> bool:
    from google.api_core import exceptions as gex

    return isinstance(exc, (gex.ServiceUnavailable, gex.TooManyRequests, gex.InternalServerError,
                            gex.DeadlineExceeded, gex.GatewayTimeout)) and api_failure(exc).kind == "other"


# --- operations ---------------------------------------------------------------------------


def wait_operation(clients: Clients, op: Any, zone: str | None, deadline: float, what: str,
                   clock: Callable[[], float], sleep: Callable[[float], None], region: str | None = None) -> Any:
    """Wait for a zone (zone=...), region (region=...) or global operation until DONE or the deadline."""
    from google.cloud import compute_v1

    start = clock()
    while op.status != compute_v1.Operation.Status.DONE:
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(what, clock() - start, last_state=f"operation {op.name} {op.status.name}")
        call_timeout = min(remaining, CALL_TIMEOUT_S) + 5  # wait() itself returns within about a minute
        try:
            if zone:
                op = clients.zone_ops.wait(project=clients.project, zone=zone, operation=op.name,
                                           timeout=call_timeout, retry=None)
            elif region:
                op = clients.region_ops.wait(project=clients.project, region=region, operation=op.name,
                                             timeout=call_timeout, retry=None)
            else:
                op = clients.global_ops.wait(project=clients.project, operation=op.name,
                                             timeout=call_timeout, retry=None)
        except Exception as exc:  # noqa: BLE001 - classified right here
            if not is_transient(exc):
                raise_failure(api_failure(exc), clients.project, what)
            sleep(min(2.0, max(0.0, deadline - clock())))
            continue
        if op.status != compute_v1.Operation.Status.DONE:
            sleep(min(1.0, max(0.0, deadline - clock())))
    return op
