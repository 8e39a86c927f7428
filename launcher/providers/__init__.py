"""Provider registry. SDK-backed providers are imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from launcher.errors import ProviderUnavailable, UsageError

_REGISTRY = {
    "local": ("launcher.providers.local", "LocalProvider", None),
    "ssh": ("launcher.providers.ssh", "SshProvider", None),
    "aws": ("launcher.providers.aws.launch", "AwsProvider", "pip install 'gpujob[aws]'"),
    "gcp": ("launcher.providers.gcp.launch", "GcpProvider", "pip install 'gpujob[gcp]'"),
    "auto": ("launcher.providers.auto", "AutoProvider", None),  # the cheapest of aws/gcp, with failover
}

PROVIDER_NAMES = tuple(_REGISTRY)


def get_provider(name: str, **config: Any):
    try:
        module_name, cls_name, install = _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown provider '{name}'", f"use one of: {', '.join(_REGISTRY)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderUnavailable(name, f"its SDK is not installed ({exc.name})", install) from None
    return getattr(module, cls_name)(**config)
