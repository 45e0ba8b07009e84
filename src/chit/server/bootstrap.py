"""First start: schema, keys and the super admin, created once and idempotently."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass

from chit.errors import ConflictError
from chit.policy.permissions import CHIT_SERVICE
from chit.server.authserver import AuthServer
from chit.server.config import Settings
from chit.server.credentials import hash_password
from chit.storage.engine import migrate

SUPER_ADMIN = "admin"
SUPER_ADMIN_ROLE = "chit:super-admin"
SUPER_ADMIN_PERMISSION = f"{CHIT_SERVICE}:*:*"
# A public first-party client so that people and scripts can log in with the password grant.
FIRST_PARTY_CLIENT = "chit-cli"
FIRST_PARTY_GRANTS = ("password", "refresh_token")
ADMIN_PASSWORD_ENV = "CHIT_ADMIN_PASSWORD"


@dataclass(frozen=True)
class Bootstrap:
    created_keys: bool
    admin_password: str | None  # set only when it was generated now: shown once, never stored


def bootstrap(settings: Settings) -> Bootstrap:
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    server = AuthServer(settings)
    try:
        migrate(server.store.engine)
        created_keys = server.keystore.initialize(settings.signing_alg, server.now_datetime())
        admin_password = _create_super_admin(server)
    finally:
        server.store.engine.dispose()
    return Bootstrap(created_keys, admin_password)


def _create_super_admin(server: AuthServer) -> str | None:
    store = server.store
    now = server.now()
    if not store.role_exists(SUPER_ADMIN_ROLE):
        with contextlib.suppress(ConflictError):  # another process created it first
            store.create_role(SUPER_ADMIN_ROLE, [SUPER_ADMIN_PERMISSION], now, "Everything the auth server can do")
    if store.client_by_client_id(FIRST_PARTY_CLIENT) is None:
        with contextlib.suppress(ConflictError):
            store.create_client(
                FIRST_PARTY_CLIENT, secret_hash=None, grant_types=FIRST_PARTY_GRANTS, scope=None, now=now
            )
    if store.user_by_username(SUPER_ADMIN) is not None:
        return None
    given = os.environ.get(ADMIN_PASSWORD_ENV)
    password = given or secrets.token_urlsafe(18)
    try:
        store.create_user(SUPER_ADMIN, hash_password(password), now, roles=[SUPER_ADMIN_ROLE])
    except ConflictError:
        return None
    return None if given else password
