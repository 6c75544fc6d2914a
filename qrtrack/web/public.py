"""Blueprint for what a QR code's readers reach: /p/<slug> (scan and redirect), /img/<slug>.png|svg, logos."""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, send_file

from ..codes import logo_path
from ..errors import Gone, NotFound
from ..images import cache as image_cache
from ..images import qr
from ..store import codes as code_store
from .context import services, short_url

bp = Blueprint("public", __name__)
SLUG_MAX_LENGTH = 16


@bp.get("/p/<slug>")
def scan_redirect(slug: str):
    """Every answer is no-store: a paused code may be resumed, an unknown slug taken, at any time."""
    try:
        destination = services().recorder.record(slug[:SLUG_MAX_LENGTH], request.environ)
    except NotFound:
        response = current_app.make_response((render_template("errors/unknown_code.html"), 404))
    except Gone:
        response = current_app.make_response((render_template("errors/paused_code.html"), 410))
    else:
        response = redirect(destination, 302)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/img/<slug>.png")
def qr_png(slug: str):
    return _qr_image(slug, kind="png", size=image_cache.clamp_size(request.args.get("size", type=int)))


@bp.get("/img/<slug>.svg")
def qr_svg(slug: str):
    return _qr_image(slug, kind="svg", size=None)


def _qr_image(slug: str, *, kind: str, size: int | None) -> Response:
    app_services = services()
    with app_services.db.read() as conn:
        code = code_store.get_full_code_by_slug(conn, slug[:SLUG_MAX_LENGTH])
    if code is None:
        abort(404, "no QR code at this address")
    data = short_url(code.slug)
    fingerprint = image_cache.image_fingerprint(data, code.logo)
    key = image_cache.cache_key(code.slug, kind=kind, size=size, fingerprint=fingerprint)
    content = app_services.images.get(key)
    if content is None:
        content = _render(kind, data, size, _logo_bytes(code.logo))
        _keep_in_cache(app_services.images, key, content)
    cache_control = image_cache.image_cache_control(request.args.get("v"), fingerprint=fingerprint)
    return _cached_response(content, mimetype=image_cache.MIMETYPES[kind], cache_control=cache_control)


def _keep_in_cache(images: image_cache.ImageCache, key: str, content: bytes) -> None:
    """A cache the app cannot write (a folder made by another user, a full disk) costs the next request a render,
    never this image: printed codes and the API's qr_image_url depend on it."""
    try:
        images.put(key, content)
    except OSError as error:
        current_app.logger.warning("could not keep a QR image in the cache folder %s (%s); served it uncached",
                                   images.directory, error)


def _render(kind: str, data: str, size: int | None, logo: bytes | None) -> bytes:
    if kind == "png":
        return qr.render_png(data, size=size, logo=logo)
    return qr.render_svg(data, logo=logo)


def _logo_bytes(logo: str | None) -> bytes | None:
    if not logo:
        return None
    path = logo_path(services().logo_dir, logo)
    return path.read_bytes() if path.is_file() else None


def _cached_response(content: bytes, *, mimetype: str, cache_control: str) -> Response:
    response = Response(content, mimetype=mimetype)
    response.set_etag(image_cache.etag_for(content).strip('"'))
    response.headers["Cache-Control"] = cache_control
    return response.make_conditional(request)


@bp.get("/logo/<digest>.png")
def logo_png(digest: str):
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        abort(404)
    path = logo_path(services().logo_dir, digest)
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype="image/png", max_age=86400, etag=True, conditional=True)
