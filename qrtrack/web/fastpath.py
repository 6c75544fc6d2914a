"""Lean handlers for the hot paths, answered without Flask: scans and already-rendered QR images.

FastPath sits in front of the Flask app in long-running servers: GET /p/<slug> of an active
code records the scan (through the same ScanRecorder as everywhere) and redirects; GET
/img/<slug>.png|svg is served from the image cache when the image is there. serve_cgi answers
the same requests in a one-shot CGI process, and lean_until_loaded in a new process of a long-running
entry (FastCGI, Passenger) until the full app has loaded. Anything else — unknown or paused codes, whose
friendly pages need templates, images not rendered yet, any other page — falls through to the
full app, so a lean answer is only ever a faster copy of the app's own. Under CGI this module is
imported on every scan, so it leaves out re, typing and urllib.parse like config does, and matches
its two paths by hand.
"""
from __future__ import annotations

import os
import sys

from .. import links
from ..config import Settings
from ..errors import QrTrackError
from ..geo import GeoLocator
from ..images import cache as image_cache
from ..images.cache import ImageCache
from ..records import record
from ..scans import ScanRecorder
from ..store.sqlite_scans import SqliteScanStore
from ..useragent import ClientInfo, ClientInfoCache, classify_user_agent

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    from ..scans import ScanStore

    WsgiApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]

MAX_SLUG_LENGTH = 16
SLUG_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
IMAGE_KINDS = ("png", "svg")
MAX_SIZE_DIGITS = 5
DEFAULT_PORTS = {"http": "80", "https": "443"}
URL_PATH_CHARACTERS = SLUG_CHARACTERS | frozenset("_.-~/")  # what a URL's path carries unescaped
REDIRECT_HEADERS = (("Cache-Control", "no-store"), ("Content-Length", "0"))


class ImageRequest(record("ImageRequest", "slug kind size version")):
    """A request for a QR image: slug, "png" or "svg", size in pixels (None for SVG), the ?v= named or None."""

    __slots__ = ()


def is_slug(text: str) -> bool:
    """1 to 16 ASCII letters and digits: the only slugs the lean handlers answer for."""
    return 0 < len(text) <= MAX_SLUG_LENGTH and SLUG_CHARACTERS.issuperset(text)


