"""The on-disk cache of User-Agent classifications: a small SQLite file of its own, standard library only.

For one-shot CGI processes: a cache hit spares them importing the User-Agent parsers (over 100 ms). Safe to
delete at any time; it refills itself.
"""
from __future__ import annotations

import os

# sqlite3 as the scan path imports it: SQLite's C module alone where it can (see sqlite_scans.py)
from .sqlite_scans import BUSY_TIMEOUT_SECONDS, delete_database_files, is_damaged_database, sqlite3

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from collections.abc import Callable

    Classification = tuple[str, str, str, bool]


class ClientInfoFile:
    """device, os, browser and is_bot per distinct User-Agent.

    The file keeps a rollback journal, not a WAL: each process opens it for one read and closes it,
    and a WAL's two extra files were made and deleted each time (~0.4 ms of a CGI scan here). It is
    written only for a User-Agent not seen before, so readers rarely wait for a writer.
    """

    def __init__(self, path: str):
        self.path = path

    def find_or_add(self, user_agent: str, classify: Callable[[str], Classification]) -> Classification:
        """The cached classification, else classify(user_agent)'s, then cached. A file it cannot open, create or
        read costs the classifying, never the scan; a damaged one is deleted, so later scans do not all pay."""
        try:
            return self._find_or_add(user_agent, classify)
        except sqlite3.DatabaseError as error:
            if is_damaged_database(error):
                delete_database_files(self.path)
            return classify(user_agent)
        except (sqlite3.Error, OSError):
            return classify(user_agent)

    def _find_or_add(self, user_agent: str, classify: Callable[[str], Classification]) -> Classification:
        conn = self._connect()
        try:
            row = conn.execute("SELECT device, os, browser, is_bot FROM client_info WHERE user_agent = ?",
                               (user_agent,)).fetchone()
            if row is not None:
                return row[0], row[1], row[2], bool(row[3])
            device, os_name, browser, is_bot = found = classify(user_agent)
            conn.execute("INSERT OR REPLACE INTO client_info VALUES (?, ?, ?, ?, ?)",
                         (user_agent, device, os_name, browser, int(is_bot)))
            return found
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")  # also turns a cache made in WAL mode by older versions
            conn.execute("CREATE TABLE IF NOT EXISTS client_info (user_agent TEXT PRIMARY KEY, device TEXT NOT NULL, "
                         "os TEXT NOT NULL, browser TEXT NOT NULL, is_bot INTEGER NOT NULL)")
        except BaseException:
            conn.close()
            raise
        return conn
