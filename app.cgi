#!/usr/bin/env python3
"""CGI entry for Apache hosts with only mod_cgi: .htaccess sends every request here, one process each.

A scan of an active code (GET /p/<slug>) is answered by qrtrack.fastpath without importing Flask;
everything else pays Python's start-up and the full app's imports, so prefer app.fcgi or Passenger
where the host has them. Point the first line at your venv's python (…/.venv/bin/python) to skip
the re-exec that hosting.use_venv() does.
"""
import hosting

hosting.use_venv()

from qrtrack.fastpath import serve_cgi_scan  # noqa: E402 - only once the venv's python runs

if not serve_cgi_scan():
    from wsgiref.handlers import CGIHandler

    from app import app

    CGIHandler().run(hosting.mounted_at_folder(app))
