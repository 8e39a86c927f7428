"""This machine: no resources to create, nothing to bill. The quick start's default."""

from __future__ import annotations

import os
import platform
from typing import Any

from launcher.providers.base import Leftover, Machine, Resource


class LocalProvider:
    name = "local"

    def __init__(self, **_: Any):
        pass

    def _machine(self) -> Machine:
        return Machine(provider="local", id=platform.node() or "localhost", instance_type="local",
                       gpu=None, gpu_count=0, price_per_hour=0.0, extra={"cpus": os.cpu_count()})

    def plan(self, spec, ctx) -> dict[str, Any]:
        m = self._machine()
        return {"provider": "local", "machine": m.id, "cpus": m.extra["cpus"], "price_per_hour": 0.0,
                "teardown": "nothing to release"}

    def launch(self, spec, ctx, deadline_s: float) -> Machine:
        return self._machine()

    def poll(self, machine: Machine) -> str | None:
        return None

    def teardown(self, run_id: str, resources: list[Resource], ctx) -> list[Leftover]:
        return []

    def find(self, regions: list[str] | None) -> list[Resource]:
        return []
