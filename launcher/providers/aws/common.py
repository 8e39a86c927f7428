"""AWS helpers shared by the EC2 provider: error mapping, quotas, tags, user data.

Nothing here imports boto3/botocore at module level: ``launcher.cli`` must start (and
``--dry-run`` must plan) on a machine without the AWS SDK or an account.
"""

from __future__ import annotations

import math
import re
import string
from datetime import datetime, timezone
from typing import Any

from launcher.errors import CredentialsError, GpujobError, ProviderError, QuotaError
from launcher.packaged import template_text
from launcher.providers.base import TAG_CREATED, TAG_JOB, TAG_OWNER, TAG_RUN

PROVIDER = "aws"
CREDENTIALS_FIX = "run `aws configure` or set AWS_PROFILE"

# The image: AWS Deep Learning AMI (OSS NVIDIA driver, PyTorch, Ubuntu), resolved through its
# public SSM parameter. Name format per https://docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html:
# /aws/service/deeplearning/ami/$arch/$ami_type/latest/ami-id, ami_type = the DLAMI name
# ("Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04)") minus "deep",
# "learning", "ami". "latest" is the newest build of that PyTorch/Ubuntu line, so the version
# in the path is a pin to revisit when AWS retires the line (ParameterNotFound then).
DLAMI_SSM_PARAMETER = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id"
# The same line for Graviton (arm64) GPU types: "Deep Learning ARM64 AMI OSS Nvidia Driver GPU
# PyTorch 2.9 (Ubuntu 24.04)", whose release notes list G5g among its supported instances
# (https://docs.aws.amazon.com/dlami/latest/devguide/ , gpupt29ossarm64-ul2404 pages); the
# path follows the same rule with $arch = arm64.
DLAMI_SSM_PARAMETERS = {
    "x86_64": DLAMI_SSM_PARAMETER,
    "arm64": "/aws/service/deeplearning/ami/arm64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id",
}
# Graviton families carry a "g" after the generation digit (g5g, c7g, m6gd, r8g...).
_GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*\.")


def arch_of(instance_type: str, catalog_arch: str | None = None) -> str:
    """The CPU architecture of an EC2 type ("x86_64" | "arm64"): the catalog's when it knows
    the type, else from the family name (Graviton families end the prefix in "g")."""
    if catalog_arch:
        return catalog_arch
    return "arm64" if _GRAVITON.match(instance_type) else "x86_64"
SSH_USER = "ubuntu"  # the DLAMI Ubuntu images log in as ubuntu
WATCHDOG_GRACE_S = 600  # the timer fires this long after limits.max_duration
USER_DATA_TEMPLATE = "aws-user-data.sh"  # in launcher.templates (package data)
USER_DATA_LIMIT = 16384  # EC2 rejects larger user data (raw, before base64)

# ClientError codes, by what the launcher does about them.
CAPACITY_CODES = {
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientFreeAddressesInSubnet",
    "Unsupported",
    "SpotMaxPriceTooLow",
}
QUOTA_CODES = {"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"}
CREDENTIAL_CODES = {
    "AuthFailure",
    "UnauthorizedOperation",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "RequestExpired",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "AccessDenied",
    "AccessDeniedException",
}
NOT_FOUND_CODES = {
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID.Malformed",
    "InvalidGroup.NotFound",
    "InvalidGroupId.Malformed",
    "InvalidKeyPair.NotFound",
    "InvalidPlacementGroup.Unknown",
}

