"""Exact name key index for all databases; the trigram name index becomes GiST for nearest-neighbour search

Revision ID: 2fa9221b1acf
Revises: 4f6c5f5b0008
Create Date: 2026-11-22 23:21:06.290942

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '2fa9221b1acf'
down_revision = '4f6c5f5b0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('policyholders', schema=None) as batch_op:
        batch_op.create_index('ix_policyholders_name_key', ['name_key'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index('ix_policyholders_name_key_trgm', table_name='policyholders')
        op.create_index(
            'ix_policyholders_name_key_trgm', 'policyholders', ['name_key'], unique=False,
            postgresql_using='gist', postgresql_ops={'name_key': 'gist_trgm_ops'},
        )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index('ix_policyholders_name_key_trgm', table_name='policyholders')
        op.create_index(
            'ix_policyholders_name_key_trgm', 'policyholders', ['name_key'], unique=False,
            postgresql_using='gin', postgresql_ops={'name_key': 'gin_trgm_ops'},
        )
    with op.batch_alter_table('policyholders', schema=None) as batch_op:
        batch_op.drop_index('ix_policyholders_name_key')
