"""revocation_events: the revocation feed, one row per revocation in commit order (DESIGN §4)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocation_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=True),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocation_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_revocation_events_kind_expires", "revocation_events", ["kind", "expires"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_revocation_events_kind_expires", table_name="revocation_events")
    op.drop_table("revocation_events")
