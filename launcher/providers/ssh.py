"""An existing machine reached over SSH: nothing to create, nothing to delete.

The host key is pinned from known_hosts (default ~/.ssh/known_hosts) by launcher.remote;
an unknown host is refused with the ssh-keyscan line to run, never auto-accepted.
``host`` may be an alias from ~/.ssh/config (``ssh_config`` moves the file): its HostName,
User, Port, IdentityFile and ProxyJump apply unless given explicitly. With no identity from
either, the ssh-agent's keys are used, then ~/.ssh/id_ed25519 / id_rsa.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import GpujobError, ProviderError
from launcher.keys import fingerprint
from launcher.providers.base import Leftover, Machine, Resource, RunContext
from launcher.remote import DEFAULT_KNOWN_HOSTS, known_host_keys

if TYPE_CHECKING:
    from launcher.spec import JobSpec

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_rsa")


class SshProvider:
    name = "ssh"

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        identity: str | os.PathLike | None = None,
        known_hosts: str | os.PathLike | None = None,
        price_per_hour: float | None = None,
        ssh_config: str | os.PathLike | None = None,
    ):
        from launcher.sshconfig import resolve_host

        target = resolve_host(host, ssh_config)
        self.alias = host
        self.host = target.hostname
        self.user = user or target.user or os.environ.get("USER") or "root"
        self.port = int(port or target.port or 22)
        self.configured_identities = target.identities
        self.identity = identity if identity is not None else next(
            (p for p in target.identities if Path(p).is_file()), target.identities[0] if target.identities else None)
        self.jumps = target.jumps
        self.ssh_config = target.config_path
        self.known_hosts = os.path.expanduser(str(known_hosts or DEFAULT_KNOWN_HOSTS))
        self.price_per_hour = price_per_hour

    @property
    def machine_id(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _candidates(self) -> list[Path]:
        if self.identity is not None:
            return [Path(os.path.expanduser(str(self.identity)))]
        return [Path(os.path.expanduser(p)) for p in DEFAULT_IDENTITIES]

    def resolve_identity(self) -> Path | None:
        """The private key to use: --identity, else the config's IdentityFile, else None when
        the ssh-agent holds a key (the agent is used), else ~/.ssh/id_ed25519, ~/.ssh/id_rsa."""
        if self.identity is None:
            from launcher.remote import agent_keys

            if agent_keys():
                return None
        for path in self._candidates():
            if path.is_file():
                return path
        if self.identity is not None:
            raise ProviderError(self.name, f"identity file {self._candidates()[0]} does not exist",
                                hint="pass --identity PATH to an existing private key")
        raise ProviderError(self.name, "no identity file: no ssh-agent key, and neither ~/.ssh/id_ed25519 nor "
                            "~/.ssh/id_rsa exists", hint="pass --identity PATH, or ssh-add a key")

    def _jumps(self, identity: Path | None) -> list[dict]:
        return [{"host": h.host, "port": h.port, "user": h.user or self.user,
                 "key_path": next((p for p in h.identities if Path(p).is_file()), str(identity or ""))}
                for h in self.jumps]

    def host_key_status(self) -> str:
        """'known (SHA256:..)' or 'unknown (...)', from known_hosts alone (no network)."""
        try:
            keys = known_host_keys(self.known_hosts, self.host, self.port)
        except GpujobError as err:
            return f"unknown ({err.message})"
        if keys:
            return "known (" + ", ".join(fingerprint(k) for k in keys) + ")"
        return (f"unknown: not in {self.known_hosts}; check its fingerprint, then run "
                f"`ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}`")

    def plan(self, spec: "JobSpec", ctx: RunContext) -> dict[str, Any]:
        existing = [p for p in self._candidates() if p.is_file()]
        return {
            "provider": self.name,
            "machine": self.machine_id,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "identity": str(existing[0] if existing else self._candidates()[0]),
            "identity_exists": bool(existing),
            "alias": self.alias,
            "ssh_config": self.ssh_config,
            "proxy_jump": [f"{h.user + '@' if h.user else ''}{h.host}:{h.port}" for h in self.jumps],
            "known_hosts": self.known_hosts,
            "host_key": self.host_key_status(),
            "creates": [],  # an existing machine: nothing is created or deleted
            "price_per_hour": self.price_per_hour,
        }

    def launch(self, spec: "JobSpec", ctx: RunContext, deadline_s: float) -> Machine:
        identity = self.resolve_identity()
        from launcher.remote import load_private_key

        if identity is not None:
            load_private_key(identity)  # a bad key fails now, not after the connect deadline
        return Machine(
            provider=self.name,
            id=self.machine_id,
            host=self.host,
            port=self.port,
            user=self.user,
            key_path=str(identity) if identity else "",  # "": the ssh-agent's keys
            host_keys=[],  # pinned from known_hosts by the Session instead
            price_per_hour=self.price_per_hour,
            extra={"known_hosts": self.known_hosts, "jumps": self._jumps(identity), "alias": self.alias},
        )

    def poll(self, machine: Machine) -> str | None:
        return None  # nothing to watch from outside: SSH failures surface in the session

    def teardown(self, run_id: str, resources: list[Resource], ctx: RunContext | None) -> list[Leftover]:
        return []  # the machine is not ours to delete; the runner kills the job itself

    def find(self, regions: list[str] | None) -> list[Resource]:
        return []
