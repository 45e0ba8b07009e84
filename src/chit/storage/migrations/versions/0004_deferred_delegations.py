"""deferred delegations; services that act for users get the token-exchange grant

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def upgrade() -> None:
    op.create_table(
        "delegations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(length=200), nullable=True),
        sa.Column("act", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.Column("redemptions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delegations")),
    )
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.create_index("ix_delegations_subject_id", ["subject_id"], unique=False)

    # services registered before delegation existed: their clients gain the grant their [on_behalf] implies
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT c.id, c.grant_types FROM clients c JOIN services s ON s.id = c.client_id WHERE s.on_behalf <> ''"
        )
    ).all()
    for client_pk, grant_types in rows:
        grants = set(grant_types.split())
        if TOKEN_EXCHANGE not in grants:
            conn.execute(
                sa.text("UPDATE clients SET grant_types = :g WHERE id = :id"),
                {"g": " ".join(sorted(grants | {TOKEN_EXCHANGE})), "id": client_pk},
            )


def downgrade() -> None:
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.drop_index("ix_delegations_subject_id")
    op.drop_table("delegations")
