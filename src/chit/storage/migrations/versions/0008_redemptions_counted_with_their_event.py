"""a deferred delegation's redemptions are counted by its audit event, in the same transaction

Revision ID: 0008
Revises: 0007

Each successful ``delegation.redeemed`` event appended to ``audit_events`` adds one to its delegation's
``redemptions`` and sets ``last_used_at`` (the event's time, in seconds): the count and the log cannot
disagree, and a redemption costs no write transaction of its own (the audit's group commit carries it).
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COUNT = (
    "UPDATE delegations SET redemptions = redemptions + 1, last_used_at = NEW.time / 1000000 WHERE id = NEW.token_id"
)
_WHEN = "NEW.type = 'delegation.redeemed' AND NEW.outcome = 'success'"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_counts_redemption() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN {_COUNT}; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_counts_redemptions AFTER INSERT ON audit_events FOR EACH ROW"
            f" WHEN ({_WHEN}) EXECUTE FUNCTION audit_counts_redemption()"
        )
        return
    op.execute(f"CREATE TRIGGER audit_counts_redemptions AFTER INSERT ON audit_events WHEN {_WHEN} BEGIN {_COUNT}; END")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_counts_redemptions ON audit_events")
        op.execute("DROP FUNCTION audit_counts_redemption()")
        return
    op.execute("DROP TRIGGER audit_counts_redemptions")
