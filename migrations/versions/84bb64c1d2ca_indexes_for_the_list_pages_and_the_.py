"""Indexes for the list pages and the review queue claim: applications by deadline, the claimable queue, call tasks by deadline, call attempts by start

Revision ID: 84bb64c1d2ca
Revises: 6ae77fd81206
Create Date: 2026-11-23 00:38:13.672224

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '84bb64c1d2ca'
down_revision = '6ae77fd81206'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('call_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_call_attempts_started_at', ['started_at'], unique=False)

    with op.batch_alter_table('call_tasks', schema=None) as batch_op:
        batch_op.create_index('ix_call_tasks_deadline', ['deadline'], unique=False)

    with op.batch_alter_table('representative_applications', schema=None) as batch_op:
        batch_op.create_index('ix_representative_applications_deadline_id', ['call_deadline', 'id'], unique=False)
        batch_op.create_index('ix_representative_applications_queue', ['call_deadline', 'id'], unique=False, postgresql_where=sa.text("status IN ('submitted', 'in_review')"), sqlite_where=sa.text("status IN ('submitted', 'in_review')"))


def downgrade():
    with op.batch_alter_table('representative_applications', schema=None) as batch_op:
        batch_op.drop_index('ix_representative_applications_queue', postgresql_where=sa.text("status IN ('submitted', 'in_review')"), sqlite_where=sa.text("status IN ('submitted', 'in_review')"))
        batch_op.drop_index('ix_representative_applications_deadline_id')

    with op.batch_alter_table('call_tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_call_tasks_deadline')

    with op.batch_alter_table('call_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_call_attempts_started_at')

