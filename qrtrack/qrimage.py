"""Render QR codes as PNG or SVG bytes, vet uploaded logos, and cache images on disk.

Pure module: no Flask, no database. Callers pass plain values and get bytes back.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

import qrcode
import qrcode.constants
from PIL import Image, ImageOps

MIN_SIZE = 64
MAX_SIZE = 2048
DEFAULT_SIZE = 400

QUIET_ZONE = 4  # modules of white border, as the QR spec asks
LOGO_RATIO = 0.25  # logo and its pad, as a fraction of the image width; 0.35 stops decoding
LOGO_MAX_EDGE = 512  # long side of a sanitised logo, in pixels
LOGO_FORMATS = ("PNG", "JPEG", "WEBP")
# Pillow reports a JPEG carrying extra frames (common from phone cameras) as MPO.
ACCEPTED_FORMATS = frozenset(LOGO_FORMATS) | {"MPO"}
SVG_MODULE_PX = 10  # intrinsic width and height of an SVG, in pixels per module
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_KINDS = frozenset({"png", "svg"})


class InvalidLogo(ValueError):
    """An uploaded logo was refused; str(exc) is a message fit to show the user."""


def clamp_size(size: int | None) -> int:
    """Return DEFAULT_SIZE for None, else size clamped into [MIN_SIZE, MAX_SIZE]."""
    if size is None:
        return DEFAULT_SIZE
    return max(MIN_SIZE, min(MAX_SIZE, int(size)))


def _module_matrix(data: str, *, has_logo: bool) -> list[list[bool]]:
    """Return the QR modules for data, quiet zone included; True is dark.

    Error correction is M, or H when a logo will cover the centre.
    """
    level = qrcode.constants.ERROR_CORRECT_H if has_logo else qrcode.constants.ERROR_CORRECT_M
    qr = qrcode.QRCode(error_correction=level, box_size=1, border=QUIET_ZONE)
    qr.add_data(data)
    qr.make(fit=True)
    return qr.get_matrix()


def _logo_box(logo_size: tuple[int, int], edge: float) -> tuple[float, float, float]:
    """Fit a logo inside a LOGO_RATIO square of an image with the given edge.

    Returns (logo width, logo height, pad) in the image's units; the pad
    surrounds the logo on every side and is counted within the square.
    """
    box = edge * LOGO_RATIO
    pad = box / 12
    scale = (box - 2 * pad) / max(logo_size)
    return logo_size[0] * scale, logo_size[1] * scale, pad


def render_png(data: str, *, size: int = DEFAULT_SIZE, logo: bytes | None = None) -> bytes:
    """Return a PNG of exactly size x size pixels encoding data, black on white.

    size is clamped with clamp_size. Modules are scaled with NEAREST, so at
    small sizes a long payload may lose modules; short URLs decode from 128 px.
    logo must be bytes returned by sanitize_logo; it is drawn centred on a
    white pad, the two together at most LOGO_RATIO of the width, and EC is H.
    """
    size = clamp_size(size)
    matrix = _module_matrix(data, has_logo=logo is not None)
    count = len(matrix)
    pixels = bytes(0 if dark else 255 for row in matrix for dark in row)
    image = Image.frombytes("L", (count, count), pixels).resize((size, size), Image.Resampling.NEAREST)
    if logo is None:
        image = image.convert("1", dither=Image.Dither.NONE)
    else:
        image = image.convert("RGB")
        _paste_logo(image, logo)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _paste_logo(image: Image.Image, logo: bytes) -> None:
    """Draw the logo, on its white pad, at the centre of a square RGB image."""
    with Image.open(io.BytesIO(logo)) as opened:
        picture = opened.convert("RGBA")
    edge = image.width
    width, height, pad = _logo_box(picture.size, edge)
    width, height, pad = max(1, int(width)), max(1, int(height)), max(1, int(pad))
    picture = picture.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pad_size = (width + 2 * pad, height + 2 * pad)
    pad_origin = ((edge - pad_size[0]) // 2, (edge - pad_size[1]) // 2)
    image.paste((255, 255, 255), (*pad_origin, pad_origin[0] + pad_size[0], pad_origin[1] + pad_size[1]))
    image.paste(picture, (pad_origin[0] + pad, pad_origin[1] + pad), picture)


def render_svg(data: str, *, logo: bytes | None = None) -> bytes:
    """Return a standalone SVG document encoding data, black on an opaque white rect.

    One unit of the viewBox is one module; width and height are SVG_MODULE_PX
    pixels per module. logo must be bytes returned by sanitize_logo; it is
    embedded as a base64 PNG data: URI, centred on a white pad, the two together
    at most LOGO_RATIO of the width, and EC is H.
    """
    matrix = _module_matrix(data, has_logo=logo is not None)
    count = len(matrix)
    pixels = count * SVG_MODULE_PX
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{pixels}" height="{pixels}" '
            f'viewBox="0 0 {count} {count}" shape-rendering="crispEdges">'
        ),
        f'<rect x="0" y="0" width="{count}" height="{count}" fill="#ffffff"/>',
        f'<path fill="#000000" d="{_svg_path(matrix)}"/>',
    ]
    if logo is not None:
        parts.append(_svg_logo(logo, count))
    parts.append("</svg>\n")
    return "".join(parts).encode("utf-8")


def _svg_path(matrix: list[list[bool]]) -> str:
    """Return SVG path data drawing each horizontal run of dark modules as one rectangle."""
    commands = []
    for y, row in enumerate(matrix):
        x = 0
        while x < len(row):
            if not row[x]:
                x += 1
                continue
            start = x
            while x < len(row) and row[x]:
                x += 1
            commands.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
    return "".join(commands)


def _svg_logo(logo: bytes, edge: int) -> str:
    """Return SVG elements for the white pad and the embedded logo, centred in edge units."""
    with Image.open(io.BytesIO(logo)) as opened:
        logo_size = opened.size
    width, height, pad = _logo_box(logo_size, edge)
    x, y = (edge - width) / 2, (edge - height) / 2
    href = "data:image/png;base64," + base64.b64encode(logo).decode("ascii")
    return (
        f'<rect x="{x - pad:.3f}" y="{y - pad:.3f}" width="{width + 2 * pad:.3f}" '
        f'height="{height + 2 * pad:.3f}" fill="#ffffff"/>'
        f'<image x="{x:.3f}" y="{y:.3f}" width="{width:.3f}" height="{height:.3f}" '
        f'preserveAspectRatio="xMidYMid meet" href="{href}"/>'
    )


def sanitize_logo(raw: bytes, *, max_bytes: int = 2_000_000, max_pixels: int = 20_000_000) -> bytes:
    """Return an uploaded logo re-encoded as an RGBA PNG, at most LOGO_MAX_EDGE px on its long side.

    Accepts PNG, JPEG and WebP by their decoded format, never by name. Applies
    EXIF orientation. Raises InvalidLogo, with a message for the user, for
    empty or oversize uploads, other formats, corrupt or truncated files, and
    images over max_pixels (decompression bombs).
    """
    if not raw:
        raise InvalidLogo("The logo file is empty")
    if len(raw) > max_bytes:
        raise InvalidLogo(f"Logo must be at most {max_bytes // 1000:,} kB")
    image = _open_logo(raw, max_pixels=max_pixels)
    try:
        image.thumbnail((LOGO_MAX_EDGE, LOGO_MAX_EDGE), Image.Resampling.LANCZOS)
        image = ImageOps.exif_transpose(image).convert("RGBA")
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidLogo("The logo file is damaged or incomplete") from exc
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _open_logo(raw: bytes, *, max_pixels: int) -> Image.Image:
    """Open raw as a PNG, JPEG or WebP no larger than max_pixels, without decoding it yet."""
    try:
        # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that;
        # a warning would let the bomb through, so it is raised here and refused below.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=LOGO_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidLogo("The logo has too many pixels") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidLogo("Logo must be a PNG, JPEG or WebP image") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidLogo("Logo must be a PNG, JPEG or WebP image")
    if image.width * image.height > max_pixels:
        raise InvalidLogo("The logo has too many pixels")
    return image


class ImageCache:
    """Rendered images kept as files named by key in one directory.

    Keys are file-name-safe (see cache_key). The directory is created on the
    first write. Writes are atomic, so readers never see half a file.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def get(self, key: str) -> bytes | None:
        """Return the cached bytes for key, or None when absent."""
        try:
            content = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        # An empty file can only come from a crash mid-write on some file systems.
        return content or None

    def put(self, key: str, content: bytes) -> None:
        """Store content under key, replacing any earlier version atomically."""
        path = self._path(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        # A leading dot keeps temporary files out of every key and every prefix.
        fd, temp_name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as temp_file:
                temp_file.write(content)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def discard_prefix(self, prefix: str) -> None:
        """Delete every cached file whose key starts with prefix (non-empty)."""
        _check_name(prefix, what="prefix")
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(prefix) and entry.is_file():
                Path(entry.path).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        """Return the file path for key, refusing anything that is not a plain file name."""
        _check_name(key, what="key")
        return self.directory / key


def _check_name(name: str, *, what: str) -> None:
    """Raise ValueError unless name is a non-empty, file-name-safe string not starting with a dot."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"Unsafe cache {what}: {name!r}")


def cache_key(slug: str, *, kind: str, size: int | None, fingerprint: str) -> str:
    """Return the cache key for one rendering of a code's image.

    Shape: "{slug}-{fingerprint[:16]}-{size}.{kind}", or "{slug}-{fingerprint[:16]}.{kind}"
    when size is None (SVG). Every key starts with slug + "-", so
    discard_prefix(slug + "-") drops all variants. Raises ValueError for an
    unknown kind or a slug or fingerprint that is not file-name-safe.
    """
    if kind not in _KINDS:
        raise ValueError(f"Unknown image kind: {kind!r}")
    _check_name(slug, what="slug")
    _check_name(fingerprint, what="fingerprint")
    size_part = "" if size is None else f"-{int(size)}"
    return f"{slug}-{fingerprint[:16]}{size_part}.{kind}"


def etag_for(content: bytes) -> str:
    """Return a strong, quoted ETag for content: the first 32 hex digits of its SHA-256."""
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
