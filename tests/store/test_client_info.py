"""store/client_info.py through useragent.ClientInfoCache: the User-Agent cache file one-shot CGI processes share."""
from __future__ import annotations

import sqlite3

import pytest

from qrtrack.useragent import ClientInfoCache, classify_user_agent

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")


def test_client_info_cache_answers_from_disk_the_second_time(tmp_path, monkeypatch):
    cache = ClientInfoCache(str(tmp_path / "cache" / "ua.db"))
    first = cache.classify(IPHONE)
    monkeypatch.setattr("qrtrack.useragent.classify_user_agent", lambda _ua: (_ for _ in ()).throw(AssertionError))
    assert cache.classify(IPHONE) == first


def test_client_info_cache_keeps_a_rollback_journal_even_if_made_with_a_wal(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "ua.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as made_by_an_older_version:
        made_by_an_older_version.execute("PRAGMA journal_mode=WAL")
        made_by_an_older_version.execute("CREATE TABLE client_info (user_agent TEXT PRIMARY KEY, device TEXT NOT NULL, "
                                         "os TEXT NOT NULL, browser TEXT NOT NULL, is_bot INTEGER NOT NULL)")
        made_by_an_older_version.execute("INSERT INTO client_info VALUES (?, 'iPhone', 'iOS 17.5', 'Safari', 0)",
                                         (IPHONE,))
    made_by_an_older_version.close()
    monkeypatch.setattr("qrtrack.useragent.classify_user_agent", lambda _ua: (_ for _ in ()).throw(AssertionError))
    assert ClientInfoCache(str(path)).classify(IPHONE) == ("iPhone", "iOS 17.5", "Safari", False)
    with sqlite3.connect(path) as cache:
        assert cache.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    cache.close()
    assert sorted(file.name for file in path.parent.iterdir()) == ["ua.db"]  # no -wal or -shm left beside it


@pytest.mark.parametrize("blocked_by", ["file", "database"])
def test_client_info_cache_that_cannot_be_used_classifies_all_the_same(tmp_path, blocked_by):
    """Its folder cannot be made (a file in the way, as a parent the app cannot write would do) or its file is no
    database: the User-Agent is parsed instead, and the scan goes on."""
    if blocked_by == "file":
        (tmp_path / "cache").write_text("a file where the folder should be")
    else:
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "ua.db").write_bytes(b"not a database, " * 512)
    assert ClientInfoCache(str(tmp_path / "cache" / "ua.db")).classify(IPHONE) == classify_user_agent(IPHONE)


@pytest.mark.parametrize("damage", ["not-a-database", "torn-page"])
def test_a_damaged_client_info_cache_is_deleted_and_fills_again(tmp_path, monkeypatch, damage):
    """Left in place, it would make every CGI scan import the parsers (over 100 ms) for good."""
    path = tmp_path / "ua.db"
    cache = ClientInfoCache(str(path))
    if damage == "not-a-database":
        path.write_bytes(b"not a database, " * 512)
    else:
        for number in range(300):  # pages enough that the table's root page is not the first
            cache.classify(f"{IPHONE} {number:03}")
        with sqlite3.connect(path) as conn:
            root_page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'client_info'").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        with open(path, "r+b") as file:
            file.seek((root_page - 1) * page_size)
            file.write(b"\xff" * page_size)
    assert cache.classify(IPHONE) == classify_user_agent(IPHONE)  # parsed, and the damaged file deleted
    assert cache.classify(IPHONE) == classify_user_agent(IPHONE)  # parsed into a new cache
    monkeypatch.setattr("qrtrack.useragent.classify_user_agent", lambda _ua: (_ for _ in ()).throw(AssertionError))
    assert cache.classify(IPHONE) == classify_user_agent(IPHONE)  # from the new cache
