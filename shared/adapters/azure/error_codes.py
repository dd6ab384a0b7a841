"""Azure Storage error codes the adapters share (blob, queue and table services)."""

from __future__ import annotations

#: codes meaning "you may not" (any of the three services): every Azure adapter maps them to StoreAccessError
ACCESS_CODES = frozenset(
    {
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "AuthorizationSourceIPMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch",
        "InsufficientAccountPermissions",
        "AccountIsDisabled",
        "KeyBasedAuthenticationNotPermitted",
        "Forbidden",
    }
)
