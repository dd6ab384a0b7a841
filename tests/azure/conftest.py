"""Fixtures shared with other suites: the protected three-machine repository of the recovery-flow
tests and the session's Azurite (table, queue and blob services)."""

from tests.functional.test_recovery_flow import protected  # noqa: F401
from tests.servers import azurite_services  # noqa: F401
