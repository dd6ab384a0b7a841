"""A stdlib HTTP server that turns each request into an API Gateway REST (v1) proxy event
and hands it to the powertools resolver, exactly as API Gateway would in AWS.

It also serves the web console's static files (when present) and refuses oversized
bodies before reading them. A resolver crash becomes a 502, as API Gateway answers.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("lifeboat.http")
MAX_BODY = 1 << 20
STAGE = "local"


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


def make_server(resolver: Any, host: str, port: int) -> ThreadingHTTPServer:
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

        def _handle(self) -> None:
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
                resp = resolver.resolve(event, _LambdaContext())
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
