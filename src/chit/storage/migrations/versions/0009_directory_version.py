"""directory_version: one row, moved by every change to the rows a token request reads

Revision ID: 0009
Revises: 0008

The directory is what operators change and token requests read: users, clients, services, permissions,
roles, role_permissions and grants. On SQLite, triggers move ``directory_version.version`` in the same
transaction as any change to them, whoever makes it (a server worker, the CLI, a DBA's SQL), so that a
server may answer a token request from the rows it read at the version it finds current
(``Connected.remembered``). PostgreSQL gets the table, not the triggers: its hot path reads afresh.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DIRECTORY = ("users", "clients", "services", "permissions", "roles", "role_permissions", "grants")
CHANGES = ("insert", "update", "delete")


def upgrade() -> None:
    op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_version")),
    )
    op.execute("INSERT INTO directory_version (id, version) VALUES (1, 0)")
    if op.get_context().dialect.name != "sqlite":
        return
    for table in DIRECTORY:
        for change in CHANGES:
            op.execute(
                f"CREATE TRIGGER directory_{change}_{table} AFTER {change.upper()} ON {table}"  # noqa: S608
                " BEGIN UPDATE directory_version SET version = version + 1; END"
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for table in DIRECTORY:
            for change in CHANGES:
                op.execute(f"DROP TRIGGER directory_{change}_{table}")
    op.drop_table("directory_version")
