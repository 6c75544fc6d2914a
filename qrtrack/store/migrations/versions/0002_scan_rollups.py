"""scan rollups: per code and UTC day totals, visitors and dimension counts, with their watermark;
indexes for the dashboard's code list sorted by label or by last change

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scan_rollup_days',
    sa.Column('code_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('human_scans', sa.BigInteger(), nullable=False),
    sa.Column('bot_scans', sa.BigInteger(), nullable=False),
    sa.Column('human_visitors', sa.BigInteger(), nullable=False),
    sa.Column('all_visitors', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['code_id'], ['codes.id'], name=op.f('fk_scan_rollup_days_code_id_codes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_id', 'day', name=op.f('pk_scan_rollup_days')),
    sqlite_with_rowid=False
    )
    op.create_table('scan_rollup_values',
    sa.Column('code_id', sa.Integer(), nullable=False),
    sa.Column('dimension', sa.String(length=16), nullable=False),
    sa.Column('is_bot', sa.Boolean(), nullable=False),
    sa.Column('day', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.String(length=110), nullable=False),
    sa.Column('scans', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['code_id'], ['codes.id'], name=op.f('fk_scan_rollup_values_code_id_codes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_id', 'dimension', 'is_bot', 'day', 'value', name=op.f('pk_scan_rollup_values')),
    sqlite_with_rowid=False
    )
    watermarks = op.create_table('rollup_watermarks',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('last_scan_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_rollup_watermarks'))
    )
    # Existing scans are rolled up by the first analytics read after the upgrade.
    op.bulk_insert(watermarks, [{'name': 'scans', 'last_scan_id': 0}])
    with op.batch_alter_table('codes', schema=None) as batch_op:
        batch_op.create_index('ix_codes_owner_label', ['owner_id', 'label', 'id'], unique=False)
        batch_op.create_index('ix_codes_owner_updated', ['owner_id', 'updated_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('codes', schema=None) as batch_op:
        batch_op.drop_index('ix_codes_owner_updated')
        batch_op.drop_index('ix_codes_owner_label')
    op.drop_table('rollup_watermarks')
    op.drop_table('scan_rollup_values')
    op.drop_table('scan_rollup_days')
