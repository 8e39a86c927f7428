"""The caller's public address, for the one-address SSH ingress rule of cloud providers."""

from __future__ import annotations

CHECKIP_URL = "https://checkip.amazonaws.com"


def detect_public_ip(timeout_s: float = 5.0) -> str:
    """The caller's public IPv4 as text, from one HTTPS GET to ``CHECKIP_URL`` (AWS's service),
    bounded by ``timeout_s`` seconds. Only used when no --ssh-cidr was given; raises OSError
    (urllib's URLError / timeout) when the service cannot be reached."""
    import urllib.request

    with urllib.request.urlopen(CHECKIP_URL, timeout=timeout_s) as resp:  # noqa: S310 - fixed https URL
        return resp.read().decode().strip()
