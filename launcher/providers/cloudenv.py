"""Keep the cloud SDKs from probing metadata servers on machines that are not in that cloud.

boto3 and google-auth look for instance credentials by calling a link-local metadata address
(169.254.169.254) when nothing else is configured. On a laptop that is a stray connection
and a multi-second wait; on an EC2 or GCE machine it is how instance roles work, so it stays.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_DMI = Path("/sys/class/dmi/id")


def _dmi(name: str) -> str:
    try:
        return (_DMI / name).read_text(errors="replace").strip()
    except OSError:
        return ""


def on_ec2() -> bool:
    return "amazon" in (_dmi("sys_vendor") + _dmi("bios_vendor")).lower() or _dmi("board_asset_tag").startswith("i-")


def on_gce() -> bool:
    return _dmi("product_name").startswith("Google")


def quiet_aws_metadata() -> None:
    if not on_ec2():
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def quiet_gce_metadata() -> None:
    if not on_gce():
        os.environ.setdefault("NO_GCE_CHECK", "true")
        # google-auth reads the variable when its metadata module is imported: fix it up if it was.
        meta = sys.modules.get("google.auth.compute_engine._metadata")
        if meta is not None and os.environ["NO_GCE_CHECK"] == "true":
            meta._NO_GCE_CHECK = True
