"""`--provider auto`: the cheapest offer that fits the spec, across AWS and GCP, with failover.

The order is the estimate's own ranking (``launcher.estimate.table.estimate`` over AWS and GCP:
fits in memory, cheapest total job dollars, then fastest), at most REGIONS_PER_TYPE regions per
instance type and MAX_OFFERS offers, kept to the offers the spec allows:
its accelerator (name and count) or instance type, its regions, its market (spot or
on-demand), its budget and max_duration. Each offer is one (provider, instance type, region);
the provider behind it walks that region's zones itself. On a capacity or quota error the next
offer is tried, and every step is told through ``ctx.emit``: ``auto-try`` and ``auto-next``.
Anything else (credentials, a bug, an interrupt) stops at once: failing over would hide it.

Resources are recorded under the provider that made them, so teardown (and a later ``down``)
hands each its own, including those left by an offer that failed halfway.
"""

from __future__ import annotations

from typing import Any, Callable

from launcher.errors import CapacityError, GpujobError, ProviderError, QuotaError

PROVIDERS = ("aws", "gcp")
MAX_OFFERS = 6  # offers tried before giving up; the dry run lists them
# Regions tried per (provider, instance type): capacity and quota often fail alike across
# regions of one cloud, so the order reaches other types and the other cloud early.
REGIONS_PER_TYPE = 2


class _SubCtx:
    """The run's context as one sub-provider sees it: its resources recorded under its name."""

    def __init__(self, ctx, provider: str, spec=None):
        self._ctx, self._provider = ctx, provider
        self.spec = spec if spec is not None else ctx.spec  # the offer's spec: its provider's regions only

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def intent(self, kind: str, name: str, region: str | None = None) -> int:
        try:
            return self._ctx.intent(kind, name, region, provider=self._provider)
        except TypeError:  # a context that records one provider only
            return self._ctx.intent(kind, name, region)


def _offer_spec(spec, offer: dict):
    from launcher.spec import JobSpec

    data = spec.model_dump(mode="json", exclude_unset=False)
    res = data.setdefault("resources", {})
    res.update(instance_type=offer["instance_type"], regions=[offer["region"]],
               accelerators={"name": offer["gpu"], "count": offer["gpu_count"]})
    return JobSpec.model_validate(data)