# Service Quotas codes per instance family letter: (on-demand, spot), each (name, code).
# Values are vCPUs per region. Console: https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas
_QUOTAS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "P": (("Running On-Demand P instances", "L-417A185B"), ("All P Spot Instance Requests", "L-7212CCBC")),
    "G": (
        ("Running On-Demand G and VT instances", "L-DB2E81BA"),
        ("All G and VT Spot Instance Requests", "L-3819A6DF"),
    ),
    "F": (("Running On-Demand F instances", "L-74FC7D96"), ("All F Spot Instance Requests", "L-88CF9481")),
    "X": (("Running On-Demand X instances", "L-7295265B"), ("All X Spot Instance Requests", "L-E3A00192")),
    "INF": (("Running On-Demand Inf instances", "L-1945791B"), ("All Inf Spot Instance Requests", "L-B5D1601B")),
    "TRN": (("Running On-Demand Trn instances", "L-2C3B7624"), ("All Trn Spot Instance Requests", "L-5480EFD2")),
    "DL": (("Running On-Demand DL instances", "L-6E869C2A"), ("All DL Spot Instance Requests", "L-85EED4F7")),
    "STANDARD": (
        ("Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "L-1216C47A"),
        ("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "L-34B43A08"),
    ),
}


def family_of(instance_type: str) -> str:
    """'p4d.24xlarge' -> 'P', 'g5.xlarge' / 'vt1.3xlarge' -> 'G', 'm5.large' -> 'STANDARD'."""
    m = re.match(r"[a-z]+", instance_type.lower())
    letters = m.group(0).upper() if m else ""
    if letters == "VT":
        return "G"  # G and VT share one quota
    if letters in ("INF", "TRN", "DL"):
        return letters
    if letters[:1] in ("P", "G", "F", "X"):  # p4d, p4de, g4dn, gr6, x2gd ...
        return letters[:1]
    return "STANDARD"


# Families whose every size may join a cluster placement group (EFA / high-bandwidth training
# machines), and those where only the big sizes gain from one: a g5.xlarge's network is the
# bottleneck long before rack locality matters, and small sizes hit placement capacity errors.
_CLUSTER_FAMILIES = ("p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6", "p6e", "trn1", "trn1n", "trn2", "dl1")
_CLUSTER_LARGE_FAMILIES = ("p3", "g4dn", "g5", "g6", "g6e", "g5g")
_LARGE_SIZE = re.compile(r"^(metal|(\d+)xlarge)")


def cluster_placement(instance_type: str) -> bool:
    """Whether a multi-node run of this type gets a "cluster" placement group."""
    family, _, size = instance_type.lower().partition(".")
    family = family.split("-", 1)[0]  # p6-b200 -> p6
    if family in _CLUSTER_FAMILIES:
        return True
    m = _LARGE_SIZE.match(size)
    return family in _CLUSTER_LARGE_FAMILIES and bool(m) and (m.group(1) == "metal" or int(m.group(2)) >= 12)


def node_rule(group_id: str) -> list[dict[str, Any]]:
    """Ingress for a multi-node run: all TCP and UDP from members of the same group only
    (NCCL / gloo pick ports at run time, so no port list can be narrower)."""
    pair = [{"GroupId": group_id, "Description": "gpujob nodes of this run"}]
    return [{"IpProtocol": proto, "FromPort": 0, "ToPort": 65535, "UserIdGroupPairs": pair} for proto in ("tcp", "udp")]


def quota_for(instance_type: str, spot: bool) -> tuple[str, str]:
    """(quota name, quota code) that limits this instance type's vCPUs in a region."""
    return _QUOTAS[family_of(instance_type)][1 if spot else 0]


def quota_hint(instance_type: str, spot: bool, region: str, vcpus: int | None = None) -> str:
    name, code = quota_for(instance_type, spot)
    want = f" --desired-value {vcpus}" if vcpus else " --desired-value <vCPUs>"
    return (
        f"raise '{name}' ({code}) in {region}: "
        f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code} "
        f"or `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {code}"
        f"{want} --region {region}`"
    )


def quota_error(instance_type: str, spot: bool, region: str, detail: str, code: str | None, vcpus: int | None) -> QuotaError:
    name, _ = quota_for(instance_type, spot)
    return QuotaError(
        PROVIDER,
        f"quota '{name}' is too low for {instance_type} in {region}: {one_line(detail)}",
        hint=quota_hint(instance_type, spot, region, vcpus),
        code=code,
    )


# --- errors --------------------------------------------------------------------------------


