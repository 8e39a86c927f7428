"""What a GCP run looks like, worked out without any API call or credentials.

Names, labels, machine shape, zone order and price, and the Compute Engine request bodies
(as dicts of proto field names, so ``plan()`` can show them and ``launch()`` can send them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import string
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launcher.errors import ProviderError
from launcher.packaged import template_text
from launcher.providers.base import TAG_CREATED, TAG_JOB, TAG_OWNER, TAG_RUN

if TYPE_CHECKING:
    from launcher.spec import JobSpec

DLVM_PROJECT = "deeplearning-platform-release"
# PyTorch 2.9, CUDA 12.9, Ubuntu 22.04, NVIDIA 580 driver; patched until August 2028 per the
# image-family table at https://docs.cloud.google.com/deep-learning-vm/docs/images
DLVM_FAMILY = "pytorch-2-9-cu129-ubuntu-2204-nvidia-580"
SSH_USER = "gpujob"
NETWORK = "global/networks/default"
GRACE_S = 600  # the machine outlives limits.max_duration by this much before it deletes itself
FIREWALL_MARK = "gpujob-run="  # firewall rules carry no labels: the run id lives in the description

# Our GPU names -> Compute Engine accelerator type names.
ACCELERATOR_TYPES = {
    "T4": "nvidia-tesla-t4",
    "V100": "nvidia-tesla-v100",
    "P100": "nvidia-tesla-p100",
    "P4": "nvidia-tesla-p4",
    "K80": "nvidia-tesla-k80",
    "L4": "nvidia-l4",
    "A100": "nvidia-tesla-a100",
    "A100-40GB": "nvidia-tesla-a100",
    "A100-80GB": "nvidia-a100-80gb",
    "H100": "nvidia-h100-80gb",
    "H100-80GB": "nvidia-h100-80gb",
    "H100-MEGA": "nvidia-h100-mega-80gb",
    "H100-MEGA-80GB": "nvidia-h100-mega-80gb",
    "H200": "nvidia-h200-141gb",
    "H200-141GB": "nvidia-h200-141gb",
    "B200": "nvidia-b200",
}

# GPUs that come only inside fixed machine types (no guestAccelerators entry), by count.
FIXED_TYPES = {
    "nvidia-tesla-a100": {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g",
                          16: "a2-megagpu-16g"},
    "nvidia-a100-80gb": {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g", 4: "a2-ultragpu-4g", 8: "a2-ultragpu-8g"},
    "nvidia-h100-80gb": {1: "a3-highgpu-1g", 2: "a3-highgpu-2g", 4: "a3-highgpu-4g", 8: "a3-highgpu-8g"},
    "nvidia-h100-mega-80gb": {8: "a3-megagpu-8g"},
    "nvidia-h200-141gb": {8: "a3-ultragpu-8g"},
    "nvidia-b200": {8: "a4-highgpu-8g"},
    "nvidia-l4": {1: "g2-standard-4", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"},
}
# These families have their GPUs built in; every other type (n1-*) takes guestAccelerators.
BUILTIN_GPU_PREFIXES = ("a2-", "a3-", "a4-", "g2-", "g4-")
# Families that take a compact placement policy (GPU machines built for multi-node training);
# N1 does not, so T4/V100 runs spread over the zone without one.
COMPACT_PREFIXES = ("a2-", "a3-", "a4-", "g2-")
NODE_LABEL = "gpujob-node"  # value: node rank, on each machine of a multi-node run
HYPERDISK_ONLY_PREFIXES = ("a3-ultragpu", "a4-")  # these refuse pd-* boot disks
CPU_MACHINE_TYPE = "n2-standard-4"
_GCP_REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")  # us-central1; AWS's us-east-1 does not match
_TEMPLATE = "gcp-startup.sh"


def label_value(value: str) -> str:
    """GCP label values: lowercase letters, digits, '-' and '_', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]


def resource_name(run_id: str) -> str:
    """`gpujob-<run_id>`, valid as an instance, firewall and network-tag name (RFC 1035, <= 63)."""
    body = re.sub(r"[^a-z0-9-]", "-", run_id.lower()).strip("-") or "run"
    name = f"gpujob-{body}"
    if len(name) > 63:  # keep it unique when truncating
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def node_name(run_id: str, rank: int) -> str:
    return resource_name(f"{run_id}-{rank}")


