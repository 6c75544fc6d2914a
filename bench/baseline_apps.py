"""Baselines the benchmarks compare against: the least any server can do for each request we measure.

bare_app is a plain WSGI function, served by the same gunicorn settings as QR Track:
  GET /p/<slug>      302 to a fixed URL with Cache-Control: no-store (what a scan must answer)
  GET /img/<name>    the file named by BENCH_STATIC_FILE, as a static file server sends it (ETag, 304)
  POST /api.php      201 with a small JSON body, after reading the request body

Run as a script, this file serves one CGI request with a minimal Flask app whose only route answers
/p/<slug> with redirect(): the floor for any Flask app under CGI.
"""
from __future__ import annotations

import os

REDIRECT_TO = "https://example.com/landing"
CREATED_BODY = b'{"uuid": "00000000-0000-4000-8000-000000000000", "slug": "AbCdEfG"}'


def bare_app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/p/"):
        start_response("302 Found", [("Location", REDIRECT_TO), ("Cache-Control", "no-store"),
                                     ("Content-Length", "0")])
        return [b""]
    if path.startswith("/img/"):
        return _static_file(environ, start_response)
    if path == "/api.php" and environ.get("REQUEST_METHOD") == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(length)
        start_response("201 Created", [("Content-Type", "application/json"),
                                       ("Content-Length", str(len(CREATED_BODY)))])
        return [CREATED_BODY]
    return _not_found(start_response)


def _static_file(environ, start_response):
    """Like nginx: ETag from modification time and size, 304 on a match, the body through sendfile."""
    path = os.environ.get("BENCH_STATIC_FILE", "")
    try:
        stat = os.stat(path)
    except OSError:
        return _not_found(start_response)
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = [("ETag", etag), ("Cache-Control", "public, max-age=300")]
    if environ.get("HTTP_IF_NONE_MATCH") == etag:
        start_response("304 Not Modified", headers)
        return [b""]
    start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", str(stat.st_size)), *headers])
    # Not a with-block: the server closes the file once the wrapper has sent it.
    file = open(path, "rb")
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(file)
    with file:
        return [file.read()]


def _not_found(start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


def minimal_flask_app():
    # Flask is imported here, not at the top, so the bare server's workers never load it: their
    # resident memory is the baseline for ours.
    from flask import Flask, redirect

    app = Flask(__name__)

    @app.get("/p/<slug>")
    def scan_redirect(slug: str):
        return redirect(REDIRECT_TO, 302)

    return app


if __name__ == "__main__":
    from wsgiref.handlers import CGIHandler

    CGIHandler().run(minimal_flask_app())
