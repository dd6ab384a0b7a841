"""ARM errors as the compute port's errors: ``InvalidInputError`` or ``TargetError`` with ARM's
``code``, the HTTP ``status`` and ``transient`` (worth retrying the same call)."""

from __future__ import annotations

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.errors import InvalidInputError, TargetError

#: ARM codes of a request that is wrong as sent (retrying the same call cannot help)
INVALID_CODES = frozenset({
    "InvalidParameter", "InvalidResourceName", "InvalidResourceReference", "InvalidTag",
    "LinkedInvalidPropertyId", "ResourceGroupNotFound", "LocationNotAvailableForResourceType",
    "PropertyChangeNotAllowed", "PrivateIPAddressNotInSubnet", "PrivateIPAddressIsReserved",
    "PrivateIPAddressInUse", "SubnetIsFull", "InvalidRequestFormat", "BadRequest",
    "InvalidResourceType", "BootDiagnosticsDisabled", "SkuNotAvailable", "InvalidApiVersionParameter",
    "MissingApiVersionParameter", "NetcfgInvalidSubnet", "InvalidAddressPrefix",
})  # fmt: skip
#: ARM codes of a resource still in use (the port's contract: TargetError, as cleanup order matters)
IN_USE_CODES = frozenset({"NicInUse", "OperationNotAllowed", "InUseSubnetCannotBeDeleted"})
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset({"TooManyRequests", "InternalServerError", "RetryableError", "OperationTimedOut"})


def arm_error(exc: Exception, doing: str) -> InvalidInputError | TargetError:
    """The port's error for an SDK error (``code`` = ARM's error code, ``transient``)."""
    code, status = _code_and_status(exc)
    transient = (
        isinstance(exc, ServiceRequestError | ServiceResponseError)
        or status in TRANSIENT_STATUS
        or code in TRANSIENT_CODES
    )
    message = f"{doing}: {code}: {_message(exc)}" if code else f"{doing}: {_message(exc)}"
    if code not in IN_USE_CODES and (code in INVALID_CODES or (status == 400 and not transient)):
        return InvalidInputError(message, code=code or "BadRequest", transient=False, status=status)
    return TargetError(message, code=code or type(exc).__name__, transient=transient, status=status)


def _code_and_status(exc: Exception) -> tuple[str | None, int | None]:
    if not isinstance(exc, HttpResponseError):
        return None, None
    status = exc.status_code
    code = getattr(exc.error, "code", None) if exc.error is not None else None
    if isinstance(exc, ResourceNotFoundError) and not code:
        code = "NotFound"
    return code, status


def _message(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "message", None) or getattr(exc, "message", None) or exc).splitlines()[0]