def nodes_firewall_name(run_id: str) -> str:
    return resource_name(f"{run_id}-nodes")


def policy_name(run_id: str, zone: str) -> str:
    return resource_name(f"{run_id}-{zone}")


def gcp_regions(regions: list[str] | None) -> list[str]:
    """The GCP-shaped entries of a region list (specs may mix in AWS regions)."""
    return [r for r in regions or [] if _GCP_REGION.match(r)]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def labels_for(run_id: str, job: str, owner: str | None) -> dict[str, str]:
    return {
        TAG_RUN: label_value(run_id),
        TAG_JOB: label_value(job),
        TAG_OWNER: label_value(owner or "unknown"),
        TAG_CREATED: str(int(time.time())),  # labels forbid ':' so no ISO-8601 here
    }


def check_cidr(cidr: str) -> str:
    """Exactly one host: SSH is never opened to a range, let alone 0.0.0.0/0."""
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError:
        raise ProviderError("gcp", f"ssh source {cidr!r} is not an address", hint="pass --ssh-cidr A.B.C.D/32") from None
    if net.num_addresses != 1:
        raise ProviderError("gcp", f"ssh source {cidr} covers {net.num_addresses} addresses; only one host may reach port 22",
                            hint=f"pass your own address as {net.network_address}/{net.max_prefixlen}")
    return str(net)


STORAGE_RW_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


@dataclass
class Shape:
    machine_type: str
    gpu: str | None
    gpu_count: int
    accelerator_type: str | None
    attach: bool  # True: send guestAccelerators; False: the GPUs come with the machine type
    zones: list[str]
    spot: bool
    image: str
    image_family: str | None  # set when the image is our default family (resolved at launch)
    disk_gb: int
    disk_type: str
    max_run_s: int
    price: float | None = None  # what it bills per hour, host + accelerators (spot price if spot)
    host_price: float | None = None
    accelerator_price: float | None = None
    on_demand_price: float | None = None  # host + accelerators; the split above is on-demand too
    notes: list[str] = field(default_factory=list)
    storage_scope: bool = False  # checkpoint_store gs://: the VM's service account may read/write Cloud Storage

    @property
    def regions(self) -> list[str]:
        return list(dict.fromkeys(region_of(z) for z in self.zones))


def _offer_price(offer: Any, spot: bool) -> float:
    price = getattr(offer, "spot_price", None) if spot else None
    price = price if price is not None else getattr(offer, "price", None)
    return price if price is not None else math.inf


def _guess_zones(regions: list[str]) -> list[str]:
    return [f"{r}-{z}" for r in regions for z in ("a", "b", "c")]


