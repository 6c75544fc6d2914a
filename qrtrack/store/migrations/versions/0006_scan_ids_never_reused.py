"""scan ids are never handed out again on SQLite (AUTOINCREMENT), and rollups that missed scans are recounted

SQLite gives a new row the highest row id plus one, so deleting the code with the newest scans freed their ids
for the next scans. Those landed at or below the rollup watermark and were never counted: a code's analytics
could show 2 scans of 5. AUTOINCREMENT needs the table rebuilt (a copy of the scan log, ids kept), and its
counter starts above both the highest id and the watermark. Rollups are then checked against the scan log
they have passed over, on every database, and counted again from the start where they fall short.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

COUNTED_SCANS = "SELECT COALESCE(SUM(human_scans + bot_scans), 0) FROM scan_rollup_days"
PASSED_OVER_SCANS = ("SELECT COUNT(*) FROM scans WHERE id <= "
                     "COALESCE((SELECT last_scan_id FROM rollup_watermarks WHERE name = 'scans'), 0)")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        with op.batch_alter_table('scans', recreate='always', table_kwargs={'sqlite_autoincrement': True}):
            pass
        op.execute("DELETE FROM sqlite_sequence WHERE name = 'scans'")
        op.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'scans', MAX("
                   "COALESCE((SELECT MAX(id) FROM scans), 0), "
                   "COALESCE((SELECT last_scan_id FROM rollup_watermarks WHERE name = 'scans'), 0))")
    counted, passed_over = (bind.exec_driver_sql(sql).scalar() for sql in (COUNTED_SCANS, PASSED_OVER_SCANS))
    if counted != passed_over:
        op.execute("DELETE FROM scan_rollup_values")
        op.execute("DELETE FROM scan_rollup_days")
        op.execute("DELETE FROM rollup_watermarks WHERE name = 'scans'")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        with op.batch_alter_table('scans', recreate='always', table_kwargs={'sqlite_autoincrement': False}):
            pass
