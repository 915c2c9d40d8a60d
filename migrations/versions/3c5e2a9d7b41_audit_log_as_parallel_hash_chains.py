"""audit log as parallel hash chains: a global order number plus a chain and a position in it

Revision ID: 3c5e2a9d7b41
Revises: f1671fcf337b
Create Date: 2026-11-23 02:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3c5e2a9d7b41'
down_revision = 'f1671fcf337b'
branch_labels = None
depends_on = None

SQLITE_NO_UPDATE = (
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END"
)


def upgrade():
    """Every existing event becomes chain 1 at its own number, so its hash still holds. The
    append-only trigger is lifted for that one statement, inside this migration's transaction."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
        op.execute("ALTER TABLE audit_events ADD COLUMN chain smallint NOT NULL DEFAULT 1, ADD COLUMN chain_seq bigint")
        op.execute("UPDATE audit_events SET chain_seq = seq")
        op.execute("ALTER TABLE audit_events ALTER COLUMN chain DROP DEFAULT, ALTER COLUMN chain_seq SET NOT NULL")
        op.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")
        op.execute("CREATE SEQUENCE audit_events_seq_seq OWNED BY audit_events.seq")
        op.execute("SELECT setval('audit_events_seq_seq', COALESCE(max(seq), 0) + 1, false) FROM audit_events")
        op.execute("ALTER TABLE audit_events ALTER COLUMN seq SET DEFAULT nextval('audit_events_seq_seq')")
    else:
        op.execute("DROP TRIGGER audit_events_no_update")
        op.execute("ALTER TABLE audit_events ADD COLUMN chain SMALLINT NOT NULL DEFAULT 1")
        op.execute("ALTER TABLE audit_events ADD COLUMN chain_seq INTEGER NOT NULL DEFAULT 0")
        op.execute("UPDATE audit_events SET chain_seq = seq")
        op.execute(SQLITE_NO_UPDATE)
    op.create_index('ux_audit_events_chain_seq', 'audit_events', ['chain', 'chain_seq'], unique=True)


def downgrade():
    """Only a log still written as one chain can go back to a single numbering."""
    bind = op.get_bind()
    other_chains = bind.execute(sa.text("SELECT count(*) FROM audit_events WHERE chain <> 1 OR chain_seq <> seq"))
    if other_chains.scalar_one():
        raise RuntimeError("the audit log has events on more than one chain; it cannot be downgraded")
    op.execute("DELETE FROM audit_chain_head WHERE id <> 1")
    op.drop_index('ux_audit_events_chain_seq', table_name='audit_events')
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_events ALTER COLUMN seq DROP DEFAULT")
        op.execute("DROP SEQUENCE audit_events_seq_seq")
        op.execute("ALTER TABLE audit_events DROP COLUMN chain, DROP COLUMN chain_seq")
    else:
        with op.batch_alter_table('audit_events') as batch_op:
            batch_op.drop_column('chain_seq')
            batch_op.drop_column('chain')
        for statement in (
            SQLITE_NO_UPDATE,
            "CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
        ):
            op.execute(statement)
