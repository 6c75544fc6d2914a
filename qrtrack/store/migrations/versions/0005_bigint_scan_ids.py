"""scan and API-call ids become 64-bit on PostgreSQL and MySQL, where integer ids end at 2,147,483,647:
scans would stop being recorded after about 2.1 billion of them. SQLite's row ids are 64-bit already, so
there nothing changes.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

WIDENED_TABLES = ('scans', 'api_calls')


def upgrade() -> None:
    _set_id_type(sa.BigInteger(), existing_type=sa.Integer(), sequence_type='bigint')


def downgrade() -> None:
    _set_id_type(sa.Integer(), existing_type=sa.BigInteger(), sequence_type='integer')


def _set_id_type(type_: sa.types.TypeEngine, *, existing_type: sa.types.TypeEngine, sequence_type: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        return
    # MySQL restates the whole column, so it must hear that the id still counts itself up.
    mysql_only = {'autoincrement': True} if bind.dialect.name == 'mysql' else {}
    for table in WIDENED_TABLES:
        op.alter_column(table, 'id', type_=type_, existing_type=existing_type, existing_nullable=False, **mysql_only)
        if bind.dialect.name == 'postgresql':
            # A serial column's sequence is typed too (AS integer since PostgreSQL 10) and would stop at the
            # same number as the column.
            sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {'table': table}).scalar()
            if sequence is not None:
                op.execute(f'ALTER SEQUENCE {sequence} AS {sequence_type}')
