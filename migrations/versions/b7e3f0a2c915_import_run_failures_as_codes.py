"""import run failures as a code and details, said in the reader's language

Revision ID: b7e3f0a2c915
Revises: 9d4b7e1c2a60
Create Date: 2026-11-23 06:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7e3f0a2c915'
down_revision = '9d4b7e1c2a60'
branch_labels = None
depends_on = None


def upgrade():
    # Runs that failed before keep their free-text `error`, shown as it is.
    with op.batch_alter_table('import_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error_code', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('error_details', sa.JSON(), nullable=True))


def downgrade():
    # Coded failures keep their code and details as text, so the older code still shows something.
    op.execute(
        "UPDATE import_runs SET error = error_code || ': ' || COALESCE(CAST(error_details AS TEXT), '{}') "
        "WHERE error IS NULL AND error_code IS NOT NULL"
    )
    with op.batch_alter_table('import_runs', schema=None) as batch_op:
        batch_op.drop_column('error_details')
        batch_op.drop_column('error_code')
