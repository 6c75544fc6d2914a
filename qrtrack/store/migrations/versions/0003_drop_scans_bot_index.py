"""drop the scans (code_id, is_bot, ts) index: every scan paid to keep it, and since the rollups no
report reads the scan log by bot flag over a range the (code_id, ts) index does not serve as well

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_index('ix_scans_code_bot_ts')


def downgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.create_index('ix_scans_code_bot_ts', ['code_id', 'is_bot', 'ts'], unique=False)
