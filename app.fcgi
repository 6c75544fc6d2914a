#!/usr/bin/env python3
"""FastCGI entry for Apache hosts with mod_fcgid: .htaccess sends every request here; the process stays alive.

mod_fcgid starts this script and hands it a listening socket; flup's WSGIServer answers requests on it
until mod_fcgid retires the process. Run from a shell with FCGI_FORCE_CGI=Y in the environment, flup serves
one request as CGI instead (without it, flup fails on a standard input that is no socket).
mod_fcgid starts a process when a request finds none free, often a scan after a quiet spell: that scan
is answered without waiting the second the full app takes to load (qrtrack.web.fastpath.lean_until_loaded).
"""
import hosting

hosting.use_venv()

from flup.server.fcgi import WSGIServer  # noqa: E402 - only once the venv's python runs

from qrtrack.web.fastpath import lean_until_loaded  # noqa: E402

WSGIServer(hosting.mounted_at_folder(lean_until_loaded(hosting.load_app))).run()
