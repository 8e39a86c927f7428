"""A fake Compute Engine REST endpoint for tests, driven by the real google-cloud-compute client.

Stdlib only: a ThreadingHTTPServer on 127.0.0.1 at a free port, state in memory, every request
recorded. It hands out loopback addresses only (natIP 127.0.0.x, distinct per instance), so a
test can point SSH at a real local sshd. Point the provider at it with
``GPUJOB_GCP_API_ENDPOINT=fake.url``.

Knobs: ``fail_insert`` (stockout, quota, "not in this zone", as a DONE operation with only
error.errors, or as an HTTP error; ``after=N`` lets N inserts through first),
``fail_next_operation`` (any later operation ends in error), ``preempt``; read-backs:
``inserted``, ``metadata``, ``host_key_pem``, ``authorized_keys``, ``policies`` (compact
placement resource policies, checked on insert and delete as Compute Engine does).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

_HOST_KEY = re.compile(r"-----BEGIN OPENSSH PRIVATE KEY-----.*?-----END OPENSSH PRIVATE KEY-----", re.S)
_LABEL_EQ = re.compile(r'labels\.([\w-]+)\s*=\s*"?([^"\s)]+)"?')
_LABEL_HAS = re.compile(r"labels\.([\w-]+)\s*:\s*\*")
_ROUTES = [  # (method, pattern, handler name); paths after /compute/v1/projects/{project}
    ("POST", r"/zones/(?P<zone>[^/]+)/instances", "insert_instance"),
    ("GET", r"/zones/(?P<zone>[^/]+)/instances", "list_instances"),
    ("GET", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "get_instance"),
    ("DELETE", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "delete_instance"),
    ("GET", r"/aggregated/instances", "aggregated_instances"),
    ("GET", r"/zones/(?P<zone>[^/]+)/operations/(?P<op>[^/]+)", "poll_operation"),
    ("POST", r"/zones/(?P<zone>[^/]+)/operations/(?P<op>[^/]+)/wait", "poll_operation"),
    ("GET", r"/global/operations/(?P<op>[^/]+)", "poll_operation"),
    ("POST", r"/global/operations/(?P<op>[^/]+)/wait", "poll_operation"),
    ("POST", r"/global/firewalls", "insert_firewall"),
    ("GET", r"/global/firewalls", "list_firewalls"),
    ("GET", r"/regions/(?P<region>[^/]+)", "get_region"),
    ("GET", r"/global/firewalls/(?P<name>[^/]+)", "get_firewall"),
    ("DELETE", r"/global/firewalls/(?P<name>[^/]+)", "delete_firewall"),
    ("GET", r"/global/images/family/(?P<family>[^/]+)", "image_from_family"),
    ("POST", r"/regions/(?P<region>[^/]+)/resourcePolicies", "insert_policy"),
    ("GET", r"/regions/(?P<region>[^/]+)/resourcePolicies/(?P<name>[^/]+)", "get_policy"),
    ("DELETE", r"/regions/(?P<region>[^/]+)/resourcePolicies/(?P<name>[^/]+)", "delete_policy"),
    ("GET", r"/aggregated/resourcePolicies", "aggregated_policies"),
    ("GET", r"/regions/(?P<region>[^/]+)/operations/(?P<op>[^/]+)", "poll_operation"),
    ("POST", r"/regions/(?P<region>[^/]+)/operations/(?P<op>[^/]+)/wait", "poll_operation"),
]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class _Fault:
    code: str
    message: str
    http_status: int | None = None  # None: a DONE operation with only error.errors
    details: list[dict] = field(default_factory=list)
    times: int | None = 1  # None: forever
    after: int = 0  # let this many matching calls through first


class _HttpError(Exception):
    def __init__(self, status: int, message: str, reason: str):
        self.status, self.message, self.reason = status, message, reason


class FakeGce:
    def __init__(self, project: str = "test-project", boot_polls: int = 1, op_polls: int = 1, first_host: int = 2):
        self.project = project
        self.boot_polls = boot_polls  # GETs before an instance reports RUNNING (and its natIP)
        self.op_polls = op_polls  # polls/waits before an operation reports DONE
        self.instances: dict[tuple[str, str], dict] = {}
        self.firewalls: dict[str, dict] = {}
        self.policies: dict[tuple[str, str], dict] = {}  # (region, name) -> resource policy
        self.operations: dict[str, dict] = {}
        self.region_quotas: dict[str, dict[str, tuple[float, float]]] = {}  # region -> metric -> (limit, usage)
        self.images = {"pytorch-2-9-cu129-ubuntu-2204-nvidia-580": "pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v20260416"}
        self.requests: list[Request] = []
        self._insert_faults: dict[str, list[_Fault]] = {}
        self._op_faults: dict[str, list[_Fault]] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1000)
        self._host = itertools.count(first_host)  # natIP 127.0.0.<n>; 127.0.0.1 is the fake itself
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> "FakeGce":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_DELETE = do_PATCH = do_GET

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeGce":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- knobs ------------------------------------------------------------------------------

    def fail_insert(self, zone: str, code: str = "ZONE_RESOURCE_POOL_EXHAUSTED", message: str | None = None,
                    http_status: int | None = None, times: int | None = 1, details: list[dict] | None = None,
                    after: int = 0) -> None:
        """The next `times` instance inserts in `zone` fail with `code` (None: every one), once
        `after` inserts there have gone through (after=1: "the zone has one machine").

        http_status None: the insert is accepted and its operation ends DONE with only error.errors
        (how Compute Engine reports stockouts); else the insert call itself gets that HTTP error.
        """
        message = message or _DEFAULT_MESSAGES.get(code, code).format(zone=zone, project=self.project)
        with self._lock:
            self._insert_faults.setdefault(zone, []).append(_Fault(code, message, http_status, details or [], times, after))

    def stockout(self, zone: str, code: str = "ZONE_RESOURCE_POOL_EXHAUSTED", http: bool = False, times: int | None = None,
                 after: int = 0) -> None:
        self.fail_insert(zone, code, http_status=503 if http else None, times=times, after=after)

    def quota_exceeded(self, zone: str, metric: str = "NVIDIA_T4_GPUS", http: bool = False, times: int | None = None) -> None:
        region = zone.rsplit("-", 1)[0]
        message = f"Quota '{metric}' exceeded.  Limit: 0.0 in region {region}."
        details = [{"quotaInfo": {"metricName": f"compute.googleapis.com/{metric.lower()}", "limitName": f"{metric}-per-project-region",
                                  "dimensions": {"region": region}, "limit": 0}}]
        self.fail_insert(zone, "QUOTA_EXCEEDED", message, 403 if http else None, times, [] if http else details)

    def fail_next_operation(self, kind: str, code: str = "INTERNAL_ERROR", message: str = "operation failed") -> None:
        """The next operation of `kind` ("insert", "delete", "firewall-insert", "firewall-delete")
        ends DONE with only error.errors, and has no effect."""
        with self._lock:
            self._op_faults.setdefault(kind, []).append(_Fault(code, message))

    def preempt(self, name: str, delete: bool = True) -> None:
        """What Compute Engine does to a spot VM: gone (DELETE action) or TERMINATED (STOP)."""
        with self._lock:
            key = self._key(name)
            if delete:
                del self.instances[key]
            else:
                self.instances[key]["status"] = "TERMINATED"

    # --- read-backs -------------------------------------------------------------------------

    def _key(self, name: str) -> tuple[str, str]:
        with self._lock:
            keys = [k for k in self.instances if k[1] == name]
        assert len(keys) == 1, f"{len(keys)} instances named {name}"
        return keys[0]

    def instance(self, name: str) -> dict:
        return self.instances[self._key(name)]

    def metadata(self, name: str) -> dict[str, str]:
        return {i["key"]: i.get("value", "") for i in self.instance(name).get("metadata", {}).get("items", [])}

    def host_key_pem(self, name: str) -> str:
        """The private host key the boot script installs (for a local sshd to present)."""
        m = _HOST_KEY.search(self.metadata(name).get("startup-script", ""))
        assert m, "no OpenSSH private key in the startup-script"
        return m.group(0) + "\n"

    def authorized_keys(self, name: str) -> list[str]:
        """Public keys from the instance's ssh-keys metadata ("user:key" lines), keys only."""
        lines = self.metadata(name).get("ssh-keys", "").splitlines()
        return [line.split(":", 1)[1].strip() for line in lines if ":" in line]

    def nat_ip(self, name: str) -> str:
        return self.instance(name)["networkInterfaces"][0]["accessConfigs"][0]["natIP"]

    def inserted(self, kind: str = "instances") -> list[dict]:
        """Bodies of every insert request of `kind` ("instances" or "firewalls"), in order."""
        return [r.body for r in self.requests if r.method == "POST" and r.path.endswith(f"/{kind}")]

    def leftovers(self) -> list[str]:
        with self._lock:
            return ([f"instance {z}/{n}" for z, n in self.instances] + [f"firewall {n}" for n in self.firewalls]
                    + [f"resource-policy {r}/{n}" for r, n in self.policies])

    # --- HTTP -------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw.strip() else None
        query = parse_qs(parsed.query)
        with self._lock:
            self.requests.append(Request(h.command, parsed.path, query, body, dict(h.headers)))
        status, reply = 404, _error(404, f"The resource '{parsed.path}' was not found", "notFound")
        scoped = re.fullmatch(r"/compute/v1/projects/(?P<project>[^/]+)(?P<rest>/.*)", parsed.path)
        if scoped:
            project, rest = scoped.group("project"), scoped.group("rest")
            for method, pattern, handler in _ROUTES:
                m = re.fullmatch(pattern, rest)
                # public images live in their own project (deeplearning-platform-release)
                if m and method == h.command and (project == self.project or handler == "image_from_family"):
                    try:
                        with self._lock:
                            status, reply = 200, getattr(self, "_" + handler)(body=body, query=query, **m.groupdict())
                    except _HttpError as e:
                        status, reply = e.status, _error(e.status, e.message, e.reason)
                    break
        data = json.dumps(reply).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _get_region(self, region: str, **_: Any) -> dict:
        quotas = self.region_quotas.get(region, {})
        return {"name": region, "status": "UP", "selfLink": self._link(f"regions/{region}"),
                "quotas": [{"metric": m, "limit": lim, "usage": use} for m, (lim, use) in quotas.items()]}

    def _link(self, path: str) -> str:
        return f"{self.url}/compute/v1/projects/{self.project}/{path}"

    def _operation(self, kind: str, target: str, zone: str | None, effect: Any = None, fault: _Fault | None = None,
                   region: str | None = None) -> dict:
        """A RUNNING operation; `effect` runs when it turns DONE (unless it fails)."""
        name = f"operation-{next(self._ids)}"
        fault = fault or self._take(self._op_faults.get(kind, []))
        scope = f"zones/{zone}" if zone else f"regions/{region}" if region else "global"
        op = {"kind": "compute#operation", "id": str(next(self._ids)), "name": name, "operationType": kind,
              "status": "RUNNING", "progress": 0, "targetLink": self._link(target),
              "selfLink": self._link(f"{scope}/operations/{name}"), "_polls": 0, "_effect": effect, "_fault": fault}
        if zone:
            op["zone"] = self._link(f"zones/{zone}")
        self.operations[name] = op
        return self._public(op)

    def _poll_operation(self, op: str, zone: str | None = None, **_: Any) -> dict:
        o = self.operations.get(op)
        if o is None:
            raise _HttpError(404, f"The resource 'operations/{op}' was not found", "notFound")
        if o["status"] != "DONE":
            o["_polls"] += 1
            if o["_polls"] >= self.op_polls:
                o["status"], o["progress"] = "DONE", 100
                fault = o["_fault"]
                if fault:
                    o["error"] = {"errors": [{"code": fault.code, "message": fault.message,
                                              **({"errorDetails": fault.details} if fault.details else {})}]}
                elif o["_effect"]:
                    o["_effect"]()
        return self._public(o)

    @staticmethod
    def _public(op: dict) -> dict:
        return {k: v for k, v in op.items() if not k.startswith("_")}

    @staticmethod
    def _take(faults: list[_Fault]) -> _Fault | None:
        if not faults:
            return None
        fault = faults[0]
        if fault.after > 0:
            fault.after -= 1
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                faults.pop(0)
        return fault

    # instances

    def _insert_instance(self, zone: str, body: dict, **_: Any) -> dict:
        name = body["name"]
        if (zone, name) in self.instances:
            raise _HttpError(409, f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' already exists", "alreadyExists")
        for url in body.get("resourcePolicies", []):
            self._check_policy(url, zone)
        fault = self._take(self._insert_faults.get(zone, []))
        if fault and fault.http_status:
            raise _HttpError(fault.http_status, fault.message, fault.code if fault.code != "QUOTA_EXCEEDED" else "quotaExceeded")

        def create() -> None:
            n = next(self._host)
            inst = json.loads(json.dumps(body))
            inst.update(kind="compute#instance", id=str(next(self._ids)), zone=self._link(f"zones/{zone}"),
                        status="PROVISIONING", selfLink=self._link(f"zones/{zone}/instances/{name}"), _gets=0)
            for nic in inst.setdefault("networkInterfaces", [{}]):
                nic["networkIP"] = f"127.0.1.{n}"
                for ac in nic.setdefault("accessConfigs", [{}]):
                    ac["_natIP"] = f"127.0.0.{n}"  # shown once RUNNING
            self.instances[(zone, name)] = inst

        return self._operation("insert", f"zones/{zone}/instances/{name}", zone, create, fault)

    def _get_instance(self, zone: str, name: str, **_: Any) -> dict:
        inst = self.instances.get((zone, name))
        if inst is None:
            raise _HttpError(404, f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' was not found", "notFound")
        inst["_gets"] += 1
        if inst["status"] in ("PROVISIONING", "STAGING") and inst["_gets"] >= self.boot_polls:
            inst["status"] = "RUNNING"
            for nic in inst["networkInterfaces"]:
                for ac in nic["accessConfigs"]:
                    ac["natIP"] = ac["_natIP"]
        elif inst["status"] == "PROVISIONING":
            inst["status"] = "STAGING"
        return _visible(inst)

    def _matching(self, query: dict) -> list[tuple[str, dict]]:
        flt = (query.get("filter") or [""])[0]
        eq, has = _LABEL_EQ.findall(flt), _LABEL_HAS.findall(flt)
        out = []
        for (zone, _), inst in self.instances.items():
            labels = inst.get("labels", {})
            if all(labels.get(k) == v for k, v in eq) and all(k in labels for k in has):
                out.append((zone, _visible(inst)))
        return out

    def _list_instances(self, zone: str, query: dict, **_: Any) -> dict:
        return {"kind": "compute#instanceList", "items": [i for z, i in self._matching(query) if z == zone]}

    def _aggregated_instances(self, query: dict, **_: Any) -> dict:
        items: dict[str, dict] = {}
        for zone, inst in self._matching(query):
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(inst)
        return {"kind": "compute#instanceAggregatedList", "items": items}

    def _delete_instance(self, zone: str, name: str, **_: Any) -> dict:
        if (zone, name) not in self.instances:
            raise _HttpError(404, f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' was not found", "notFound")
        self.instances[(zone, name)]["status"] = "STOPPING"
        return self._operation("delete", f"zones/{zone}/instances/{name}", zone,
                               lambda: self.instances.pop((zone, name), None))

    # firewalls and images

    def _insert_firewall(self, body: dict, **_: Any) -> dict:
        name = body["name"]
        if name in self.firewalls:
            raise _HttpError(409, f"The resource 'projects/{self.project}/global/firewalls/{name}' already exists", "alreadyExists")
        rule = dict(body, kind="compute#firewall", id=str(next(self._ids)), selfLink=self._link(f"global/firewalls/{name}"))
        return self._operation("firewall-insert", f"global/firewalls/{name}", None,
                               lambda: self.firewalls.__setitem__(name, rule))

    def _get_firewall(self, name: str, **_: Any) -> dict:
        if name not in self.firewalls:
            raise _HttpError(404, f"The resource 'projects/{self.project}/global/firewalls/{name}' was not found", "notFound")
        return self.firewalls[name]

    def _list_firewalls(self, **_: Any) -> dict:
        return {"kind": "compute#firewallList", "items": list(self.firewalls.values())}

    def _delete_firewall(self, name: str, **_: Any) -> dict:
        self._get_firewall(name)
        return self._operation("firewall-delete", f"global/firewalls/{name}", None, lambda: self.firewalls.pop(name, None))

    # resource policies (compact placement)

    def _insert_policy(self, region: str, body: dict, **_: Any) -> dict:
        name = body["name"]
        if (region, name) in self.policies:
            raise _HttpError(409, f"The resource 'projects/{self.project}/regions/{region}/resourcePolicies/{name}' already exists",
                             "alreadyExists")
        pol = dict(body, kind="compute#resourcePolicy", id=str(next(self._ids)), status="READY",
                   region=self._link(f"regions/{region}"), selfLink=self._link(f"regions/{region}/resourcePolicies/{name}"))
        return self._operation("policy-insert", f"regions/{region}/resourcePolicies/{name}", None,
                               lambda: self.policies.__setitem__((region, name), pol), region=region)

    def _get_policy(self, region: str, name: str, **_: Any) -> dict:
        if (region, name) not in self.policies:
            raise _HttpError(404, f"The resource 'projects/{self.project}/regions/{region}/resourcePolicies/{name}' was not found",
                             "notFound")
        return self.policies[(region, name)]

    def _members(self, region: str, name: str) -> list[tuple[str, str]]:
        suffix = f"regions/{region}/resourcePolicies/{name}"
        return [key for key, inst in self.instances.items() if any(u.endswith(suffix) for u in inst.get("resourcePolicies", []))]

    def _check_policy(self, url: str, zone: str) -> None:
        """As Compute Engine: the policy must exist in the zone's region, and a compact one keeps to one zone."""
        m = re.search(r"regions/([^/]+)/resourcePolicies/([^/]+)$", url)
        if not m or (m.group(1), m.group(2)) not in self.policies or m.group(1) != zone.rsplit("-", 1)[0]:
            raise _HttpError(400, f"Invalid value for field 'resource.resourcePolicies[0]': '{url}'.", "invalid")
        zones = {z for z, _ in self._members(m.group(1), m.group(2))}
        if zones - {zone}:
            raise _HttpError(400, f"Compact placement policy {m.group(2)} holds instances in {sorted(zones)[0]}", "invalid")

    def _delete_policy(self, region: str, name: str, **_: Any) -> dict:
        self._get_policy(region, name)
        if self._members(region, name):
            raise _HttpError(400, f"The resource_policy resource '{name}' is already being used by "
                                  f"'{self._members(region, name)[0][1]}'", "resourceInUseByAnotherResource")
        return self._operation("policy-delete", f"regions/{region}/resourcePolicies/{name}", None,
                               lambda: self.policies.pop((region, name), None), region=region)

    def _aggregated_policies(self, **_: Any) -> dict:
        items: dict[str, dict] = {}
        for (region, _name), pol in self.policies.items():
            items.setdefault(f"regions/{region}", {"resourcePolicies": []})["resourcePolicies"].append(pol)
        return {"kind": "compute#resourcePolicyAggregatedList", "items": items}

    def _image_from_family(self, family: str, **_: Any) -> dict:
        if family not in self.images:
            raise _HttpError(404, f"The resource 'projects/{self.project}/global/images/family/{family}' was not found", "notFound")
        name = self.images[family]
        return {"kind": "compute#image", "name": name, "family": family, "status": "READY",
                "selfLink": self._link(f"global/images/{name}")}


_DEFAULT_MESSAGES = {
    "ZONE_RESOURCE_POOL_EXHAUSTED": "The zone 'projects/{project}/zones/{zone}' does not have enough resources "
                                    "available to fulfill the request.  Try a different zone, or try again later.",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": "The zone 'projects/{project}/zones/{zone}' does not have enough resources "
                                                 "available to fulfill the request. '(resource type:compute)'.",
    "UNSUPPORTED_OPERATION": "The selected machine type is not supported in zone {zone}.",
    "RESOURCE_NOT_FOUND": "The resource 'projects/{project}/zones/{zone}/acceleratorTypes/nvidia-tesla-t4' was not found",
}


def _visible(inst: dict) -> dict:
    """The instance as the API shows it (no private bookkeeping keys)."""
    out = {k: v for k, v in inst.items() if not k.startswith("_")}
    out["networkInterfaces"] = [
        dict(nic, accessConfigs=[{k: v for k, v in ac.items() if not k.startswith("_")} for ac in nic.get("accessConfigs", [])])
        for nic in inst.get("networkInterfaces", [])
    ]
    return out


def _error(status: int, message: str, reason: str) -> dict:
    return {"error": {"code": status, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}}
