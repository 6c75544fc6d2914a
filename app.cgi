#!/usr/bin/env python3
"""CGI entry for Apache hosts with only mod_cgi: .htaccess sends every request here, one process each.

A scan of an active code (GET /p/<slug>) and an image already in the cache (GET /img/<slug>.png) are
answered by qrtrack.web.fastpath without importing Flask; everything else pays Python's start-up and the
full app's imports, so prefer app.fcgi or Passenger where the host has them. Point the first line at
your venv's python with -S (#!/…/.venv/bin/python -S) to skip the re-exec that hosting.use_venv() does.
-S skips site's start-up work, which the lean path does not need (hosting.add_venv_packages).
"""
import hosting

hosting.use_venv("-S")
hosting.add_venv_packages()
hosting.import_sqlite_without_functools()

import os  # noqa: E402

from qrtrack.web.fastpath import serve_cgi  # noqa: E402 - only once the venv's python runs

if serve_cgi(hosting.cgi_wsgi_environ()):
    # The answer is flushed (a scan's row committed first): end here. A normal exit would tear the
    # interpreter down and, closing the last connection, checkpoint SQLite's WAL with its syncs
    # (about 12 ms of a ~60 ms CGI scan here); serve_cgi empties the WAL now and then instead.
    os._exit(0)
else:
    hosting.run_site()

    from wsgiref.handlers import CGIHandler

    from app import app

    CGIHandler().run(hosting.mounted_at_folder(app))