class AutoProvider:
    name = "auto"

    def __init__(self, regions: list[str] | None = None, ssh_cidr: str | None = None, project: str | None = None,
                 factory: Callable[..., Any] | None = None, catalog: Any = None, max_offers: int = MAX_OFFERS):
        self.regions = list(regions or [])
        self.ssh_cidr, self.project = ssh_cidr, project
        self._factory = factory
        self._catalog = catalog
        self.max_offers = max_offers
        self._subs: dict[str, Any] = {}

    # --- the order ----------------------------------------------------------------------------

    def offers(self, spec) -> list[dict]:
        """The offers to try, in order: dicts with provider, instance_type, region, gpu,
        gpu_count, spot, price_per_hour, total_seconds, total_usd. Raises ProviderError when
        none fits."""
        from launcher.catalog.model import normalize_gpu
        from launcher.estimate.table import estimate

        res, lim = spec.resources, spec.limits
        est = estimate(spec, catalog=self._catalog, providers=PROVIDERS, top=None, all_regions=True)
        want_regions = {r.casefold() for r in (self.regions or res.regions)}
        acc = res.accelerators
        out, seen = [], set()
        for c in est.candidates:
            if c.spot != res.spot or not c.fits_memory or c.total_usd is None:
                continue
            if acc and (c.gpu.casefold() != normalize_gpu(acc.name).casefold() or c.gpu_count != acc.count):
                continue
            if res.instance_type and c.instance_type != res.instance_type:
                continue
            if want_regions and c.region.casefold() not in want_regions:
                continue
            if c.over_budget or (c.train_seconds is not None and c.train_seconds > lim.max_duration):
                continue
            key = (c.provider, c.instance_type, c.region)
            per_type = sum(1 for k in seen if k[:2] == key[:2])
            if key in seen or per_type >= REGIONS_PER_TYPE:
                continue
            seen.add(key)
            out.append({"provider": c.provider, "instance_type": c.instance_type, "region": c.region,
                        "gpu": c.gpu, "gpu_count": c.gpu_count, "spot": c.spot, "price_per_hour": c.price_per_hour,
                        "total_seconds": c.total_seconds, "total_usd": c.total_usd})
            if len(out) >= self.max_offers:
                break
        if not out:
            market = "spot" if res.spot else "on-demand"
            raise ProviderError(self.name, f"no {market} AWS or GCP offer fits the spec"
                                + (f" ({acc})" if acc else "") + (f" in {', '.join(sorted(want_regions))}" if want_regions else "")
                                + " within its budget and max_duration",
                                hint="run `gpujob estimate SPEC` to see every offer, then loosen the spec")
        return out

    def _sub(self, provider: str):
        if provider not in self._subs:
            from launcher.providers import get_provider

            factory = self._factory or get_provider
            config: dict[str, Any] = {}
            if self.ssh_cidr:
                config["ssh_cidr"] = self.ssh_cidr
            if provider == "gcp" and self.project:
                config["project"] = self.project
            self._subs[provider] = factory(provider, **config)
        return self._subs[provider]

    # --- the provider contract ------------------------------------------------------------------

    def plan(self, spec, ctx) -> dict[str, Any]:
        order = self.offers(spec)
        first = order[0]
        sub_plan: dict[str, Any] = {}
        try:
            one = _offer_spec(spec, first)
            sub_plan = self._sub(first["provider"]).plan(one, _SubCtx(ctx, first["provider"], one))
        except GpujobError as exc:  # the order is still worth showing
            sub_plan = {"error": str(exc)}
        return {"provider": self.name,
                "order": [f"{i + 1}. {o['provider']} {o['instance_type']} {o['region']} "
                          f"({o['gpu']} x{o['gpu_count']}{', spot' if o['spot'] else ''}) "
                          f"${o['price_per_hour']:.2f}/h, job ${o['total_usd']:.2f}" for i, o in enumerate(order)],
                "failover": "on a capacity or quota error, the next offer in this order",
                "estimate_provider": first["provider"], "instance_type": first["instance_type"],
                "price_per_hour": first["price_per_hour"], "gpu_name": first["gpu"],
                "first": sub_plan}

    def launch(self, spec, ctx, deadline_s: float):
        import time

        start = time.monotonic()
        order = self.offers(spec)
        failures: list[str] = []
        for i, offer in enumerate(order):
            where = f"{offer['provider']} {offer['instance_type']} in {offer['region']}"
            ctx.emit("auto-try", offer=i + 1, of=len(order), provider=offer["provider"],
                     instance_type=offer["instance_type"], region=offer["region"],
                     price_per_hour=offer["price_per_hour"], total_usd=offer["total_usd"])
            try:
                sub = self._sub(offer["provider"])
                left = max(1.0, deadline_s - (time.monotonic() - start))
                one = _offer_spec(spec, offer)
                machine = sub.launch(one, _SubCtx(ctx, offer["provider"], one), left)
            except (CapacityError, QuotaError) as exc:
                failures.append(f"{where} ({str(exc).split(';')[0].split(': ', 1)[-1]})")  # the first clause
                nxt = order[i + 1] if i + 1 < len(order) else None
                ctx.emit("auto-next", provider=offer["provider"], instance_type=offer["instance_type"],
                         region=offer["region"], reason=str(exc),
                         next=f"{nxt['provider']} {nxt['instance_type']} in {nxt['region']}" if nxt else None)
                continue
            machine.extra = {**machine.extra, "auto_offer": i + 1}
            return machine
        raise CapacityError(self.name, f"none of {len(order)} offers could be launched: " + "; ".join(failures),
                            hint="try spot: false / true, other regions, or later")

    def poll(self, machine) -> str | None:
        return self._sub(machine.provider).poll(machine)

    def teardown(self, run_id: str, resources: list, ctx) -> list:
        """Each cloud releases what it recorded, sweeping by tag in the regions it used."""
        leftovers: list = []
        for provider in PROVIDERS:
            mine = [r for r in resources if r.provider == provider]
            if not mine:
                continue
            sub_ctx = None
            if ctx is not None:
                regions = sorted({r.region for r in mine if r.region})
                spec = getattr(ctx, "spec", None)
                if spec is not None:
                    data = spec.model_dump(mode="json")
                    data.setdefault("resources", {})["regions"] = regions
                    from launcher.spec import JobSpec

                    spec = JobSpec.model_validate(data)
                sub_ctx = _SubCtx(ctx, provider, spec)
            leftovers += self._sub(provider).teardown(run_id, mine, sub_ctx)
        return leftovers

    def find(self, regions: list[str] | None) -> list:
        return []  # `gpujob gc` asks AWS and GCP themselves