def scan_slug(environ: Mapping[str, Any]) -> str | None:
    """The slug when this is a GET or HEAD of /p/<slug>, else None."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        return None
    path = environ.get("PATH_INFO", "")
    return path[3:] if path.startswith("/p/") and is_slug(path[3:]) else None


def location_header(destination: str) -> str:
    """Header values must be ASCII: internationalised destinations are sent in their URI form."""
    if destination.isascii():
        return destination
    from ..destinations import location

    return location(destination)


def make_scan_store(settings: Settings, *, group_commit: bool = True) -> ScanStore:
    """The store scans are written through; group_commit=False for a one-shot process (see SqliteScanStore)."""
    if settings.sqlite_path is not None:
        return SqliteScanStore(settings.sqlite_path, wal=settings.SQLITE_WAL, synchronous=settings.SQLITE_SYNCHRONOUS,
                               group_commit=group_commit)
    from sqlalchemy import create_engine

    from ..store.scans import SqlAlchemyScanStore

    return SqlAlchemyScanStore(create_engine(settings.DATABASE_URL, pool_pre_ping=True))


def make_recorder(settings: Settings, *, classify: Callable[[str], ClientInfo] = classify_user_agent,
                  geo: GeoLocator | None = None, group_commit: bool = True) -> ScanRecorder:
    geo = geo or GeoLocator(mmdb_paths=settings.GEOIP_DB, trust_cdn=settings.TRUST_CDN)
    return ScanRecorder(make_scan_store(settings, group_commit=group_commit), geo=geo, trust_proxy=settings.TRUST_PROXY,
                        visitor_secret=settings.SECRET_KEY, classify=classify)


def image_request(environ: Mapping[str, Any]) -> ImageRequest | None:
    """What a GET or HEAD of /img/<slug>.png|svg with no query but ?size=N asks for, else None.

    The dashboard's ?v=<image version> may come last: a name for what the image shows, so a browser
    fetches the new image after a logo change (image_cache.image_cache_control); the image does not depend on it.
    """
    path = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") or not path.startswith("/img/"):
        return None
    slug, dot, kind = path[5:].rpartition(".")
    if not (dot and kind in IMAGE_KINDS and is_slug(slug)):
        return None
    query, version = _split_image_version(environ.get("QUERY_STRING", ""))
    if not query:
        return ImageRequest(slug, kind, None if kind == "svg" else image_cache.DEFAULT_SIZE, version)
    digits = query[5:] if query.startswith("size=") else ""
    if kind != "png" or not (0 < len(digits) <= MAX_SIZE_DIGITS and digits.isascii() and digits.isdigit()):
        return None
    return ImageRequest(slug, kind, image_cache.clamp_size(int(digits)), version)


def _split_image_version(query: str) -> tuple[str, str | None]:
    """The query string without a last parameter v=<image version>, and that version (None without one)."""
    head, separator, version = query.rpartition("v=")
    if not (separator and image_cache.is_image_version(version) and (head == "" or head.endswith("&"))):
        return query, None
    return head[:-1], version


def request_base_url(environ: Mapping[str, Any]) -> str | None:
    """Werkzeug's request.url_root without the trailing slash: scheme, host and the folder mounted at.

    None for a folder with characters a URL escapes: werkzeug's rules for those are left to Flask, which
    then answers. Should it ever differ from Flask's, the image cache simply misses and Flask answers.
    """
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if port == DEFAULT_PORTS.get(scheme):
        host = name
    folder = environ.get("SCRIPT_NAME", "").rstrip("/")
    if not URL_PATH_CHARACTERS.issuperset(folder):
        return None
    return f"{scheme}://{host}{folder}"


class FastPath:
    """WSGI middleware: answers scans of active codes and cached images, passes everything else on."""

    def __init__(self, app: WsgiApp, recorder: ScanRecorder, *, images: ImageCache, base_url: str | None):
        self.app = app
        self.recorder = recorder
        self.images = images
        self.base_url = base_url

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        slug = scan_slug(environ)
        if slug is not None:
            try:
                destination = self.recorder.record(slug, environ)
            except QrTrackError:
                return self.app(environ, start_response)
            start_response("302 Found", [("Location", location_header(destination)), *REDIRECT_HEADERS])
            after_answer = self.recorder.scan_store.after_answer()
            return [b""] if after_answer is None else _ThenCall([b""], after_answer)
        image = image_request(environ)
        cached = self._cached_image(environ, image) if image is not None else None
        if cached is None:
            return self.app(environ, start_response)
        content, cache_control = cached
        return self._image_response(environ, start_response, content, kind=image.kind, cache_control=cache_control)

    def _cached_image(self, environ: Mapping[str, Any], image: ImageRequest) -> tuple[bytes, str] | None:
        """The cached image's bytes and its Cache-Control, or None when it is not in the cache."""
        found = self.recorder.scan_store.find_logo(image.slug)
        if found is None:
            return None
        base_url = self.base_url or request_base_url(environ)
        if base_url is None:
            return None
        fingerprint = image_cache.image_fingerprint(links.short_url(base_url, image.slug), found[0])
        content = self.images.get(image_cache.cache_key(image.slug, kind=image.kind, size=image.size,
                                                        fingerprint=fingerprint))
        if content is None:
            return None
        return content, image_cache.image_cache_control(image.version, fingerprint=fingerprint)

    def _image_response(self, environ: Mapping[str, Any], start_response: Callable, content: bytes, *,
                        kind: str, cache_control: str) -> Iterable[bytes]:
        etag = image_cache.etag_for(content)
        headers = [("ETag", etag), ("Cache-Control", cache_control), ("X-Content-Type-Options", "nosniff")]
        if_none_match = environ.get("HTTP_IF_NONE_MATCH", "")
        if etag in if_none_match or if_none_match.strip() == "*":
            start_response("304 Not Modified", headers)
            return [b""]
        start_response("200 OK", [("Content-Type", image_cache.MIMETYPES[kind]),
                                  ("Content-Length", str(len(content))), *headers])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [content]


def lean_fast_path(settings: Settings, app: WsgiApp, *, group_commit: bool) -> FastPath | None:
    """FastPath in front of app for a process that has not loaded the full app, or None when it must not write
    scans yet: the database is behind the code (files upgraded, the full app not started since), or not there.

    User-Agent classification comes from the instance's on-disk cache, so the parsers are imported only for a
    browser not seen before.
    """
    cache = ClientInfoCache(os.path.join(settings.INSTANCE_PATH, "cache", "user-agents.db"))
    recorder = make_recorder(settings, classify=cache.classify, group_commit=group_commit)
    if not recorder.scan_store.has_current_schema():
        return None
    return FastPath(app, recorder, images=image_cache.instance_image_cache(settings.INSTANCE_PATH),
                    base_url=settings.BASE_URL)


