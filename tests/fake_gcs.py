"""A fake Cloud Storage JSON API endpoint for tests, driven by the real google-cloud-storage client.

Stdlib (+ google-crc32c, which google-cloud-storage brings) only: a ThreadingHTTPServer on
127.0.0.1 at a free port, objects in memory. It serves what the client uses for a checkpoint
store and nothing more:

    GET  /storage/v1/b/BUCKET                           bucket get (404 when absent)
    GET  /storage/v1/b/BUCKET/o/NAME                    object metadata (404 when absent)
    GET  /download/storage/v1/b/BUCKET/o/NAME?alt=media object bytes (x-goog-hash: crc32c, md5)
    POST /upload/storage/v1/b/BUCKET/o?uploadType=multipart   metadata + bytes, one request
    POST /upload/storage/v1/b/BUCKET/o?uploadType=resumable   a session (Location), then
    PUT  /upload/storage/v1/b/BUCKET/o?uploadType=resumable&upload_id=N  chunks (Content-Range;
         308 + Range until the last one; the object appears only once complete)

Point the client at it with ``STORAGE_EMULATOR_HOST=fake.url`` (the client then uses anonymous
credentials). ``requests`` records (method, path, uploadType) for read-backs.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlparse

import google_crc32c

_BUCKET = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)$")
_OBJECT = re.compile(r"^/(?P<kind>storage|download/storage)/v1/b/(?P<bucket>[^/]+)/o/(?P<name>.+)$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
_RANGE = re.compile(r"^bytes (?:(?P<first>\d+)-(?P<last>\d+)|\*)/(?P<total>\d+|\*)$")


def _crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class FakeGcs:
    """In-memory buckets -> {object name: bytes}; create buckets with ``create_bucket``."""

    def __init__(self):
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.generations: dict[tuple[str, str], int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._sessions: dict[str, dict] = {}  # resumable upload id -> {bucket, name, data}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def create_bucket(self, name: str) -> None:
        self.buckets.setdefault(name, {})

    def start(self) -> "FakeGcs":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                fake._handle(self)

            def do_POST(self):
                fake._handle(self)

            def do_PUT(self):
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-gcs").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- the API ---

    def _resource(self, bucket: str, name: str) -> dict:
        data = self.buckets[bucket][name]
        return {"kind": "storage#object", "bucket": bucket, "name": name, "id": f"{bucket}/{name}",
                "size": str(len(data)), "generation": str(self.generations[(bucket, name)]),
                "crc32c": _crc32c(data), "md5Hash": _md5(data), "contentType": "application/octet-stream"}

    def _store(self, bucket: str, name: str, data: bytes) -> dict:
        with self._lock:  # visible only now, whole: as Cloud Storage does
            self.buckets[bucket][name] = data
            self.generations[(bucket, name)] = self.generations.get((bucket, name), 0) + 1
            return self._resource(bucket, name)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        self.requests.append((h.command, url.path, query.get("uploadType")))
        try:
            status, headers, payload = self._route(h.command, url.path, query, h.headers, body)
        except KeyError as exc:
            status, headers, payload = 404, {}, _error(404, f"No such object or bucket: {exc.args[0]}")
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _route(self, method, path, query, headers, body):
        if method == "GET" and (m := _BUCKET.match(path)):
            bucket = unquote(m["bucket"])
            if bucket not in self.buckets:
                raise KeyError(bucket)
            return 200, {}, {"kind": "storage#bucket", "name": bucket, "id": bucket}
        if method == "GET" and (m := _OBJECT.match(path)):
            bucket, name = unquote(m["bucket"]), unquote(m["name"])
            if name not in self.buckets.get(bucket, {}):
                raise KeyError(f"{bucket}/{name}")
            if m["kind"] == "download/storage" or query.get("alt") == "media":
                data = self.buckets[bucket][name]
                return 200, {"Content-Type": "application/octet-stream",
                             "x-goog-generation": str(self.generations[(bucket, name)]),
                             "x-goog-hash": f"crc32c={_crc32c(data)},md5={_md5(data)}"}, data
            return 200, {}, self._resource(bucket, name)
        if (m := _UPLOAD.match(path)) and method in ("POST", "PUT"):
            bucket = unquote(m["bucket"])
            if bucket not in self.buckets:
                raise KeyError(bucket)
            kind = query.get("uploadType")
            if method == "POST" and kind == "multipart":
                meta, data = _multipart(headers["Content-Type"], body)
                return 200, {}, self._store(bucket, meta.get("name") or query["name"], data)
            if method == "POST" and kind == "resumable":
                name = (json.loads(body) if body else {}).get("name") or query["name"]
                upload_id = str(next(self._ids))
                self._sessions[upload_id] = {"bucket": bucket, "name": name, "data": b""}
                where = f"{self.url}{path}?uploadType=resumable&upload_id={upload_id}&name={quote(name)}"
                return 200, {"Location": where}, b""
            if method == "PUT" and kind == "resumable":
                return self._chunk(self._sessions[query["upload_id"]], headers.get("Content-Range", ""), body)
        return 400, {}, _error(400, f"fake_gcs does not serve {method} {path}")

    def _chunk(self, session: dict, content_range: str, body: bytes):
        """One PUT of a resumable upload: append the bytes at their offset; done once the total is in."""
        m = _RANGE.match(content_range.strip())
        if not m:
            return 400, {}, _error(400, f"bad Content-Range {content_range!r}")
        if m["first"] is not None:
            if int(m["first"]) != len(session["data"]):
                return 400, {}, _error(400, f"chunk at {m['first']}, expected {len(session['data'])}")
            session["data"] += body
        total = m["total"]
        if total != "*" and len(session["data"]) == int(total):
            return 200, {}, self._store(session["bucket"], session["name"], session["data"])
        held = len(session["data"])
        return 308, ({"Range": f"bytes=0-{held - 1}"} if held else {}), b""


def _multipart(content_type: str, body: bytes) -> tuple[dict, bytes]:
    """(metadata, bytes) of a multipart/related upload body."""
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    meta_part, data_part = list(msg.iter_parts())
    return json.loads(meta_part.get_payload(decode=True)), data_part.get_payload(decode=True)


def _error(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message, "errors": [{"message": message, "reason": "notFound"
                                                                     if code == 404 else "invalid"}]}}
