"""A stdlib HTTP server that turns each request into an API Gateway REST (v1) proxy event
and hands it to the powertools resolver, exactly as API Gateway would in AWS.

It also serves the web console's static files (when present) and refuses oversized
bodies before reading them. A resolver crash becomes a 502, as API Gateway answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("lifeboat.http")
MAX_BODY = 1 << 20
STAGE = "local"
CONSOLE_PREFIX = "/console/"
#: the web console's static files (package data of functions.console)
CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
#: headers on every console file: no inline script or style, same-origin API calls only
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # no build step, no hashed names: revalidate (ETag) every time
}


class StaticFiles:
    """The console's files, by an allow-list made once at start-up: a request names one of
    these relative paths or gets a 404, so no path (``..``, encoded or not) leaves the folder."""

    def __init__(self, root: Path) -> None:
        self.files: dict[str, Path] = {}
        if root.is_dir():
            for f in sorted(root.rglob("*")):
                if f.is_file() and f.suffix in _TYPES and not f.is_symlink():
                    self.files[f.relative_to(root).as_posix()] = f

    def get(self, rel: str) -> tuple[bytes, str, str] | None:
        f = self.files.get(rel or "index.html")
        if f is None:
            return None
        data = f.read_bytes()
        return data, _TYPES[f.suffix], '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


class _LambdaContext:
    function_name = "lifeboat-embedded"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:lifeboat-embedded"
    aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def to_event(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, client_ip: str
) -> dict[str, Any]:
    """The API Gateway REST proxy event for one HTTP request (path decoded, like API Gateway)."""
    url = urlsplit(raw_path)
    path = unquote(url.path)
    qs = parse_qs(url.query, keep_blank_values=True)
    text = body.decode("utf-8", "replace") if body else None
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in qs.items()} or None,
        "multiValueQueryStringParameters": qs or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "requestId": uuid.uuid4().hex,
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": client_ip},
            "accountId": "000000000000",
            "apiId": "embedded",
        },
        "body": text,
        "isBase64Encoded": False,
    }


def make_server(
    resolver: Any, host: str, port: int, *, console_dir: Path | None = CONSOLE_DIR
) -> ThreadingHTTPServer:
    static = StaticFiles(console_dir) if console_dir is not None else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lifeboat"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.client_address[0], *args)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _problem(self, status: int, code: str, message: str) -> None:
            body = json.dumps(
                {"error": {"code": code, "message": message, "request_id": "", "details": None}}
            )
            self._send(status, {"Content-Type": "application/json"}, body.encode())

        def _console(self, path: str) -> bool:
            """Serve ``/`` (a redirect) and ``/console/...``; False for every other path."""
            if static is None or not static.files:
                return False
            if path == "/":
                if self.command in ("GET", "HEAD"):
                    self._send(302, {"Location": CONSOLE_PREFIX, "Cache-Control": "no-cache"}, b"")
                    return True
                return False
            if path != CONSOLE_PREFIX.rstrip("/") and not path.startswith(CONSOLE_PREFIX):
                return False
            if self.command not in ("GET", "HEAD"):
                self._problem(405, "MethodNotAllowed", "the console's files are read-only (GET, HEAD)")
                return True
            if path == CONSOLE_PREFIX.rstrip("/"):
                self._send(301, {"Location": CONSOLE_PREFIX}, b"")
                return True
            found = static.get(path[len(CONSOLE_PREFIX) :])
            if found is None:
                self._problem(404, "NotFound", f"no console file {path}")
                return True
            data, content_type, etag = found
            headers = {**CONSOLE_HEADERS, "Content-Type": content_type, "ETag": etag}
            if self.headers.get("If-None-Match") == etag:
                self._send(304, headers, b"")
            else:
                self._send(200, headers, data)
            return True

        def _handle(self) -> None:
            if self._console(unquote(urlsplit(self.path).path)):
                return None
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self._problem(400, "Validation", "invalid Content-Length")
            if length > MAX_BODY:
                self.close_connection = True
                return self._problem(413, "PayloadTooLarge", f"request body larger than {MAX_BODY} bytes")
            raw = self.rfile.read(length) if length else b""
            event = to_event(self.command, self.path, dict(self.headers.items()), raw, self.client_address[0])
            try:
                resp = resolver.resolve(event, _LambdaContext())  # serialises dispatch itself
            except Exception:  # a Lambda crash: API Gateway answers 502
                log.exception("resolver crashed on %s %s", self.command, event["path"])
                return self._problem(502, "Internal", "internal server error")
            out = resp.get("body") or ""
            data = base64.b64decode(out) if resp.get("isBase64Encoded") else out.encode()
            headers = {k: v for k, v in (resp.get("headers") or {}).items()}
            for k, vs in (resp.get("multiValueHeaders") or {}).items():
                headers[k] = ", ".join(vs)
            self._send(int(resp["statusCode"]), headers, data)

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):
                return self._handle
            raise AttributeError(name)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return thread
