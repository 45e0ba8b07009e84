"""The relational schema (SQLAlchemy Core). Times are UTC Unix seconds; ids are opaque strings.

Alembic migrations under ``migrations/versions`` create exactly this; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("username_key", String(64), nullable=False, unique=True),  # usernames.username_key: one account per name
    Column("password_hash", Text, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    # tokens, sessions and API keys of the user issued before this time are revoked (set on disable)
    Column("revoked_before", BigInteger, nullable=False, default=0, server_default="0"),
)

clients = Table(
    "clients",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(64), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=True),  # NULL for public clients
    Column("public", Boolean, nullable=False, default=False),
    Column("grant_types", Text, nullable=False),  # space-separated, as on the wire
    Column("scope", Text, nullable=True),  # space-separated permission cap; NULL: no cap
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
)

roles = Table(
    "roles",
    metadata,
    Column("name", String(140), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    # the service whose manifest defines the role; NULL for global roles made with `chit role create`
    Column("service_id", String(48), ForeignKey("services.id", ondelete="CASCADE"), nullable=True),
)

role_permissions = Table(
    "role_permissions",
    metadata,
    Column("role", String(140), ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True),
    Column("permission", String(200), primary_key=True),
)

grants = Table(
    "grants",
    metadata,
    Column("principal_id", String(40), primary_key=True),  # a user id or a client's internal id
    Column("role", String(140), ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)

refresh_families = Table(
    "refresh_families",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(40), ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("scope", Text, nullable=False),  # the scope of the login; refreshes never exceed it
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # absolute lifetime
    Column("revoked_at", BigInteger, nullable=True),
    Column("revoked_reason", String(40), nullable=True),
    Index("ix_refresh_families_user_id", "user_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family_id", String(40), ForeignKey("refresh_families.id", ondelete="CASCADE"), nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # idle lifetime
    Column("used_at", BigInteger, nullable=True),
    Index("ix_refresh_tokens_family_id", "family_id"),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=False),
)

# revoked chits (RFC 7009): a block's revocation id, 128 hex characters, revokes every chit holding that block
revoked_chits = Table(
    "revoked_chits",
    metadata,
    Column("revocation_id", String(128), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=False),
)

login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", BigInteger, nullable=False),
    Column("lock_level", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=False),
)

services = Table(
    "services",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("description", Text, nullable=False),
    Column("manifest", Text, nullable=False),  # the normalised manifest as JSON: what registration compares
    Column("on_behalf", Text, nullable=False),  # space-separated permissions it may exercise for a user
    Column("deferred", Text, nullable=False),  # ... and may delegate for later, to an asynchronous job
    Column("registered_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("public_key", Text, nullable=True),  # its service key, "ed25519/<hex>"
    # a key names one service to those who trust it
    Index("ix_services_public_key", "public_key", unique=True),
)

permissions = Table(
    "permissions",
    metadata,
    Column("name", String(200), primary_key=True),  # service:resource:action
    Column("service_id", String(48), ForeignKey("services.id", ondelete="CASCADE"), nullable=False),
    Column("description", Text, nullable=False),
    Index("ix_permissions_service_id", "service_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), nullable=False),  # a user id or a client's internal id
    Column("secret_hash", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_api_keys_owner_id", "owner_id"),
)

delegations = Table(
    "delegations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("subject_id", String(40), nullable=False),  # the user the service will act for
    Column("client_id", String(64), nullable=False),  # the service (its client id) that alone redeems it
    Column("secret_hash", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("job_id", String(200), nullable=True),
    Column("act", Text, nullable=True),  # the act claim (JSON) of the token it was made from
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    Column("redemptions", Integer, nullable=False, default=0),
    Index("ix_delegations_subject_id", "subject_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("time", BigInteger, nullable=False),  # UTC, microseconds since the epoch
    Column("type", String(60), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("client_id", String(64), nullable=True),
    Column("subject", String(64), nullable=True),
    Column("actors", Text, nullable=False),  # JSON array, current actor first
    Column("token_id", String(64), nullable=True),
    Column("source", String(64), nullable=True),
    Column("detail", Text, nullable=False),  # JSON object; never a secret
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_time", "time"),
    Index("ix_audit_events_subject", "subject"),
)

# The revocation feed (DESIGN §4): one row per revocation, in commit order (ids are taken under a lock,
# see ``chit.storage.sql.revocation_events``); kept until no token it concerns can still be valid.
# AUTOINCREMENT on SQLite: an id is never reused, even after the newest event is pruned.
revocation_events = Table(
    "revocation_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),
    Column("value", String(200), nullable=False),
    Column("not_before", BigInteger, nullable=True),
    Column("expires", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),  # UTC, microseconds since the epoch
    Index("ix_revocation_events_kind_expires", "kind", "expires"),
    sqlite_autoincrement=True,
)

# One row: the version of the directory (users, clients, services, permissions, roles, role_permissions,
# grants), moved by every change to them in the change's own transaction (SQLite triggers, migration
# 0009), so that a server process may answer token requests from the rows it read at the current version
# (``chit.storage.sql.connection.Connected.remembered``). Unused on PostgreSQL for now.
directory_version = Table(
    "directory_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)
