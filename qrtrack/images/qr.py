"""Render QR codes as PNG or SVG bytes and vet uploaded logos (the disk cache is image_cache.py).

Pure module: no Flask, no database. Callers pass plain values and get bytes back.
qrcode and Pillow are imported by the functions that use them, not here: the app imports this module
at start, and under CGI each request is a fresh start, most of which (dashboard pages, API calls) render nothing.
"""

from __future__ import annotations

import base64
import functools
import io
import warnings
import zlib
from typing import TYPE_CHECKING, NamedTuple

from .cache import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, clamp_size  # noqa: F401 - part of this module's interface

QUIET_ZONE = 4  # modules of white border, as the QR spec asks
LOGO_RATIO = 0.25  # logo and its pad, as a fraction of the image width; 0.35 stops decoding
LOGO_MAX_EDGE = 512  # long side of a sanitised logo, in pixels
LOGO_FORMATS = ("PNG", "JPEG", "WEBP")
# Pillow reports a JPEG carrying extra frames (common from phone cameras) as MPO.
ACCEPTED_FORMATS = frozenset(LOGO_FORMATS) | {"MPO"}
SVG_MODULE_PX = 10  # intrinsic width and height of an SVG, in pixels per module
# Penalty rule 3 of ISO/IEC 18004: a 1:1:3:1:1 finder look-alike with four light modules on one side.
FINDER_LOOK_ALIKES = ("10111010000", "00001011101")
WARM_UP_DATA = "https://qr.example.com/p/warm"
_BIT_DIGITS = bytes.maketrans(b"\x00\x01", b"01")  # bytes of 0 and 1 to the digits int(..., 2) reads

if TYPE_CHECKING:
    import qrcode
    from PIL import Image


class InvalidLogo(ValueError):
    """An uploaded logo was refused; str(exc) is a message fit to show the user."""


def _module_matrix(data: str, *, has_logo: bool) -> list[list[bool]]:
    """Return the QR modules for data, quiet zone included; True is dark.

    Error correction is M, or H when a logo will cover the centre.
    """
    import qrcode
    import qrcode.constants

    level = qrcode.constants.ERROR_CORRECT_H if has_logo else qrcode.constants.ERROR_CORRECT_M
    qr = qrcode.QRCode(error_correction=level, box_size=1, border=QUIET_ZONE)
    qr.add_data(data)
    # qrcode's own choice (best_mask_pattern) lays out and scores all eight masks in pure Python,
    # most of a render's time; _best_mask picks the same mask for a fraction of that.
    try:
        qr.mask_pattern = _best_mask(qr)
    except (AttributeError, TypeError):  # qrcode's internals changed under _best_mask: let qrcode choose, slower
        qr.mask_pattern = None
    qr.make(fit=False)
    return qr.get_matrix()


def _best_mask(qr: qrcode.QRCode) -> int:
    """Return the mask pattern qrcode's best_mask_pattern would choose for qr's data.

    Scores what qrcode scores (each mask applied to the layout with blank format
    and version information) with the same penalties (_mask_penalty), and keeps
    the first lowest score as it does. Fits qr's version if not yet fitted.
    """
    qr.makeImpl(True, 0)
    grid = _grid(qr.version)
    under_mask_0 = _pack(qr.modules)
    scores = [_mask_penalty(under_mask_0 ^ flips, grid) for flips in grid.mask_flips]
    return scores.index(min(scores))


class _Grid(NamedTuple):
    """Bit masks for a symbol of count x count modules packed by _pack, built once per version.

    The masks select bit positions p where a rule applies: across, p and p + 1
    lie in one row; down, p and p + stride in one column; the windows, an
    11-module run from p lies in one row or column. mask_flips holds, for each
    mask pattern, the modules it makes differ from mask 0 (data modules only).
    """

    count: int
    stride: int
    across: int
    down: int
    windows_across: int
    windows_down: int
    mask_flips: tuple[int, ...]


