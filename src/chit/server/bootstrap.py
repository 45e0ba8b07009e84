"""First start: schema, keys and the super admin, created once and idempotently."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from chit.errors import ConfigurationError, ConflictError
from chit.policy import administration as rules
from chit.policy.permissions import CHIT_SERVICE
from chit.server.authserver import AuthServer
from chit.server.config import Settings
from chit.server.credentials import hash_password
from chit.storage.engine import create_database_engine, has_schema, migrate
from chit.storage.keyfiles import KeyStore

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


class NoInstallationError(ConfigurationError):
    """A command that reads or changes an installation found none (only ``chit serve``/``init`` create)."""


HOW_TO_CREATE = "run chit serve or chit init, or set CHIT_DATA_DIR"


def bootstrap(settings: Settings) -> Bootstrap:
    """Create what is missing of an installation; a failed start removes the directories it created."""
    created = _make_data_dir(settings.data_dir)
    try:
        with database_errors(settings.database_url):
            server = AuthServer(settings)
            try:
                migrate(server.store.engine)
                created_keys = server.keystore.initialize(settings.signing_alg, server.now_datetime())
                admin_password = _create_super_admin(server)
            finally:
                server.store.engine.dispose()
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return Bootstrap(created_keys, admin_password)


def require_installation(settings: Settings) -> None:
    """Refuse, in one line naming where it looked, when there is no installation to read or change."""
    data_dir = settings.data_dir
    if not data_dir.is_dir() or not KeyStore(data_dir, _NO_RETENTION).exists():
        raise NoInstallationError(f"no chit installation at {data_dir} ({HOW_TO_CREATE})")
    url = _parse(settings.database_url)
    if url.get_backend_name() == "sqlite":
        # connecting would create the file: look first
        if not url.database or not Path(url.database).is_file():
            raise NoInstallationError(f"no chit database at {url.database} ({HOW_TO_CREATE})")
        return
    with database_errors(settings.database_url):
        engine = create_database_engine(settings.database_url)
        try:
            present = has_schema(engine)
        finally:
            engine.dispose()
    if not present:
        raise NoInstallationError(
            f"no chit schema in the database {display_url(settings.database_url)} "
            "(run chit serve or chit init with this --database-url)"
        )


def display_url(url: str) -> str:
    """A database URL as a message may show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database that cannot be reached becomes one line naming it, not a driver's traceback."""
    try:
        yield
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise ConfigurationError(f"cannot open the database {display_url(url)}: {reason}") from None
    except SQLAlchemyError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigurationError(f"cannot open the database {display_url(url)}: {reason}") from None


_NO_RETENTION = timedelta(0)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"cannot parse the database URL {url!r}") from None


def _make_data_dir(data_dir: Path) -> Path | None:
    """Create the data directory (owner-only); returns the topmost directory this call created."""
    missing = None
    for candidate in (data_dir, *data_dir.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing = candidate
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as exc:
        if missing is not None and missing.is_dir():
            shutil.rmtree(missing, ignore_errors=True)
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError) or (data_dir.exists() and not data_dir.is_dir()):
            reason = "not a directory"
        raise ConfigurationError(f"cannot create the data directory {data_dir}: {reason}") from None
    return missing


def _create_super_admin(server: AuthServer) -> str | None:
    store = server.store
    now = server.now()
    if not store.role_exists(SUPER_ADMIN_ROLE):
        with contextlib.suppress(ConflictError):  # another process created it first
            store.create_role(SUPER_ADMIN_ROLE, [SUPER_ADMIN_PERMISSION], now, "Everything the auth server can do")
    if not store.role_exists(rules.IMPERSONATE_ROLE):
        with contextlib.suppress(ConflictError):
            store.create_role(
                rules.IMPERSONATE_ROLE, [str(rules.IMPERSONATE)], now, rules.CHIT_PERMISSIONS[rules.IMPERSONATE_ROLE]
            )
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