def one_line(text: Any, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return one_line(response.get("Error", {}).get("Message", "") or exc)
    return one_line(exc)


def translate(exc: BaseException, what: str, region: str | None = None) -> GpujobError:
    """Map any SDK exception to the gpujob error tree (one line, with the fix)."""
    if isinstance(exc, GpujobError):
        return exc
    where = f" in {region}" if region else ""
    try:
        import botocore.exceptions as bx
    except ImportError:  # pragma: no cover - the provider checks boto3 before any call
        return ProviderError(PROVIDER, f"{what}{where} failed: {one_line(exc)}")
    cred_types = tuple(
        getattr(bx, n)
        for n in (
            "NoCredentialsError",
            "PartialCredentialsError",
            "ProfileNotFound",
            "CredentialRetrievalError",
            "TokenRetrievalError",
            "SSOTokenLoadError",
            "UnauthorizedSSOTokenError",
            "SSOError",
        )
        if hasattr(bx, n)
    )
    if isinstance(exc, cred_types):
        return CredentialsError(PROVIDER, f"no usable AWS credentials ({one_line(exc)})", hint=CREDENTIALS_FIX)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return ProviderError(
            PROVIDER,
            f"{what}{where}: cannot reach the AWS endpoint ({one_line(exc)})",
            hint="check the network, the region name and AWS_ENDPOINT_URL",
        )
    code = error_code(exc)
    if code in CREDENTIAL_CODES:
        return CredentialsError(
            PROVIDER,
            f"{what}{where} refused: {code}: {error_message(exc)}",
            hint=f"{CREDENTIALS_FIX} (an identity allowed to manage EC2)",
            code=code,
        )
    if code == "OptInRequired":
        return ProviderError(PROVIDER, f"{what}{where}: the region is not enabled for this account", code=code,
                             hint="enable it in the AWS console or choose another region")
    if code:
        return ProviderError(PROVIDER, f"{what}{where} failed: {code}: {error_message(exc)}", code=code)
    return ProviderError(PROVIDER, f"{what}{where} failed: {one_line(exc)}")


def is_zone_unavailable(code: str | None, message: str) -> bool:
    """Errors that mean "not here, try the next availability zone"."""
    if code in CAPACITY_CODES:
        return True
    # An AZ that is closed to new customers or does not offer the type answers InvalidParameterValue.
    return code == "InvalidParameterValue" and "zone" in message.lower()


# --- tags, names, commands ---------------------------------------------------------------


def resource_name(run_id: str) -> str:
    return f"gpujob-{run_id}"


def run_tags(run_id: str, job: str, owner: str, created: datetime | None = None) -> list[dict[str, str]]:
    when = (created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        {"Key": TAG_RUN, "Value": run_id},
        {"Key": TAG_JOB, "Value": job},
        {"Key": TAG_OWNER, "Value": owner or "unknown"},
        {"Key": TAG_CREATED, "Value": when},
        {"Key": "Name", "Value": resource_name(run_id)},
    ]


def tag_value(tags: list[dict[str, str]] | None, key: str) -> str | None:
    for t in tags or []:
        if t.get("Key") == key:
            return t.get("Value")
    return None


def delete_command(kind: str, rid: str, region: str | None) -> str:
    reg = f" --region {region}" if region else ""
    if kind == "instance":
        return f"aws ec2 terminate-instances --instance-ids {rid}{reg}"
    if kind == "security-group":
        if rid.startswith("sg-"):
            return f"aws ec2 delete-security-group --group-id {rid}{reg}"
        return f"aws ec2 delete-security-group --group-name {rid}{reg}"
    if kind == "placement-group":
        return f"aws ec2 delete-placement-group --group-name {rid}{reg}"
    if kind == "key-pair":
        if rid.startswith("key-"):
            return f"aws ec2 delete-key-pair --key-pair-id {rid}{reg}"
        return f"aws ec2 delete-key-pair --key-name {rid}{reg}"
    return f"# unknown AWS resource kind {kind!r}: {rid}{reg}"


# --- watchdog + host key user data ---------------------------------------------------------


class Template(string.Template):
    # '@' instead of '$' so the shell script keeps its own $VARS untouched.
    delimiter = "@"


def watchdog_minutes(max_duration_s: float) -> int:
    return math.ceil((max_duration_s + WATCHDOG_GRACE_S) / 60)


def render_user_data(host_key_private: str, host_key_public: str, limits) -> str:
    """The boot script: arm the power-off timer and start the guard (``limits``: the spec's
    limits: max_duration, unfetched_grace, idle_timeout), then install the pinned host key."""
    from launcher import guard

    minutes = watchdog_minutes(limits.max_duration)
    text = Template(template_text(USER_DATA_TEMPLATE)).substitute(
        shutdown_minutes=minutes,
        # The systemd-independent fallback fires 5 min after the normal timer.
        fallback_seconds=(minutes + 5) * 60,
        guard=guard.boot_lines(limits),
        guard_command=guard.command(limits),
        host_key_private=host_key_private.strip(),
        host_key_public=host_key_public.strip(),
    )
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ProviderError(PROVIDER, f"user data is {len(text.encode())} bytes, over EC2's {USER_DATA_LIMIT}")
    return text
