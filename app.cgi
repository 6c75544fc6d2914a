#!/usr/bin/env python3
"""CGI entry for Apache hosts with only mod_cgi: .htaccess sends every request here, one process each.

Every request pays Python's start-up and the app's imports; prefer app.fcgi or Passenger where the host has them.
Point the first line at your venv's python (…/.venv/bin/python) to skip the re-exec that hosting.use_venv() does.
"""
import hosting

hosting.use_venv()

from wsgiref.handlers import CGIHandler  # noqa: E402 - only once the venv's python runs

from app import app  # noqa: E402

CGIHandler().run(hosting.mounted_at_folder(app))
