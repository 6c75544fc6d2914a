"""api keys remember the "Generate key" form that made them (form_token, unique per user), so that form
sent twice, by a reload or a double click, makes one key

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Adding a column and an index leaves the table in place on SQLite too: a copy of api_keys would
    # drop the old table, and with it (ON DELETE SET NULL) every logged API call's link to its key.
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('form_token', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_api_keys_user_form_token', ['user_id', 'form_token'], unique=True)


def downgrade() -> None:
    # Not in batch mode, which would copy the table on SQLite (see upgrade): SQLite 3.35 and later drop a
    # column in place.
    op.drop_index('ix_api_keys_user_form_token', table_name='api_keys')
    op.drop_column('api_keys', 'form_token')
