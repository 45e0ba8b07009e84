"""What ``chit demo`` creates before anything runs: the installation in its data directory, the example
services registered from their manifests (their client secrets and service keys kept for their
processes), and the users with their roles. It goes through the operator's administration, as ``chit
service register``, ``chit service key`` and ``chit user add`` do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from chit.demo.processes import DemoError
from chit.errors import ChitError
from chit.policy.manifest import load_manifest
from chit.server.administration import Administration, Caller
from chit.server.authserver import AuthServer
from chit.server.bootstrap import bootstrap
from chit.server.config import Settings, build_settings
from chit.storage.engine import sqlite_url


@dataclass(frozen=True)
class ExampleService:
    """A service of ``examples/``: its id, the system (folder) it belongs to, and its module; a service
    without a module is a job the demo runs as a script (``<module or id>.py``)."""

    id: str
    system: str
    module: str | None
    signs_chits: bool = False  # it holds a service key: it appends its block to the chits it hands on

    def manifest(self, examples: Path) -> Path:
        return examples / self.system / f"{self.id}.toml"


SERVICES = (
    ExampleService("image-store", "photos", "image_store"),
    ExampleService("tagging", "photos", "tagging"),
    ExampleService("moderation", "photos", "moderation"),
    ExampleService("archiver", "photos", None),
    ExampleService("cart", "shop", "cart", signs_chits=True),
    ExampleService("payment", "shop", "payment", signs_chits=True),
    ExampleService("email", "shop", "email_service"),
)
ARCHIVER_SCRIPT = Path("photos") / "archiver.py"

# who may do what: each user holds roles that the services' manifests define
USERS: dict[str, tuple[str, ...]] = {
    "alice": ("image-store:owner", "tagging:editor", "cart:shopper", "payment:payer", "email:recipient"),
    "bob": ("image-store:owner", "tagging:editor", "cart:shopper", "payment:payer", "email:recipient"),
    "carol": ("cart:shopper",),  # may check out, may not pay
    "mia": ("moderation:moderator",),
}


def password_of(username: str) -> str:
    """The demo's users' passwords are no secret: the demo prints them, for curl."""
    return f"{username}-demo-password"


@dataclass
class Provisioned:
    """What the running services and the walkthrough need: the services' client secrets and private
    service keys, the users' ids, and the super admin's password when the demo chose it."""

    settings: Settings
    secrets: dict[str, str] = field(default_factory=dict)
    service_keys: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)
    admin_password: str | None = None


def demo_settings(data_dir: Path, port: int) -> Settings:
    """The embedded defaults, whatever ``CHIT_*`` the shell holds: SQLite in ``data_dir``, RS256."""
    return build_settings(
        data_dir=data_dir,
        database_url=sqlite_url(data_dir.resolve()),
        issuer=f"http://127.0.0.1:{port}",
        port=port,
        signing_alg="RS256",
    )


def check_examples(examples: Path) -> None:
    """A ``DemoError`` naming the fix when a manifest or module of the examples is missing."""
    wanted = [service.manifest(examples) for service in SERVICES]
    wanted += [examples / s.system / f"{s.module}.py" for s in SERVICES if s.module is not None]
    wanted.append(examples / ARCHIVER_SCRIPT)
    missing = [path for path in wanted if not path.is_file()]
    if missing:
        listed = ", ".join(str(path) for path in missing)
        raise DemoError(
            f"the demo runs the services of chit's examples/ folder, and {listed} "
            f"{'is' if len(missing) == 1 else 'are'} missing: run `chit demo` from a clone of chit "
            "(or pass --examples PATH to its examples/ folder)"
        )


@contextmanager
def operator(settings: Settings) -> Iterator[Administration]:
    server = AuthServer(settings)
    try:
        yield Administration(server, Caller.operator())
    finally:
        server.store.engine.dispose()


def provision(data_dir: Path, port: int, examples: Path) -> Provisioned:
    """Create the installation in ``data_dir`` (which must be new or empty), register every example
    service, hand over the keys of those that sign chits, and add the users."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DemoError(
            f"{data_dir} is not empty: the demo provisions a new installation (its services' secrets are "
            "shown once). Give --data-dir a new or empty directory, or leave it out for a temporary one"
        )
    settings = demo_settings(data_dir, port)
    try:
        created = bootstrap(settings)
        found = Provisioned(settings, admin_password=created.admin_password)
        with operator(settings) as admin:
            for service in SERVICES:
                registered = admin.register_service(load_manifest(service.manifest(examples)))
                found.secrets[service.id] = registered.client_secret or ""
                if service.signs_chits:
                    found.service_keys[service.id] = admin.hand_over_service_key(service.id).private_key
            for username, roles in USERS.items():
                found.user_ids[username] = admin.create_user(username, password_of(username), roles=roles).id
    except ChitError as exc:
        raise DemoError(f"could not provision the demo in {data_dir}: {exc}") from None
    return found


def log_out_everywhere(settings: Settings, username: str) -> list[str]:
    """``chit user logout-everywhere USERNAME``: the ids of the sessions it ended."""
    with operator(settings) as admin:
        _user, ended = admin.logout_everywhere(username)
    return ended
