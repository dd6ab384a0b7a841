"""Entra ID users through App Service Authentication ("Easy Auth"), as authorizer claims.

When App Service Authentication is enabled, the platform validates the caller's Entra ID
session or token and passes the principal to the app in ``X-MS-CLIENT-PRINCIPAL`` (base64
JSON: ``auth_typ``, ``name_typ``, ``role_typ``, ``claims: [{typ, val}]``), stripping any
such header a client sent. Those headers are trustworthy **only** then: without the
platform in front, anyone can send them. So they are honoured only when both

* ``LIFEBOAT_ENTRA_AUTH=true`` (the operator opted in; Bicep sets it with ``entraClientId``), and
* ``WEBSITE_AUTH_ENABLED=True`` (set by the platform when App Service Authentication is on);

opting in while the platform's authentication is off is a configuration error (503), and
in every other case the headers are removed from the event before the API sees it.

Roles: Entra *app roles* whose value is a Lifeboat role (``admin``, ``operator``,
``viewer``, ``node``; case-insensitive, optionally prefixed ``Lifeboat.``), plus
``LIFEBOAT_ENTRA_ROLE_MAP``, a JSON object mapping app-role values or group object ids to
Lifeboat roles. Anything else grants nothing (the API then answers 403).

The result is the claims dict the API reads from ``requestContext.authorizer.claims``
(the Cognito shape :func:`shared.services.auth.principal_from_claims` understands:
``cognito:groups`` carries the roles, ``username`` the subject), so the API and its RBAC
are unchanged. Callers without the header (nodes with API tokens, users with Lifeboat
JWTs) go on to the API's own bearer authentication.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from shared.domain.identity import Role
from shared.errors import AuthenticationError, ServiceUnavailableError

PRINCIPAL_HEADER = "x-ms-client-principal"
_ROLE_TYPES = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_NAME_TYPES = (
    "preferred_username",
    "name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
)
_OID_TYPES = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
_GROUP_TYPES = ("groups",)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def trusted(env: Mapping[str, str]) -> bool:
    """Whether ``X-MS-CLIENT-PRINCIPAL`` may be believed (see the module docstring)."""
    if not _truthy(env.get("LIFEBOAT_ENTRA_AUTH")):
        return False
    if not _truthy(env.get("WEBSITE_AUTH_ENABLED")):
        raise ServiceUnavailableError(
            "LIFEBOAT_ENTRA_AUTH is set but App Service Authentication is off "
            "(WEBSITE_AUTH_ENABLED): X-MS-CLIENT-PRINCIPAL could be forged, so no request is served"
        )
    return True


def _role_map(env: Mapping[str, str]) -> dict[str, Role]:
    raw = env.get("LIFEBOAT_ENTRA_ROLE_MAP") or "{}"
    try:
        mapping = json.loads(raw)
        return {str(k).lower(): Role(str(v).lower()) for k, v in mapping.items()}
    except (ValueError, AttributeError) as exc:
        raise ServiceUnavailableError(
            f"LIFEBOAT_ENTRA_ROLE_MAP is not a JSON object of roles: {exc}"
        ) from exc


def _role_of(value: str, mapping: dict[str, Role]) -> Role | None:
    key = value.strip().lower()
    if key in mapping:
        return mapping[key]
    key = key.removeprefix("lifeboat.")
    return Role(key) if key in Role._value2member_map_ else None


def decode_principal(header: str) -> dict[str, Any]:
    """The JSON of an ``X-MS-CLIENT-PRINCIPAL`` value; :class:`AuthenticationError` if malformed."""
    try:
        data = json.loads(base64.b64decode(header.strip(), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise AuthenticationError("malformed X-MS-CLIENT-PRINCIPAL header") from exc
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise AuthenticationError("malformed X-MS-CLIENT-PRINCIPAL header")
    return data


def claims_from_principal(principal: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Authorizer claims (Cognito shape) for a decoded principal."""
    mapping = _role_map(env)
    role_types = {*_ROLE_TYPES, str(principal.get("role_typ") or "roles")}
    name_types = (str(principal.get("name_typ") or ""), *_NAME_TYPES)
    values: dict[str, list[str]] = {}
    for claim in principal["claims"]:
        if isinstance(claim, dict):
            values.setdefault(str(claim.get("typ", "")), []).append(str(claim.get("val", "")))
    roles: list[Role] = []
    for typ in (*role_types, *_GROUP_TYPES):
        for value in values.get(typ, []):
            role = _role_of(value, mapping) if typ not in _GROUP_TYPES else mapping.get(value.lower())
            if role is not None and role not in roles:
                roles.append(role)
    name = next((values[t][0] for t in name_types if values.get(t)), "")
    oid = next((values[t][0] for t in _OID_TYPES if values.get(t)), "")
    if not (name or oid):
        raise AuthenticationError("the Entra principal carries no name or object id")
    return {"sub": oid or name, "username": f"entra:{name or oid}", "cognito:groups": " ".join(roles)}


def authorize_event(event: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Put the Entra principal's claims into ``event`` (trusted) or strip the headers (not)."""
    headers = event.get("headers") or {}
    principal_headers = [k for k in headers if k.lower().startswith(PRINCIPAL_HEADER)]
    header = next((headers[k] for k in principal_headers if k.lower() == PRINCIPAL_HEADER), None)
    if trusted(env):  # checked on every request: a misconfiguration is never silent
        if not header:
            return event
        claims = claims_from_principal(decode_principal(header), env)
        event["requestContext"]["authorizer"] = {"claims": claims}
        return event
    for key in principal_headers:
        del headers[key]
        event.get("multiValueHeaders", {}).pop(key, None)
    return event
