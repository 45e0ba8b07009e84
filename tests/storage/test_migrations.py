"""Alembic migrations create exactly ``chit.storage.tables.metadata``; bootstrap keeps secrets private."""

from __future__ import annotations

import stat
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from chit.server.bootstrap import bootstrap
from chit.server.config import build_settings
from chit.storage.engine import has_schema, migrate
from chit.storage.tables import metadata


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