def choose_shape(spec: "JobSpec", catalog: Any, regions: list[str]) -> Shape:
    """Machine type, accelerators, zone order (cheapest offer first) and price for a spec."""
    res = spec.resources
    spot, max_run_s = res.spot, int(spec.limits.max_duration) + GRACE_S
    image = res.image_id or f"projects/{DLVM_PROJECT}/global/images/family/{DLVM_FAMILY}"
    if res.image_id and "/" not in res.image_id:
        image = f"projects/{DLVM_PROJECT}/global/images/{res.image_id}"
    family = None if res.image_id else DLVM_FAMILY
    common = dict(spot=spot, image=image, image_family=family, disk_gb=res.disk_gb, max_run_s=max_run_s,
                  storage_scope=(spec.checkpoint_store or "").startswith("gs://"))

    if res.accelerators is None:  # a CPU machine: no catalog rows, zones guessed from regions
        zones = _guess_zones(regions or ["us-central1"])
        mt = res.instance_type or CPU_MACHINE_TYPE
        return Shape(mt, None, 0, None, False, zones, disk_type=_disk_type(mt), **common,
                     notes=["no accelerator requested: CPU machine, price not in the catalog"])

    from launcher.catalog.model import normalize_gpu

    gpu, count = normalize_gpu(res.accelerators.name).upper(), res.accelerators.count
    acc = ACCELERATOR_TYPES.get(gpu)
    if acc is None:
        raise ProviderError("gcp", f"GPU {gpu} is not offered on GCP", hint=f"use one of {', '.join(sorted(ACCELERATOR_TYPES))}")
    offers = list(catalog.query(provider="gcp", gpu=gpu, count=count, regions=regions or None, spot=spot))
    # Our image (the DLVM family) is x86_64: an arm64 machine type could not boot it.
    offers = [o for o in offers if getattr(o, "arch", "x86_64") == "x86_64"]
    if res.instance_type:
        offers = [o for o in offers if o.instance_type == res.instance_type]
    offers.sort(key=lambda o: _offer_price(o, spot))
    if offers:
        best = offers[0]
        mt = res.instance_type or best.instance_type
        offers = [o for o in offers if o.instance_type == mt]
        # a spot launch only succeeds where a spot price is listed
        zones = [z for o in offers for z in ((spot and getattr(o, "spot_zones", ())) or o.zones or _guess_zones([o.region]))]
        zones = list(dict.fromkeys(zones))
        price = _offer_price(best, spot)
        return Shape(mt, gpu, count, acc, not mt.startswith(BUILTIN_GPU_PREFIXES), zones,
                     disk_type=_disk_type(mt), price=None if price == math.inf else price,
                     host_price=getattr(best, "host_price", None),
                     accelerator_price=getattr(best, "accelerator_price", None),
                     on_demand_price=getattr(best, "price", None), **common)
    if not regions:
        raise ProviderError("gcp", f"the catalog has no GCP offer for {gpu}:{count}",
                            hint="run `gpujob estimate` to see what is offered, or set resources.instance_type and regions")
    # Not in the catalog, but the user named regions: build the shape from the fixed tables.
    fixed = FIXED_TYPES.get(acc, {})
    mt = res.instance_type or fixed.get(count) or (None if fixed else f"n1-standard-{min(8 * count, 96)}")
    if mt is None:
        raise ProviderError("gcp", f"no machine type carries {count}x {gpu}",
                            hint=f"use a count of {', '.join(map(str, sorted(fixed)))}")
    return Shape(mt, gpu, count, acc, not mt.startswith(BUILTIN_GPU_PREFIXES), _guess_zones(regions),
                 disk_type=_disk_type(mt), **common, notes=["not in the price catalog: zones guessed, price unknown"])


def quota_metric(accelerator_type: str, spot: bool) -> str:
    """The regional quota metric that caps this accelerator type, as Compute Engine names it:
    nvidia-tesla-t4 -> NVIDIA_T4_GPUS, nvidia-a100-80gb -> NVIDIA_A100_80GB_GPUS,
    nvidia-h100-80gb -> NVIDIA_H100_GPUS; spot capacity counts against PREEMPTIBLE_<metric>."""
    name = accelerator_type.removeprefix("nvidia-").removeprefix("tesla-")
    if not name.startswith("a100-"):  # only the A100 keeps its memory in the metric name
        name = re.sub(r"-\d+gb$", "", name)
    metric = "NVIDIA_" + name.upper().replace("-", "_") + "_GPUS"
    return ("PREEMPTIBLE_" + metric) if spot else metric


def _disk_type(machine_type: str) -> str:
    return "hyperdisk-balanced" if machine_type.startswith(HYPERDISK_ONLY_PREFIXES) else "pd-balanced"


def render_startup(run_id: str, host_key_private: str, host_key_public: str, limits) -> str:
    """The boot script: start the guard (``limits``: the spec's limits), then pin the SSH host key."""
    from launcher import guard

    return string.Template(template_text(_TEMPLATE)).substitute(
        run_id=run_id, host_key_private=host_key_private.strip(), host_key_public=host_key_public.strip(),
        guard=guard.boot_lines(limits),
    )