def serve_cgi(environ: Mapping[str, Any], *, out=None) -> bool:
    """Answer a CGI request the lean handlers can answer (a scan of an active code, an image already in the
    cache) and return True; False, having written nothing, to let the full app answer.

    environ is the WSGI environ the full app would get (hosting.cgi_wsgi_environ), so the image cache's
    keys, built from the request's URL, are the ones the full app wrote.
    """
    if scan_slug(environ) is None and image_request(environ) is None:
        return False
    from ..config import ConfigError, load_settings

    try:
        settings = load_settings(environ=environ)
    except ConfigError:
        return False  # the full app then stops with the one line naming the setting, as everywhere else
    lean = lean_fast_path(settings, _not_answered, group_commit=False)
    if lean is None:
        return False  # the full app migrates the database first
    answer = []
    body = lean(environ, lambda status, headers, exc_info=None: answer.extend((status, headers)))
    if body is None:
        return False
    status, headers = answer
    out = out or sys.stdout.buffer
    head = f"Status: {status}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    out.write(head.encode("latin-1"))
    try:
        for chunk in body:
            out.write(chunk)
        out.flush()
    finally:
        close = getattr(body, "close", None)  # as a WSGI server does once it has sent the answer (after_answer)
        if close is not None:
            close()
    return True


def lean_until_loaded(load_app: Callable[[], WsgiApp]) -> WsgiApp:
    """The WSGI app of a long-running entry (app.fcgi, passenger_wsgi.py) whose host starts processes on demand.

    Importing the full app takes about a second, and mod_fcgid and Passenger start a process when a request
    arrives, often a scan after a quiet spell. So a new process answers what the lean handlers can at once
    and loads the full app in the background after its first answer (LeanUntilLoaded). Where the lean
    handlers cannot write yet (see lean_fast_path), or settings are wrong, the full app loads first: it
    migrates the database, or stops naming the setting.
    """
    from ..config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError:
        return load_app()
    if settings.sqlite_path is None:  # on other databases the lean store imports SQLAlchemy: little would be saved
        return load_app()
    loader = LeanUntilLoaded(load_app, settings)
    return loader if loader.lean is not None else load_app()


class LeanUntilLoaded:
    """Answers through lean handlers (whose fall-through is full_app) until the full app is loaded, then through it.

    The full app loads in a thread started once the first response has been sent, so that answer is not
    slowed, or at once for a request the lean handlers leave to it, which then waits for it. `lean` is None
    when the lean handlers must not write (see lean_fast_path), and once the full app answers: it has its own.
    """

    def __init__(self, load_app: Callable[[], WsgiApp], settings: Settings):
        import threading  # here: a CGI scan, which imports this module, must not pay for it

        self._load_app = load_app
        self._app: WsgiApp | None = None
        self._error: BaseException | None = None
        self._started = False
        self._start_lock = threading.Lock()
        self._loaded = threading.Event()
        self._loader = threading.Thread(target=self._load, name="qrtrack-load-app", daemon=True)
        self.lean = lean_fast_path(settings, self.full_app, group_commit=True)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        lean = self.lean  # read first: once the full app is set, another thread may drop it
        if self._app is not None:
            self.lean = None  # the full app answers everything now; the lean store's connections go with it
            return self._app(environ, start_response)
        return _ThenCall(lean(environ, start_response), self.start_loading)

    def full_app(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        """What the lean handlers fall through to: the full app, loaded now if it is not yet."""
        self.start_loading()
        self._loaded.wait()
        if self._app is None:
            raise RuntimeError("QR Track's app could not be loaded: see the error logged before") from self._error
        return self._app(environ, start_response)

    def start_loading(self) -> None:
        with self._start_lock:
            if not self._started:
                self._started = True
                self._loader.start()

    def _load(self) -> None:
        try:
            self._app = self._load_app()
        except BaseException as error:  # every request that needs the app fails with it (full_app)
            import logging

            logging.getLogger(__name__).exception("QR Track's app could not be loaded")
            self._error = error
        finally:
            self._loaded.set()


class _ThenCall:
    """A WSGI response body that calls `then` once the server has sent it and closes it."""

    def __init__(self, body: Iterable[bytes], then: Callable[[], None]):
        self._body = body
        self._then = then

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._then()


def _not_answered(environ: Mapping[str, Any], start_response: Callable) -> None:
    """The app behind FastPath under serve_cgi: None tells serve_cgi to leave the request to the full app."""
    return None
