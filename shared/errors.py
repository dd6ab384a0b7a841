"""One error tree for Lifeboat.

Every error a user can see derives from :class:`LifeboatError`, carries structured
fields, and maps to one CLI exit code and one HTTP status through :data:`ERROR_TABLE`.
Adapters translate SDK errors into these, chaining the original as ``__cause__``.
"""

from __future__ import annotations


class LifeboatError(Exception):
    """Base of every Lifeboat error. ``fields`` are structured, loggable context."""

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


# --- input -----------------------------------------------------------------------------
class InvalidInputError(LifeboatError):
    """The caller asked for something malformed (bad URL, bad extent list, bad size)."""


class UnsupportedMediaTypeError(InvalidInputError):
    """The request body is not JSON."""


# --- object storage ----------------------------------------------------------------------
class StoreError(LifeboatError):
    """An object store failed. ``key`` names the object when there is one."""


class ObjectNotFoundError(StoreError):
    """The object does not exist."""


class TransientStoreError(StoreError):
    """A failure worth retrying: throttling, timeouts, 5xx, connection resets."""


class StoreAccessError(StoreError):
    """Credentials were refused or lack permission; retrying will not help."""


class StoreFullError(StoreError):
    """The target has no space left."""


# --- repository ----------------------------------------------------------------------------
class RepositoryError(LifeboatError):
    """The repository cannot be used as asked."""


class RepositoryNotFoundError(RepositoryError):
    """No repository is initialised at this location."""


class RepositoryExistsError(RepositoryError):
    """``init`` found a repository already there."""


class UnsupportedFormatError(RepositoryError):
    """The repository or an object uses a format version this build does not read."""


class WrongPasswordError(RepositoryError):
    """No key in the repository opens with the given passphrase."""


class CorruptObjectError(RepositoryError):
    """An object failed its integrity checks (magic, length, MAC, id). Names the object."""


class PointNotFoundError(RepositoryError):
    """The requested recovery point does not exist."""


class RepositoryLockedError(RepositoryError):
    """Another process holds a conflicting lock on the repository."""


class CheckFailedError(RepositoryError):
    """``check`` found problems; ``fields['problems']`` lists them."""


# --- control plane --------------------------------------------------------------------------
class NotFoundError(LifeboatError):
    """A metadata record (site, plan, job...) does not exist."""


class ConflictError(LifeboatError):
    """The record changed since it was read (revision mismatch) or already exists."""


class InvalidStateError(LifeboatError):
    """The action is not allowed in the record's current state (e.g. a job transition)."""


class AuthenticationError(LifeboatError):
    """No valid credentials were presented."""


class PermissionDeniedError(LifeboatError):
    """The caller is authenticated but its roles do not allow the action."""


class TooManyRequestsError(LifeboatError):
    """The caller must wait before trying again (e.g. login throttling); ``fields['retry_after']``
    is the wait in whole seconds (the HTTP ``Retry-After`` header)."""


class ServiceUnavailableError(LifeboatError):
    """The control plane could not be reached or answered 5xx; worth retrying."""


class SourceError(LifeboatError):
    """The source disk could not be read."""


class TargetError(LifeboatError):
    """The restore target could not be written (e.g. disk full)."""


class GuestPrepError(LifeboatError):
    """A guest's disks could not be opened, inspected or changed (libguestfs failed)."""


#: error class -> (CLI exit code, HTTP status). Most specific class wins.
ERROR_TABLE: dict[type[LifeboatError], tuple[int, int]] = {
    InvalidInputError: (2, 400),
    UnsupportedMediaTypeError: (2, 415),
    NotFoundError: (4, 404),
    ConflictError: (5, 409),
    InvalidStateError: (5, 409),
    AuthenticationError: (7, 401),
    PermissionDeniedError: (7, 403),
    TooManyRequestsError: (15, 429),
    ServiceUnavailableError: (11, 503),
    ObjectNotFoundError: (4, 404),
    PointNotFoundError: (4, 404),
    RepositoryNotFoundError: (4, 404),
    RepositoryExistsError: (5, 409),
    RepositoryLockedError: (6, 409),
    WrongPasswordError: (7, 401),
    StoreAccessError: (7, 403),
    CorruptObjectError: (8, 500),
    CheckFailedError: (8, 500),
    UnsupportedFormatError: (9, 400),
    StoreFullError: (10, 507),
    TransientStoreError: (11, 503),
    SourceError: (12, 400),
    TargetError: (13, 500),
    GuestPrepError: (14, 500),
    StoreError: (11, 502),
    RepositoryError: (1, 500),
    LifeboatError: (1, 500),
}


def exit_code_for(error: LifeboatError) -> int:
    """CLI exit code for ``error``: the entry of its most specific class in the table."""
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls][0]
    return 1


def http_status_for(error: LifeboatError) -> int:
    """HTTP status for ``error``: the entry of its most specific class in the table."""
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls][1]
    return 500
