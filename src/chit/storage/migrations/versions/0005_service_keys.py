"""services.public_key: the public half of each service's key, published for third-party blocks

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN and a unique index, not a constraint: SQLite would rebuild the table, and dropping the
    # old one with foreign keys on would cascade to the services' roles and permissions
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_key", sa.Text(), nullable=True))
        batch_op.create_index("ix_services_public_key", ["public_key"], unique=True)
    # services registered before keys existed get one when next registered (or `chit service key --rotate`)


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_index("ix_services_public_key")
    # a plain DROP COLUMN (SQLite 3.35+): a batch rebuild would cascade as upgrade() explains
    op.drop_column("services", "public_key")
