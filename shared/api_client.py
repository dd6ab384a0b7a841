"""A typed client of the Lifeboat REST API (stdlib HTTP), used by the CLI and the node agent.

HTTP errors come back as the same error classes the server raised (by status), carrying
the server's message, so callers handle one error tree whether they run in-process or
over HTTP. Connection failures and 5xx are :class:`ServiceUnavailableError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from shared.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    LifeboatError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    TooManyRequestsError,
)

_BY_STATUS: dict[int, type[LifeboatError]] = {
    400: InvalidInputError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidInputError,
    422: InvalidInputError,
    429: TooManyRequestsError,
}


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # --- transport -----------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        raw = self._send(method, path, body, params=params, headers=headers, accept="application/json")
        return json.loads(raw) if raw else None

    def text(self, path: str, *, params: dict[str, Any] | None = None, accept: str = "text/html") -> str:
        """A GET whose answer is not JSON (e.g. an HTML report, a CSV download)."""
        return self._send("GET", path, None, params=params, headers=None, accept=accept).decode()

    def _send(
        self, method: str, path: str, body: Any, *, params: dict[str, Any] | None,
        headers: dict[str, str] | None, accept: str,
    ) -> bytes:  # fmt: skip
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data_in: bytes = resp.read()
                return data_in
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace")[:300] or exc.reason
            cls = _BY_STATUS.get(exc.code, ServiceUnavailableError if exc.code >= 500 else LifeboatError)
            fields: dict[str, Any] = {"status": exc.code}
            if exc.code == 429 and (exc.headers.get("Retry-After") or "").isdigit():
                fields["retry_after"] = int(exc.headers["Retry-After"])
            raise cls(f"{method} {path}: {message}", **fields) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise ServiceUnavailableError(f"cannot reach the Lifeboat API at {self.base_url}: {exc}") from exc

    def pages(
        self, path: str, params: dict[str, Any] | None = None, *, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Every item of a paginated listing."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.request("GET", path, params={**(params or {}), "limit": limit, "cursor": cursor})
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    # --- users -----------------------------------------------------------------------------
    def login(self, username: str, password: str) -> str:
        answer = self.request("POST", "/auth/login", {"username": username, "password": password})
        self.token = answer["access_token"]
        return self.token

    # --- resources ---------------------------------------------------------------------------
    def create_site(self, **site: Any) -> dict[str, Any]:
        return self.request("POST", "/sites", site)

    def create_plan(self, **plan: Any) -> dict[str, Any]:
        return self.request("POST", "/plans", plan)

    def plan_action(
        self, plan_id: str, action: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", f"/plans/{plan_id}/{action}", body, headers=headers)

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        return self.pages("/jobs", filters)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/jobs/{job_id}")

    def points(self, **filters: Any) -> list[dict[str, Any]]:
        return self.pages("/points", filters)

    # --- node work -----------------------------------------------------------------------------
    def register_node(self, **node: Any) -> dict[str, Any]:
        return self.request("POST", "/nodes/register", node)

    def rotate_credential(self, node_id: str, *, grace_seconds: int = 300) -> dict[str, Any]:
        """The node's new credential (``token_id``, ``secret``, ``created_at``), answered once."""
        return self.request("POST", f"/nodes/{node_id}/credentials/rotate", {"grace_seconds": grace_seconds})

    # --- node administration ---------------------------------------------------------------------
    def create_enrollment_token(self, name: str, *, ttl_days: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "roles": ["enrollment"]}
        if ttl_days:
            body["ttl_days"] = ttl_days
        return self.request("POST", "/tokens", body)

    def reissue_node_credential(self, node_id: str, *, grace_seconds: int = 300) -> dict[str, Any]:
        return self.request("POST", f"/nodes/{node_id}/credentials", {"grace_seconds": grace_seconds})

    def revoke_node(self, node_id: str) -> dict[str, Any]:
        return self.request("POST", f"/nodes/{node_id}/revoke")

    def heartbeat(self, node_id: str, running_jobs: int) -> dict[str, Any]:
        return self.request("POST", f"/nodes/{node_id}/heartbeat", {"running_jobs": running_jobs})

    def claim(self, node_id: str) -> dict[str, Any] | None:
        return self.request("POST", f"/nodes/{node_id}/claim")

    def node_sources(self, node_id: str) -> list[dict[str, Any]]:
        """The vmware sites (their vCenter connections, no secrets) this node may read."""
        return list(self.request("GET", f"/nodes/{node_id}/sources")["items"])

    def source_credentials(self, node_id: str, site_id: str) -> str:
        """The password of a vmware site's vCenter, for this node (audited)."""
        return str(self.request("POST", f"/nodes/{node_id}/sources/{site_id}/credentials")["password"])

    def post_inventory(
        self, node_id: str, job_id: str, vms: list[Any], objects: list[Any], *, batch: int = 200
    ) -> dict[str, Any]:
        """A complete discovery for the inventory-sync job this node runs, in batches that
        fit the API's body limit; the last one says ``final`` (what was not seen is missing)."""
        items = [("vms", v) for v in vms] + [("objects", o) for o in objects]
        answer: dict[str, Any] = {}
        for start in range(0, max(len(items), 1), batch):
            chunk = items[start : start + batch]
            body: dict[str, Any] = {"job_id": job_id, "final": start + batch >= len(items),
                                    "vms": [i.model_dump(mode="json") for k, i in chunk if k == "vms"],
                                    "objects": [i.model_dump(mode="json") for k, i in chunk if k == "objects"]}  # fmt: skip
            answer = self.request("POST", f"/nodes/{node_id}/inventory", body)
        return answer

    def progress(self, job_id: str, **progress: Any) -> dict[str, Any]:
        return self.request("POST", f"/jobs/{job_id}/progress", progress)

    def complete(
        self, job_id: str, state: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> dict[str, Any]:
        return self.request(
            "POST", f"/jobs/{job_id}/complete", {"state": state, "result": result or {}, "error": error}
        )