def _pack(rows: list[list[bool]]) -> int:
    """Return rows as one int, True as a set bit, the first row highest.

    A zero guard bit precedes each row, so a row is stride = count + 1 bits
    apart from the next and a shift along a row never reaches into another.
    """
    return int(b"".join(b"\x00" + bytes(row) for row in rows).translate(_BIT_DIGITS), 2)


@functools.cache
def _grid(version: int) -> _Grid:
    """Return the packed masks for symbols of this version, kept for the life of the process."""
    count = version * 4 + 17
    stride = count + 1
    full_row = "0" + "1" * count
    return _Grid(
        count=count,
        stride=stride,
        across=int(("00" + "1" * (count - 1)) * count, 2),
        down=int("0" * stride + full_row * (count - 1), 2),
        windows_across=int(("0" * 11 + "1" * (count - 10)) * count, 2),
        windows_down=int("0" * (stride * 10) + full_row * (count - 10), 2),
        mask_flips=_mask_flips(version, count),
    )


def _mask_flips(version: int, count: int) -> tuple[int, ...]:
    """For each mask pattern, the data modules it sets differently from mask 0, packed as _pack does.

    Function patterns and format and version information are never masked;
    they are found by laying them out with qrcode's own methods.
    """
    import qrcode
    import qrcode.util

    layout = qrcode.QRCode(version=version)
    layout.modules_count = count
    layout.modules = [[None] * count for _ in range(count)]
    for row, col in ((0, 0), (count - 7, 0), (0, count - 7)):
        layout.setup_position_probe_pattern(row, col)
    layout.setup_position_adjust_pattern()
    layout.setup_timing_pattern()
    layout.setup_type_info(True, 0)
    if version >= 7:
        layout.setup_type_number(True)
    is_data = _pack([[cell is None for cell in row] for row in layout.modules])
    # Every mask pattern repeats every 12 rows and every 6 columns.
    masks = [qrcode.util.mask_func(pattern) for pattern in range(8)]
    tiles = [[[mask(i, j) for j in range(6)] * (count // 6 + 1) for i in range(12)] for mask in masks]
    patterns = [_pack([tile[i % 12][:count] for i in range(count)]) for tile in tiles]
    return tuple((patterns[0] ^ pattern) & is_data for pattern in patterns)


def _mask_penalty(symbol: int, grid: _Grid) -> int:
    """Return qrcode's lost_point (ISO/IEC 18004 penalty rules 1 to 4) for a symbol packed by _pack.

    Each rule runs as a few operations on the whole packed symbol rather than
    module by module: shifting by 1 steps along a row, by grid.stride down a column.
    """
    stride = grid.stride
    across = ~(symbol ^ (symbol >> 1)) & grid.across  # bit p: module p matches the next in its row
    down = ~(symbol ^ (symbol >> stride)) & grid.down  # bit p: module p matches the next in its column
    penalty = _run_penalty(across, 1) + _run_penalty(down, stride)
    penalty += 3 * (across & down & (down >> 1)).bit_count()  # rule 2: 2 x 2 blocks of one colour
    finder_like = _count_finder_look_alikes(symbol, 1, grid.windows_across)
    finder_like += _count_finder_look_alikes(symbol, stride, grid.windows_down)
    penalty += 40 * finder_like
    # Rule 4 with the same float arithmetic as qrcode, so a share on a 5 % boundary rounds the same way.
    return penalty + int(abs(float(symbol.bit_count()) / (grid.count**2) * 100 - 50) / 5) * 10


def _run_penalty(same: int, step: int) -> int:
    """Rule 1: each run of n >= 5 same-colour modules costs n - 2; same has bit p set where p matches p + step."""
    five = same & (same >> step) & (same >> 2 * step) & (same >> 3 * step)  # bit p: p to p + 4 steps match
    # A run of n holds n - 4 windows of five, one of which starts it: (n - 4) + 2 * 1 = n - 2.
    return five.bit_count() + 2 * (five & ~(same << step)).bit_count()


def _count_finder_look_alikes(symbol: int, step: int, windows: int) -> int:
    """Rule 3: the number of FINDER_LOOK_ALIKES starting at any bit of windows and going on by step."""
    found = 0
    for pattern in FINDER_LOOK_ALIKES:
        match = windows
        for offset, module in enumerate(pattern):
            shifted = symbol >> (offset * step)
            match &= shifted if module == "1" else ~shifted
        found += match.bit_count()
    return found


def _logo_box(logo_size: tuple[int, int], edge: float) -> tuple[float, float, float]:
    """Fit a logo inside a LOGO_RATIO square of an image with the given edge.

    Returns (logo width, logo height, pad) in the image's units; the pad
    surrounds the logo on every side and is counted within the square.
    """
    box = edge * LOGO_RATIO
    pad = box / 12
    scale = (box - 2 * pad) / max(logo_size)
    return logo_size[0] * scale, logo_size[1] * scale, pad


def warm_up() -> None:
    """For long-running servers: import qrcode and Pillow and render once now, not on a visitor's first image."""
    render_png(WARM_UP_DATA, size=MIN_SIZE)


def render_png(data: str, *, size: int = DEFAULT_SIZE, logo: bytes | None = None) -> bytes:
    """Return a PNG of exactly size x size pixels encoding data, black on white.

    size is clamped with clamp_size. Modules are scaled with NEAREST, so at
    small sizes a long payload may lose modules; short URLs decode from 128 px.
    logo must be bytes returned by sanitize_logo; it is drawn centred on a
    white pad, the two together at most LOGO_RATIO of the width, and EC is H.
    """
    from PIL import Image

    size = clamp_size(size)
    matrix = _module_matrix(data, has_logo=logo is not None)
    count = len(matrix)
    pixels = bytes(0 if dark else 255 for row in matrix for dark in row)
    image = Image.frombytes("L", (count, count), pixels).resize((size, size), Image.Resampling.NEAREST)
    if logo is None:
        image = image.convert("1", dither=Image.Dither.NONE)
        encoding = {}
    else:
        image = image.convert("RGB")
        _paste_logo(image, logo)
        # Runs of one colour are most of a QR code: zlib's run-length strategy encodes this RGB image in ~0.6x
        # the time (5.3 against 3.0 ms at 400 px, 98 against 71 ms at 2048), for 10 % more bytes at 400 px and
        # 3 % fewer at 2048. The 1-bit images without a logo keep the default, which is 35 % smaller there.
        encoding = {"compress_type": zlib.Z_RLE}
    out = io.BytesIO()
    image.save(out, format="PNG", **encoding)
    return out.getvalue()


def _paste_logo(image: Image.Image, logo: bytes) -> None:
    """Draw the logo, on its white pad, at the centre of a square RGB image."""
    from PIL import Image

    with Image.open(io.BytesIO(logo)) as opened:
        rgba = opened.convert("RGBA")
    # Flattened onto the pad's white before scaling: the same picture as scaling with alpha and then
    # compositing, with less rounding, and cheaper (three channels, no premultiplying round trip).
    picture = Image.new("RGB", rgba.size, (255, 255, 255))
    picture.paste(rgba, (0, 0), rgba)
    edge = image.width
    width, height, pad = _logo_box(picture.size, edge)
    width, height, pad = max(1, int(width)), max(1, int(height)), max(1, int(pad))
    picture = picture.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pad_size = (width + 2 * pad, height + 2 * pad)
    pad_origin = ((edge - pad_size[0]) // 2, (edge - pad_size[1]) // 2)
    image.paste((255, 255, 255), (*pad_origin, pad_origin[0] + pad_size[0], pad_origin[1] + pad_size[1]))
    image.paste(picture, (pad_origin[0] + pad, pad_origin[1] + pad))


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
    from PIL import Image

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
    from PIL import Image, ImageOps

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
    from PIL import Image

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
