"""scans that take the ids of deleted scans are counted: on SQLite a trigger keeps the rollup watermark below
the next scan's id, and rollups that missed scans are counted again

SQLite gives a new row the highest row id plus one, so deleting the code with the newest scans freed their ids
for the next scans. Those landed at or below the rollup watermark and were never counted: a code's analytics
could show 2 scans of 5. After a deletion leaves no scan above the watermark, the trigger lowers it to the
highest id left: no scan exists between the two, so nothing is counted twice, and the next ids are above it.
It runs when scans are deleted, never when one is recorded (AUTOINCREMENT, the other way to keep ids from
returning, made every scan's commit 11-22 us slower here). PostgreSQL's sequences never hand an id out again.
Rollups that fall short of the scans they have passed over, as such a database's do, are counted again.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

HIGHEST_SCAN_ID = "(SELECT COALESCE(MAX(id), 0) FROM scans)"
WATERMARK_TRIGGER = f"""
CREATE TRIGGER scans_watermark_below_new_ids AFTER DELETE ON scans
WHEN OLD.id > {HIGHEST_SCAN_ID}
BEGIN
    UPDATE rollup_watermarks SET last_scan_id = {HIGHEST_SCAN_ID}
    WHERE name = 'scans' AND last_scan_id > {HIGHEST_SCAN_ID};
END
"""
COUNTED_SCANS = "SELECT COALESCE(SUM(human_scans + bot_scans), 0) FROM scan_rollup_days"
PASSED_OVER_SCANS = ("SELECT COUNT(*) FROM scans WHERE id <= "
                     "COALESCE((SELECT last_scan_id FROM rollup_watermarks WHERE name = 'scans'), 0)")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        op.execute(WATERMARK_TRIGGER)
        op.execute(f"UPDATE rollup_watermarks SET last_scan_id = {HIGHEST_SCAN_ID} "
                   f"WHERE name = 'scans' AND last_scan_id > {HIGHEST_SCAN_ID}")
    counted, passed_over = (bind.exec_driver_sql(sql).scalar() for sql in (COUNTED_SCANS, PASSED_OVER_SCANS))
    if counted != passed_over:
        op.execute("DELETE FROM scan_rollup_values")
        op.execute("DELETE FROM scan_rollup_days")
        op.execute("DELETE FROM rollup_watermarks WHERE name = 'scans'")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("DROP TRIGGER IF EXISTS scans_watermark_below_new_ids")
