"""index for the linked accounts list: newest link first, by pages

Revision ID: 9d4b7e1c2a60
Revises: 3c5e2a9d7b41
Create Date: 2026-11-23 03:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9d4b7e1c2a60'
down_revision = '3c5e2a9d7b41'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        'ix_customer_accounts_link_order',
        'customer_accounts',
        ['association_status', sa.text('coalesce(linked_at, created_at)'), 'id'],
    )


def downgrade():
    op.drop_index('ix_customer_accounts_link_order', table_name='customer_accounts')
