"""Alembic migrations create exactly ``chit.storage.tables.metadata`` and keep the data they find; bootstrap
keeps secrets private."""

from __future__ import annotations

import stat
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from chit.server.bootstrap import bootstrap
from chit.server.config import build_settings
from chit.storage.engine import alembic_config, has_schema, migrate
from chit.storage.tables import metadata

DIRECTORY = ("users", "clients", "services", "permissions", "roles", "role_permissions", "grants")


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, metadata))


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_empty_database_has_no_schema(engine: Engine) -> None:
    assert table_names(engine) == set()
    assert not has_schema(engine)
    # the comparison sees the difference, so an empty result below means something
    added = {diff[1].name for diff in schema_differences(engine) if diff[0] == "add_table"}  # type: ignore[index]
    assert added == set(metadata.tables)


def test_migrate_creates_exactly_the_declared_schema(engine: Engine) -> None:
    migrate(engine)
    assert has_schema(engine)
    assert table_names(engine) == {*metadata.tables, "alembic_version"}
    assert schema_differences(engine) == []


def test_migrate_twice_is_a_no_op(engine: Engine) -> None:
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO roles (name, description, created_at) VALUES ('kept', '', 1)"),
        )
        version = conn.scalar(text("SELECT version_num FROM alembic_version"))
    migrate(engine)
    assert schema_differences(engine) == []
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == version
        assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
        roles = metadata.tables["roles"]
        assert list(conn.scalars(select(roles.c.name))) == ["kept"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bootstrap_makes_the_data_dir_and_key_files_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = bootstrap(build_settings(data_dir=data_dir))
    assert result.created_keys
    assert mode(data_dir) == 0o700
    keys = data_dir / "keys"
    assert mode(keys) == 0o700
    files = [p for p in keys.iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert "keyset.json" in names
    assert any(n.startswith("jwt-") and n.endswith(".pem") for n in names)
    assert any(n.startswith("biscuit-") and n.endswith(".key") for n in names)
    for path in files:
        assert mode(path) == 0o600, path.name


def test_bootstrap_tightens_an_existing_loose_data_dir_and_is_idempotent(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    settings = build_settings(data_dir=data_dir)
    first = bootstrap(settings)
    keyset = (data_dir / "keys" / "keyset.json").read_bytes()
    second = bootstrap(settings)
    assert first.created_keys
    assert not second.created_keys
    assert second.admin_password is None
    assert (data_dir / "keys" / "keyset.json").read_bytes() == keyset
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "keys") == 0o700


def upgrade_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    with engine.connect() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)
        connection.commit()


def registry_rows(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            name: sorted(tuple(r) for r in conn.execute(select(metadata.tables[name])))
            for name in ("roles", "role_permissions", "permissions")
        }


def test_0005_adds_service_keys_and_keeps_the_registry_it_finds(engine: Engine) -> None:
    """On SQLite a rebuilt ``services`` table would cascade to its roles and permissions: nothing may go."""
    upgrade_to(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO services (id, description, manifest, on_behalf, deferred, registered_at, updated_at)"
                " VALUES ('old', '', '{}', '', '', 1, 1)"
            )
        )
        conn.execute(text("INSERT INTO permissions (name, service_id, description) VALUES ('old:a:read', 'old', '')"))
        conn.execute(
            text("INSERT INTO roles (name, description, created_at, service_id) VALUES ('old:r', '', 1, 'old')")
        )
        conn.execute(text("INSERT INTO role_permissions (role, permission) VALUES ('old:r', 'old:a:read')"))
    before = registry_rows(engine)

    migrate(engine)
    assert schema_differences(engine) == []
    assert registry_rows(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, public_key FROM services")).all() == [("old", None)]

    upgrade_to(engine, "0004", down=True)
    assert registry_rows(engine) == before
    assert "public_key" not in {c["name"] for c in inspect(engine).get_columns("services")}
    migrate(engine)
    assert schema_differences(engine) == []


def triggers(engine: Engine) -> set[str]:
    """The names of the triggers on this database's (or PostgreSQL schema's) tables."""
    query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    if engine.dialect.name == "postgresql":
        query = (
            "SELECT tgname FROM pg_trigger JOIN pg_class ON pg_class.oid = tgrelid"
            " JOIN pg_namespace ON pg_namespace.oid = relnamespace"
            " WHERE NOT tgisinternal AND nspname = current_schema()"
        )
    with engine.connect() as conn:
        return set(conn.scalars(text(query)))


def test_0008_and_0009_triggers_come_and_go_with_their_revisions(engine: Engine) -> None:
    """The redemption count (0008, both databases) and the directory's version (0009, SQLite) are kept by
    triggers, which a downgrade removes whole and an upgrade puts back."""
    migrate(engine)
    expected = {"audit_counts_redemptions"}
    if engine.dialect.name == "sqlite":
        expected |= {f"directory_{change}_{table}" for change in ("insert", "update", "delete") for table in DIRECTORY}
    assert triggers(engine) == expected
    upgrade_to(engine, "0007", down=True)
    assert triggers(engine) == set()
    assert "directory_version" not in table_names(engine)
    migrate(engine)
    assert triggers(engine) == expected
    assert schema_differences(engine) == []
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT version FROM directory_version")) == 0
