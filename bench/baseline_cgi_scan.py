"""A yardstick for a scan under CGI: one CGI request of GET /p/<slug> done plainly with the standard library.

What any Python CGI script that records scans must do: look the slug up, insert a scan row, count it and
commit (WAL, synchronous=NORMAL, as QR Track's default), then answer 302. It classifies nothing, places
no one in a country and hashes nothing: the row's device, OS, browser and visitor are fixed text. It ends
with os._exit after the flush, as app.cgi does, so closing SQLite's last connection does not checkpoint
the WAL. The database is DATABASE_URL's SQLite file, as for the app. It imports sqlite3 as usual, so it
pays for functools and collections, which app.cgi avoids (hosting.import_sqlite_without_functools).
"""
import os
import sqlite3
import sys
import time

SQLITE_PREFIX = "sqlite:///"


def main():
    path = os.environ["DATABASE_URL"][len(SQLITE_PREFIX):]
    slug = os.environ.get("PATH_INFO", "")[len("/p/"):]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    found = conn.execute("SELECT id, destination FROM codes WHERE slug = ? AND status = 'active'",
                         (slug,)).fetchone()
    if found is None:
        sys.stdout.write("Status: 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return
    code_id, destination = found
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO scans (code_id, ts, device, os, browser, is_bot, user_agent, visitor) "
                 "VALUES (?, ?, 'phone', 'unknown', 'unknown', 0, ?, 'baseline')",
                 (code_id, int(time.time()), os.environ.get("HTTP_USER_AGENT", "")[:512]))
    conn.execute("UPDATE codes SET scan_count = scan_count + 1 WHERE id = ?", (code_id,))
    conn.execute("COMMIT")
    sys.stdout.write(f"Status: 302 Found\r\nLocation: {destination}\r\nContent-Length: 0\r\n\r\n")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
