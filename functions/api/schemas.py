"""Request bodies and response envelopes of the REST API (pydantic; they become the OpenAPI)."""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, create_model, model_validator

from shared.domain.base import Name, Record, Slug
from shared.domain.identity import Role
from shared.domain.inventory import NodeRole, Site
from shared.domain.plans import ProtectionPlan

_BASE_FIELDS = {"id", "revision", "created_at", "updated_at"}
#: never served: secrets' hashes and internal queue state
PRIVATE_FIELDS = {"password_hash", "secret_hash", "queue_message", "ciphertext", "secret_ref"}
#: a site's fields only the server writes: the vCenter connection (its password goes to the
#: vault) and the KVM host connection have their own routes, which queue the sync that
#: proves them; sync status comes from sync jobs
SITE_SERVER_FIELDS = frozenset({"vcenter", "kvm", "last_inventory_sync", "inventory_job_id"})


def input_model(
    record: type[Record], *, exclude: frozenset[str] | set[str] = frozenset(), name: str
) -> type[BaseModel]:
    """A body model with the record's own fields (the server sets id, revision, timestamps)."""
    fields: dict[str, Any] = {
        k: (f.annotation, f) for k, f in record.model_fields.items() if k not in _BASE_FIELDS | exclude
    }
    fields["id"] = (Slug | None, Field(default=None, description="Optional: chosen by the server if absent."))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def update_model(
    record: type[Record], *, exclude: frozenset[str] | set[str] = frozenset(), name: str
) -> type[BaseModel]:
    """A full-replacement body that states the revision it was based on (optimistic concurrency)."""
    fields: dict[str, Any] = {
        k: (f.annotation, f) for k, f in record.model_fields.items() if k not in _BASE_FIELDS | exclude
    }
    fields["revision"] = (int, Field(ge=1, description="The revision you read; 409 if it changed since."))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


if TYPE_CHECKING:  # built at import time; to a type checker they are plain models
    SiteIn = BaseModel
    SiteUpdate = BaseModel
    PlanIn = BaseModel
    PlanUpdate = BaseModel
else:
    SiteIn = input_model(Site, exclude=SITE_SERVER_FIELDS, name="SiteIn")
    SiteUpdate = update_model(Site, exclude=SITE_SERVER_FIELDS, name="SiteUpdate")
    PlanIn = input_model(ProtectionPlan, exclude={"state"}, name="PlanIn")
    PlanUpdate = update_model(ProtectionPlan, exclude={"state"}, name="PlanUpdate")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024, repr=False)  # powertools logs handler args at DEBUG


class LockoutClearIn(BaseModel):
    """Which login-throttle counter to clear: exactly one of a username or a client address."""

    model_config = ConfigDict(extra="forbid")
    username: str | None = Field(default=None, min_length=1, max_length=128)
    address: IPvAnyAddress | None = None

    @model_validator(mode="after")
    def _one(self) -> "LockoutClearIn":
        if (self.username is None) == (self.address is None):
            raise ValueError("give exactly one of username or address")
        return self


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Slug
    display_name: Name | None = None
    password: str = Field(min_length=12, max_length=1024, repr=False)
    roles: list[Role] = Field(min_length=1)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revision: int = Field(ge=1)
    display_name: Name | None = None
    password: str | None = Field(default=None, min_length=12, max_length=1024, repr=False)
    roles: list[Role] = Field(min_length=1)
    disabled: bool = False


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    roles: list[Role] = Field(
        min_length=1,
        description="'enrollment' alone: a token that only registers new nodes (expires in 7 days by default).",
    )
    ttl_days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _enrollment_alone(self) -> "TokenIn":
        if Role.ENROLLMENT in self.roles and len(set(self.roles)) > 1:
            raise ValueError("an enrollment token has the enrollment role only")
        return self


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_seconds: int = Field(
        default=300, ge=0, le=3600,
        description="How long the node's current credential keeps working (0: revoked at once).",
    )  # fmt: skip


class NodeRegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    site_id: Slug
    role: NodeRole = NodeRole.REPLICATION
    software_version: str = Field(default="", max_length=64)
    capacity: int = Field(default=40, ge=1, le=1000)
    source_sites: list[Annotated[str, Field(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$")]] = Field(
        default_factory=list, max_length=64
    )


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    running_jobs: int = Field(default=0, ge=0)


class ProgressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bytes_done: int = Field(default=0, ge=0)
    bytes_total: int = Field(default=0, ge=0)
    rate_bps: float = Field(default=0.0, ge=0)
    eta_seconds: float | None = Field(default=None, ge=0)
    message: str = Field(default="", max_length=512)


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["succeeded", "failed", "cancelled"]
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = Field(default=None, max_length=4096)


class RecoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["test", "failover", "migration"] = "test"
    point_time: str | None = Field(default=None, description="ISO time; the latest point at or before it.")


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str = ""
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
