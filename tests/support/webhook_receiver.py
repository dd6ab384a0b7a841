"""A webhook receiver on 127.0.0.1 (http.server in a thread) that checks Lifeboat's signature
the way the docs tell receivers to (its own ``hmac`` code, not Lifeboat's) and records every
request. ``script`` holds the statuses to answer, in order (then 200); ``paths`` fixes the
status of some paths (not consuming the script)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    secret: str | None = None
    script: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    paths: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: recompute HMAC-SHA256(secret, timestamp + "." + body), compare in constant time."""
    timestamp = headers.get("x-lifeboat-timestamp", "")
    expected = (
        "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    )
    return bool(timestamp) and hmac.compare_digest(expected, headers.get("x-lifeboat-signature", ""))


class ReceiverServer:
    def __init__(self) -> None:
        state: dict[str, Receiver] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver = state["r"]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = receiver.secret is not None and verify(receiver.secret, headers, body)
                receiver.received.append(Received(self.path, headers, body, ok))
                if self.path in receiver.paths:
                    answer: int | tuple[int, dict[str, str]] = receiver.paths[self.path]
                else:
                    answer = receiver.script.pop(0) if receiver.script else 200
                status, extra = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.receiver = Receiver(url=f"http://127.0.0.1:{self.server.server_address[1]}/hook")
        state["r"] = self.receiver
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