def instance_body(shape: Shape, zone: str, name: str, labels: dict[str, str], image: str,
                  ssh_public_key: str, startup_script: str, tag: str | None = None,
                  resource_policy: str | None = None) -> dict[str, Any]:
    """The Instance resource for instances.insert (proto field names). ``tag``: the network tag
    the firewall rules target (default: the name); ``resource_policy``: a placement policy URL."""
    scheduling: dict[str, Any] = {
        # GPUs cannot live-migrate; and a restarted VM would have lost the job anyway.
        "on_host_maintenance": "TERMINATE" if shape.gpu else "MIGRATE",
        "automatic_restart": False,
        "provisioning_model": "SPOT" if shape.spot else "STANDARD",
        # The watchdog: Compute Engine deletes the VM even if this client is gone.
        "max_run_duration": {"seconds": shape.max_run_s},
        "instance_termination_action": "DELETE",
    }
    metadata = {
        "ssh-keys": f"{SSH_USER}:{ssh_public_key.strip()}",
        "block-project-ssh-keys": "true",  # only this run's key logs in
        "enable-oslogin": "FALSE",  # OS Login would ignore the ssh-keys entry above
        "startup-script": startup_script,
    }
    if shape.gpu:
        metadata["install-nvidia-driver"] = "True"  # DLVM images install the driver on first boot
    body: dict[str, Any] = {
        "name": name,
        "machine_type": f"zones/{zone}/machineTypes/{shape.machine_type}",
        "labels": dict(labels),
        "tags": {"items": [tag or name]},
        "scheduling": scheduling,
        "metadata": {"items": [{"key": k, "value": v} for k, v in metadata.items()]},
        "disks": [{
            "boot": True,
            "auto_delete": True,
            "initialize_params": {"source_image": image, "disk_size_gb": shape.disk_gb,
                                  "disk_type": f"zones/{zone}/diskTypes/{shape.disk_type}", "labels": dict(labels)},
        }],
        "network_interfaces": [{"network": NETWORK, "access_configs": [{"name": "External NAT", "type_": "ONE_TO_ONE_NAT"}]}],
        # No Google API access (no credentials on the VM) unless the checkpoint lives in a gs://
        # bucket: then the project's default service account, limited to Cloud Storage read/write.
        "service_accounts": [{"email": "default", "scopes": [STORAGE_RW_SCOPE]}] if shape.storage_scope else [],
    }
    if resource_policy:
        body["resource_policies"] = [resource_policy]
    if shape.attach and shape.accelerator_type:
        body["guest_accelerators"] = [{"accelerator_type": f"zones/{zone}/acceleratorTypes/{shape.accelerator_type}",
                                       "accelerator_count": shape.gpu_count}]
    return body


def firewall_body(name: str, run_id: str, job: str, cidr: str) -> dict[str, Any]:
    return {
        "name": name,
        "network": NETWORK,
        "direction": "INGRESS",
        "priority": 1000,
        "allowed": [{"I_p_protocol": "tcp", "ports": ["22"]}],
        "source_ranges": [cidr],
        "target_tags": [name],
        "description": f"{FIREWALL_MARK}{label_value(run_id)} job={label_value(job)}: ssh from one address, deleted at teardown",
    }


def nodes_firewall_body(name: str, tag: str, run_id: str, job: str) -> dict[str, Any]:
    """All TCP/UDP between machines carrying this run's tag, from nowhere else (no sourceRanges):
    NCCL and gloo choose their ports at run time."""
    return {
        "name": name,
        "network": NETWORK,
        "direction": "INGRESS",
        "priority": 1000,
        "allowed": [{"I_p_protocol": "tcp"}, {"I_p_protocol": "udp"}],
        "source_tags": [tag],
        "target_tags": [tag],
        "description": f"{FIREWALL_MARK}{label_value(run_id)} job={label_value(job)}: node to node, deleted at teardown",
    }


def compact_placement(machine_type: str) -> bool:
    return machine_type.startswith(COMPACT_PREFIXES)


def policy_body(name: str, run_id: str, job: str, count: int) -> dict[str, Any]:
    """A compact placement policy for one zone's nodes. Resource policies carry no labels: the run
    id lives in the description, as on firewall rules."""
    return {
        "name": name,
        "description": f"{FIREWALL_MARK}{label_value(run_id)} job={label_value(job)}: compact placement, deleted at teardown",
        "group_placement_policy": {"collocation": "COLLOCATED", "vm_count": count},
    }


def policy_delete_command(name: str, region: str, project: str | None) -> str:
    return f"gcloud compute resource-policies delete {name} --region {region} --project {project or 'PROJECT'} --quiet"


def firewall_run_id(description: str | None) -> str | None:
    m = re.search(re.escape(FIREWALL_MARK) + r"(\S+)", description or "")
    return m.group(1) if m else None


def instance_delete_command(name: str, zone: str, project: str | None) -> str:
    return f"gcloud compute instances delete {name} --zone {zone} --project {project or 'PROJECT'} --quiet"


def firewall_delete_command(name: str, project: str | None) -> str:
    return f"gcloud compute firewall-rules delete {name} --project {project or 'PROJECT'} --quiet"
