"""ARM errors -> the compute port's errors (node_runtime/recovery/targets/azure/arm_errors.py)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ODataV4Format, ResourceNotFoundError, ServiceRequestError

from node_runtime.recovery.targets.azure.arm_errors import arm_error
from shared.errors import InvalidInputError, TargetError


def http_error(status: int, code: str | None, message: str = "ARM says no") -> HttpResponseError:
    exc = HttpResponseError(message=message)
    exc.status_code = status
    exc.error = ODataV4Format({"code": code, "message": message}) if code else None
    return exc


@pytest.mark.parametrize(
    ("status", "code", "kind", "transient"),
    [
        (400, "InvalidParameter", InvalidInputError, False),
        (404, "ResourceGroupNotFound", InvalidInputError, False),
        (400, "NicInUse", TargetError, False),  # in use: cleanup order, not a bad request
        (400, "InUseSubnetCannotBeDeleted", TargetError, False),
        (400, "SomethingNew", InvalidInputError, False),  # an unknown 400 is still the request's fault
        (429, "TooManyRequests", TargetError, True),
        (503, "ServiceUnavailable", TargetError, True),
        (200, "InternalServerError", TargetError, True),  # a failed operation's status body
        (409, "AllocationFailed", TargetError, False),
    ],
)
def test_codes_and_statuses_map_to_the_port(status: int, code: str, kind: type, transient: bool) -> None:
    err = arm_error(http_error(status, code), "creating VM web")
    assert type(err) is kind and err.fields["code"] == code and err.fields["transient"] is transient
    assert str(err).startswith(f"creating VM web: {code}: ARM says no")


def test_not_found_and_connection_errors() -> None:
    missing = ResourceNotFoundError(message="gone")
    missing.status_code = 404
    err = arm_error(missing, "reading disk d")
    assert isinstance(err, TargetError) and err.fields["code"] == "NotFound" and not err.fields["transient"]
    err = arm_error(ServiceRequestError("connection reset"), "creating NIC n")
    assert isinstance(err, TargetError) and err.fields["transient"] is True
    assert err.fields["code"] == "ServiceRequestError"
