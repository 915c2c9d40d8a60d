"""customers prove their profile phone with an SMS code: when it was proven

Revision ID: e4a1c7d9b302
Revises: b7e3f0a2c915
Create Date: 2026-11-23 12:15:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e4a1c7d9b302'
down_revision = 'b7e3f0a2c915'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('customer_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phone_verified_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('customer_accounts', schema=None) as batch_op:
        batch_op.drop_column('phone_verified_at')
