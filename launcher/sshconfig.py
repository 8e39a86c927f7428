"""A host as ~/.ssh/config describes it, read with paramiko's own parser (``paramiko.SSHConfig``).

    target = resolve_host("gpu-box")                  # ~/.ssh/config, or config_path=...
    target.hostname, target.user, target.port, target.identities, target.jumps

Honoured: Host patterns and aliases (``Host gpu-box``, ``Host *``, first value wins as in
OpenSSH), ``HostName`` (with ``%h`` tokens), ``User``, ``Port``, ``IdentityFile`` (``~``
expanded) and ``ProxyJump`` (``[user@]host[:port]``, comma-separated hops, each hop itself
looked up in the same config). Everything else in the file is ignored. A missing config file is
not an error (nothing is configured); an unreadable or malformed one is a UsageError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import UsageError

DEFAULT_SSH_CONFIG = "~/.ssh/config"
_MAX_HOPS = 8


@dataclass(frozen=True)
class Hop:
    """One ProxyJump host, resolved through the config."""
    host: str
    port: int
    user: str | None
    identities: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"host": self.host, "port": self.port, "user": self.user, "identities": list(self.identities)}


@dataclass(frozen=True)
class SshTarget:
    alias: str  # what the user typed
    hostname: str  # the address to connect to
    user: str | None  # None: not configured
    port: int | None
    identities: tuple[str, ...] = ()  # IdentityFile entries, expanded, in config order
    jumps: tuple[Hop, ...] = field(default=())  # ProxyJump hops, first hop first
    config_path: str | None = None  # the file that was read (None: none existed)


def _load(config_path: str | os.PathLike | None):
    import paramiko

    path = Path(os.path.expanduser(str(config_path or DEFAULT_SSH_CONFIG)))
    if not path.is_file():
        if config_path is not None and str(config_path) != DEFAULT_SSH_CONFIG:
            raise UsageError(f"ssh config {path} does not exist", "pass --ssh-config PATH to an OpenSSH config file")
        return None, None
    try:
        return paramiko.SSHConfig.from_path(str(path)), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read ssh config {path}: {exc}", "check the file's permissions") from None
    except Exception as exc:  # paramiko raises ConfigParseError / ValueError on bad lines
        raise UsageError(f"ssh config {path} is malformed: {exc}", "fix the line, or pass --ssh-config") from None


def _port(value, where: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 0 < port < 65536:
        raise UsageError(f"{where}: port {value!r} is not a port number", "use 1-65535")
    return port


def _split_hop(text: str) -> tuple[str | None, str, int | None]:
    user, _, rest = text.rpartition("@") if "@" in text else (None, "", text)
    host, port = rest, None
    if rest.startswith("["):  # [host]:port
        host, _, tail = rest[1:].partition("]")
        port = _port(tail.lstrip(":") or None, f"ProxyJump {text}")
    elif rest.count(":") == 1:
        host, p = rest.split(":")
        port = _port(p, f"ProxyJump {text}")
    return user or None, host, port


def _lookup(cfg, alias: str) -> dict:
    return cfg.lookup(alias) if cfg is not None else {"hostname": alias}


def _identities(found: dict) -> tuple[str, ...]:
    return tuple(os.path.expanduser(p) for p in found.get("identityfile", []) or [])


def resolve_host(alias: str, config_path: str | os.PathLike | None = None) -> SshTarget:
    """What connecting to ``alias`` means under the ssh config at ``config_path``
    (default ~/.ssh/config). Raises UsageError for a malformed file, port or ProxyJump loop."""
    cfg, used = _load(config_path)
    found = _lookup(cfg, alias)
    jumps: list[Hop] = []
    proxy = found.get("proxyjump")
    if proxy and proxy.lower() != "none":
        for hop_text in proxy.split(","):
            user, host, port = _split_hop(hop_text.strip())
            hop = _lookup(cfg, host)
            jumps.append(Hop(host=hop.get("hostname", host), port=port or _port(hop.get("port"), host) or 22,
                             user=user or hop.get("user"), identities=_identities(hop)))
            if len(jumps) > _MAX_HOPS:
                raise UsageError(f"ProxyJump for {alias} has more than {_MAX_HOPS} hops", "check the ssh config")
    return SshTarget(alias=alias, hostname=found.get("hostname", alias), user=found.get("user"),
                     port=_port(found.get("port"), f"ssh config Host {alias}"), identities=_identities(found),
                     jumps=tuple(jumps), config_path=used)
