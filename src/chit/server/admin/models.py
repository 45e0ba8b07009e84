"""Request bodies of the admin API: strict (unknown fields are refused, not ignored), and no text
field holds a control character (``chit.policy.text``; a description may break lines, never hold NUL)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from chit.policy.text import texts_problem


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    free_text: ClassVar[frozenset[str]] = frozenset()  # fields refused only for NUL
    unchecked: ClassVar[frozenset[str]] = frozenset()  # fields whose own parser refuses, saying where

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        # every field, so that a new one is covered without anyone having to remember
        name = info.field_name or ""
        if name in cls.unchecked:
            return value
        problem = texts_problem(value if isinstance(value, list) else [value], free_text=name in cls.free_text)
        if problem:
            raise PydanticCustomError("control_characters", problem)
        return value


class NewUser(Strict):
    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
    password: str = Field(min_length=8, max_length=1024)
    roles: list[str] = Field(default_factory=list, max_length=100)


class NewClient(Strict):
    client_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    grant_types: list[str] = Field(default_factory=lambda: ["client_credentials"], min_length=1, max_length=10)
    scope: list[str] | None = Field(default=None, max_length=100)
    public: bool = False


class ServiceManifest(Strict):
    unchecked = frozenset({"manifest"})  # parse_manifest names the line of a NUL or a control character

    manifest: str = Field(min_length=1, max_length=60_000, description="The service's manifest, TOML text")
    public_key: str | None = Field(
        default=None,
        max_length=200,
        description="The service's own public key, ed25519/<hex>; without it, a service with no key gets a new pair",
    )


class NewRole(Strict):
    free_text = frozenset({"description"})

    name: str = Field(min_length=1, max_length=140, pattern=r"^[a-z0-9][a-z0-9._:-]*$")
    permissions: list[str] = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=1000)


class GrantBody(Strict):
    principal: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=140)


class Appointment(Strict):
    username: str = Field(min_length=1, max_length=64)
    service: str = Field(min_length=1, max_length=48)


class NewApiKey(Strict):
    owner: str = Field(min_length=1, max_length=200)
    scope: list[str] = Field(min_length=1, max_length=100)
    expires_in: int | None = Field(default=None, ge=60, le=10 * 365 * 24 * 3600)


class KeyRotation(Strict):
    alg: str | None = None
    now: bool = False
    revoke_old: bool = False  # a key compromise: every earlier key stops at once (needs ``now``)


class DelegationFilter(Strict):
    """The query of ``GET /admin/delegations``: an unknown parameter is refused, not ignored."""

    user: str | None = Field(default=None, min_length=1, max_length=64, description="Only this user's (a username)")
