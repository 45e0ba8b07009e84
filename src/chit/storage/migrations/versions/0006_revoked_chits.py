"""revoked_chits: chits revoked by a block's revocation id (128 hex characters, too long for revoked_tokens.jti)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_chits",
        sa.Column("revocation_id", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("revocation_id", name=op.f("pk_revoked_chits")),
    )


def downgrade() -> None:
    op.drop_table("revoked_chits")
