"""Tests for qrtrack.images.qr: every image is proven by decoding it with zxing-cpp."""

import io
import random
import shutil
import string
import struct
import subprocess
import sys
import zlib
from xml.etree import ElementTree

import pytest
import qrcode
import qrcode.constants
import qrcode.util
import zxingcpp
from PIL import Image, ImageChops, ImageDraw

from qrtrack.images import qr
from qrtrack.images.qr import (
    DEFAULT_SIZE,
    MAX_SIZE,
    MIN_SIZE,
    InvalidLogo,
    clamp_size,
    render_png,
    render_svg,
    sanitize_logo,
)

from ..conftest import PROJECT_ROOT, env_without_settings, needs_tool

URL = "https://qr.example.com/p/Ab3dE9"
RSVG = shutil.which("rsvg-convert")
needs_rsvg = needs_tool("rsvg-convert", install="the Debian package librsvg2-bin to test SVG output")


def gen_image_bytes(fmt: str, *, size=(300, 200), mode="RGB", exif=None) -> bytes:
    """Return a colourful test image encoded in fmt."""
    image = Image.new(mode, size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, size[0] // 2, size[1] // 2), fill="red")
    draw.ellipse((size[0] // 3, size[1] // 3, size[0] - 1, size[1] - 1), fill="blue")
    draw.line((0, size[1] - 1, size[0] - 1, 0), fill="green", width=8)
    out = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def gen_logo() -> bytes:
    """Return a sanitised colourful logo, as render_png and render_svg expect."""
    return sanitize_logo(gen_image_bytes("PNG", size=(240, 160), mode="RGBA"))


def decode(image: Image.Image) -> list[str]:
    """Return the text of every QR code zxing-cpp finds, after flattening onto white."""
    rgba = image.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, "white")
    flat.alpha_composite(rgba)
    return [result.text for result in zxingcpp.read_barcodes(flat.convert("L"))]


def rasterise_svg(svg: bytes) -> Image.Image:
    """Return the SVG rendered to a PIL image by rsvg-convert."""
    png = subprocess.run([RSVG, "--format=png"], input=svg, capture_output=True, check=True).stdout
    return Image.open(io.BytesIO(png))


def gen_payloads(count: int, *, seed: int) -> list[str]:
    """Return count short URLs like the codes' own, reproducibly random."""
    rng = random.Random(seed)
    hosts = ["qr.example.com", "go.example.org", "a.io", "scan.example.co.uk/some/path"]
    alphabet = string.ascii_letters + string.digits
    return [f"https://{rng.choice(hosts)}/p/{''.join(rng.choices(alphabet, k=rng.randint(4, 12)))}"
            for _ in range(count)]


def gen_qr(version: int, *, seed: int) -> qrcode.QRCode:
    """Return an unmade QRCode of this version holding random bytes that nearly fill it."""
    rng = random.Random(seed)
    level = seed % 4
    capacity = qrcode.util.BIT_LIMIT_TABLE[level][version] // 8 - 3  # bytes, less mode and length headers
    symbol = qrcode.QRCode(version=version, error_correction=level)
    symbol.add_data(bytes(rng.randrange(256) for _ in range(rng.randint(capacity // 2, capacity))))
    return symbol


def png_with_header(width: int, height: int) -> bytes:
    """Return a tiny 1-bit PNG that declares width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    data = zlib.compress(row * 8)  # only the first rows; decoding would fail late
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


# clamp_size


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, DEFAULT_SIZE), (0, MIN_SIZE), (-5, MIN_SIZE), (MIN_SIZE, MIN_SIZE), (300, 300),
     (MAX_SIZE, MAX_SIZE), (MAX_SIZE + 1, MAX_SIZE), (10**9, MAX_SIZE)],
)
def test_clamp_size_keeps_size_within_bounds_and_defaults_none(given, expected):
    assert clamp_size(given) == expected


# render_png


@pytest.mark.parametrize("size", [DEFAULT_SIZE, 128, 333, MAX_SIZE])
def test_png_is_exactly_size_square_and_decodes_to_the_data(size):
    image = Image.open(io.BytesIO(render_png(URL, size=size)))
    assert image.format == "PNG"
    assert image.size == (size, size)
    assert decode(image) == [URL]


def test_png_default_size_is_default_size():
    assert Image.open(io.BytesIO(render_png(URL))).size == (DEFAULT_SIZE, DEFAULT_SIZE)


@pytest.mark.parametrize(("asked", "given"), [(1, MIN_SIZE), (10_000, MAX_SIZE)])
def test_png_size_out_of_bounds_is_clamped(asked, given):
    assert Image.open(io.BytesIO(render_png(URL, size=asked))).size == (given, given)


def test_png_is_black_on_white_with_a_white_quiet_zone():
    image = Image.open(io.BytesIO(render_png(URL, size=400))).convert("L")
    assert set(image.tobytes()) == {0, 255}
    border = int(400 / 37 * 4) - 1  # version 3 is 29 modules, plus 4 of quiet zone each side
    assert image.crop((0, 0, 400, border)).getextrema() == (255, 255)
    assert image.crop((0, 0, border, 400)).getextrema() == (255, 255)


@pytest.mark.parametrize("size", [DEFAULT_SIZE, 200, MAX_SIZE])
def test_png_with_logo_decodes_and_shows_the_logo_in_the_centre(size):
    image = Image.open(io.BytesIO(render_png(URL, size=size, logo=gen_logo())))
    assert image.size == (size, size)
    assert decode(image) == [URL]
    centre = image.convert("RGB").crop((size * 3 // 8, size * 3 // 8, size * 5 // 8, size * 5 // 8))
    colours = {colour for _, colour in centre.getcolors(maxcolors=size * size)}
    assert any(r > 200 and g < 80 and b < 80 for r, g, b in colours), "no red from the logo"


def test_png_logo_and_pad_stay_centred_within_a_quarter_of_the_width():
    size = 800
    with_logo = Image.open(io.BytesIO(render_png(URL, size=size, logo=gen_logo()))).convert("RGB")
    # A logo-free rendering at the same EC level (H) differs from it only where logo and pad sit.
    level_h = qr._module_matrix(URL, has_logo=True)
    count = len(level_h)
    bare = Image.frombytes("L", (count, count), bytes(0 if dark else 255 for row in level_h for dark in row))
    bare = bare.resize((size, size), Image.Resampling.NEAREST).convert("RGB")
    left, top, right, bottom = ImageChops.difference(bare, with_logo).getbbox()
    assert right - left <= size * 0.25
    assert bottom - top <= size * 0.25
    assert abs((left + right) / 2 - size / 2) <= 2
    assert abs((top + bottom) / 2 - size / 2) <= 2


def test_png_uses_ec_m_without_logo_and_h_with_logo():
    m_modules = len(qr._module_matrix(URL, has_logo=False))
    h_modules = len(qr._module_matrix(URL, has_logo=True))
    # For this 31-character URL, M fits version 3 (29 modules) and H needs version 4 (33).
    assert (m_modules, h_modules) == (29 + 8, 33 + 8)


def test_png_logo_transparency_shows_the_white_pad():
    picture = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(picture).rectangle((0, 0, 199, 19), fill=(220, 30, 30, 255))  # a red bar along the top
    out = io.BytesIO()
    picture.save(out, format="PNG")
    size = 400
    image = Image.open(io.BytesIO(render_png(URL, size=size, logo=sanitize_logo(out.getvalue())))).convert("RGB")
    # The logo is about 83 px square around the centre; its lower part is transparent.
    assert image.crop((size // 2 - 30, size // 2 - 10, size // 2 + 30, size // 2 + 30)).getextrema() == (
        (255, 255), (255, 255), (255, 255))
    assert decode(image) == [URL]


# mask choice: the same as qrcode's own, which scores all eight masks module by module


def test_module_matrix_is_the_matrix_qrcode_makes():
    payloads = [URL, "x", "HELLO WORLD 123", "https://example.com/" + "ü" * 40, "9" * 300] + gen_payloads(6, seed=3)
    for data in payloads:
        for has_logo, level in ((False, qrcode.constants.ERROR_CORRECT_M), (True, qrcode.constants.ERROR_CORRECT_H)):
            expected = qrcode.QRCode(error_correction=level, box_size=1, border=qr.QUIET_ZONE)
            expected.add_data(data)
            expected.make(fit=True)
            assert qr._module_matrix(data, has_logo=has_logo) == expected.get_matrix(), (data, has_logo)


@pytest.mark.parametrize("error", [AttributeError("'QRCode' object has no attribute 'makeImpl'"),
                                   TypeError("makeImpl() takes 2 positional arguments but 3 were given")])
def test_module_matrix_lets_qrcode_choose_the_mask_when_its_internals_change(monkeypatch, error):
    """_best_mask lays symbols out with qrcode's own methods; a qrcode release that changed them must cost
    speed, not a broken code."""
    def changed_internals(symbol):
        raise error

    monkeypatch.setattr(qr, "_best_mask", changed_internals)
    for data in (URL, "9" * 300):
        expected = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=1,
                                 border=qr.QUIET_ZONE)
        expected.add_data(data)
        expected.make(fit=True)
        assert qr._module_matrix(data, has_logo=False) == expected.get_matrix()
    assert decode(Image.open(io.BytesIO(qr.render_png(URL)))) == [URL]


def test_best_mask_is_qrcode_choice_for_short_urls_at_every_level():
    chosen = []
    for number, data in enumerate(gen_payloads(64, seed=18004)):
        symbol = qrcode.QRCode(error_correction=number % 4)
        symbol.add_data(data)
        ours = qr._best_mask(symbol)
        chosen.append(symbol.best_mask_pattern())
        assert ours == chosen[-1], data
    assert set(chosen) == set(range(8)), "the payloads should make qrcode pick every mask"


@pytest.mark.parametrize("version", [1, 2, 6, 7, 14, 21, 27, 40])
def test_best_mask_is_qrcode_choice_for_a_full_symbol(version):
    symbol = gen_qr(version, seed=version)
    assert qr._best_mask(symbol) == symbol.best_mask_pattern()


@pytest.mark.parametrize(
    ("data", "level"),
    [("https://go.example.org/p/GEIU2EtCY2Y", qrcode.constants.ERROR_CORRECT_L),
     ("https://qr.example.com/p/PW1nw", qrcode.constants.ERROR_CORRECT_Q),
     ("https://go.example.org/p/74JSnZJrd", qrcode.constants.ERROR_CORRECT_L)],
)
def test_best_mask_keeps_the_first_of_tied_masks_as_qrcode_does(data, level):
    symbol = qrcode.QRCode(error_correction=level)
    symbol.add_data(data)
    scores = []
    for pattern in range(8):
        symbol.makeImpl(True, pattern)
        scores.append(qrcode.util.lost_point(symbol.modules))
    assert scores.count(min(scores)) == 2, "the payload should tie two masks for the lowest penalty"
    assert qr._best_mask(symbol) == symbol.best_mask_pattern()


# Every size of the alignment grid, the first with version information (7), and the largest.
@pytest.mark.parametrize("version", [1, 2, 6, 7, 13, 14, 20, 21, 27, 28, 34, 35, 40])
def test_mask_flips_turn_mask_0_into_every_mask_as_qrcode_lays_it_out(version):
    symbol = gen_qr(version, seed=version)
    grid = qr._grid(version)
    layouts = []
    for pattern in range(8):
        symbol.makeImpl(True, pattern)
        layouts.append(qr._pack(symbol.modules))
    assert [layouts[0] ^ flips for flips in grid.mask_flips] == layouts
    assert len(set(layouts)) == 8


@pytest.mark.parametrize("version", [1, 3, 7, 10])
def test_mask_penalty_is_qrcode_lost_point_for_every_mask(version):
    symbol = gen_qr(version, seed=version)
    for pattern in range(8):
        symbol.makeImpl(True, pattern)
        expected = qrcode.util.lost_point(symbol.modules)
        assert qr._mask_penalty(qr._pack(symbol.modules), qr._grid(version)) == expected, pattern


def test_mask_penalty_is_qrcode_lost_point_for_random_modules():
    # Darkness both ways of each 5 % step of rule 4; runs, blocks and finder look-alikes by chance.
    rng = random.Random(1804)
    for version in range(1, 11):
        count = version * 4 + 17
        for darkness in (0.05, 0.3, 0.45, 0.5, 0.55, 0.7, 0.95):
            modules = [[rng.random() < darkness for _ in range(count)] for _ in range(count)]
            expected = qrcode.util.lost_point(modules)
            assert qr._mask_penalty(qr._pack(modules), qr._grid(version)) == expected


# render_svg


def test_svg_has_an_opaque_white_background_and_no_logo_image():
    svg = render_svg(URL)
    assert svg.startswith(b"<?xml")
    assert b'fill="#ffffff"' in svg
    assert b"<image" not in svg


def test_svg_logo_and_pad_are_centred_within_a_quarter_of_the_width():
    root = ElementTree.fromstring(render_svg(URL, logo=gen_logo()))
    namespace = "{http://www.w3.org/2000/svg}"
    edge = float(root.get("viewBox").split()[2])
    pad = root.findall(f"{namespace}rect")[-1]
    logo = root.find(f"{namespace}image")
    for element in (pad, logo):
        x, y, width, height = (float(element.get(name)) for name in ("x", "y", "width", "height"))
        assert max(width, height) <= edge * 0.25
        assert x + width / 2 == pytest.approx(edge / 2, abs=0.01)
        assert y + height / 2 == pytest.approx(edge / 2, abs=0.01)
    assert float(pad.get("width")) > float(logo.get("width")), "the logo sits on a white pad"
    assert pad.get("fill") == "#ffffff"


@needs_rsvg
def test_svg_decodes_to_the_data():
    image = rasterise_svg(render_svg(URL))
    assert image.convert("RGBA").getpixel((0, 0)) == (255, 255, 255, 255), "background must be opaque white"
    assert decode(image) == [URL]


@needs_rsvg
def test_svg_with_logo_decodes_and_embeds_the_logo_as_a_data_uri():
    logo = gen_logo()
    svg = render_svg(URL, logo=logo)
    assert b'href="data:image/png;base64,' in svg
    image = rasterise_svg(svg)
    assert decode(image) == [URL]
    width = image.width
    centre = image.convert("RGB").crop((width * 3 // 8, width * 3 // 8, width * 5 // 8, width * 5 // 8))
    colours = {colour for _, colour in centre.getcolors(maxcolors=width * width)}
    assert any(r > 200 and g < 80 and b < 80 for r, g, b in colours), "no red from the logo"


# sanitize_logo


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_sanitize_logo_accepts_png_jpeg_webp_and_returns_rgba_png(fmt):
    result = Image.open(io.BytesIO(sanitize_logo(gen_image_bytes(fmt))))
    assert result.format == "PNG"
    assert result.mode == "RGBA"
    assert result.size == (300, 200)


def test_sanitize_logo_accepts_a_multi_frame_jpeg_from_a_phone_camera():
    out = io.BytesIO()
    second_frame = Image.new("RGB", (50, 40))
    Image.new("RGB", (50, 40), "red").save(out, format="MPO", save_all=True, append_images=[second_frame])
    result = Image.open(io.BytesIO(sanitize_logo(out.getvalue())))
    assert result.format == "PNG"
    assert result.size == (50, 40)


def test_sanitize_logo_keeps_transparency():
    result = Image.open(io.BytesIO(sanitize_logo(gen_image_bytes("PNG", mode="RGBA", size=(40, 40)))))
    transparent = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    out = io.BytesIO()
    transparent.save(out, format="PNG")
    assert Image.open(io.BytesIO(sanitize_logo(out.getvalue()))).getpixel((5, 5))[3] == 0
    assert result.getpixel((1, 1))[3] == 255


def test_sanitize_logo_downscales_long_side_to_512():
    result = Image.open(io.BytesIO(sanitize_logo(gen_image_bytes("JPEG", size=(2000, 1000)))))
    assert result.size == (512, 256)


def test_sanitize_logo_applies_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    result = Image.open(io.BytesIO(sanitize_logo(gen_image_bytes("JPEG", size=(300, 200), exif=exif))))
    assert result.size == (200, 300)
    red_corner = result.convert("RGB").getpixel((result.width - 5, 5))
    assert red_corner[0] > 200, "red top-left quarter should end up top-right"
    assert red_corner[1] < 80, "red top-left quarter should end up top-right"


@pytest.mark.parametrize(
    "raw",
    [gen_image_bytes("GIF"), gen_image_bytes("BMP"), gen_image_bytes("TIFF"),
     b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"hello, this is not an image"],
    ids=["gif", "bmp", "tiff", "svg", "text"],
)
def test_sanitize_logo_refuses_other_formats(raw):
    with pytest.raises(InvalidLogo, match="Logo must be a PNG, JPEG or WebP image"):
        sanitize_logo(raw)


def test_sanitize_logo_refuses_empty_bytes():
    with pytest.raises(InvalidLogo, match="empty"):
        sanitize_logo(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_sanitize_logo_refuses_a_truncated_file(fmt):
    raw = gen_image_bytes(fmt, size=(400, 400))
    with pytest.raises(InvalidLogo):
        sanitize_logo(raw[: len(raw) // 2])


def test_sanitize_logo_refuses_more_bytes_than_max_bytes():
    raw = gen_image_bytes("PNG")
    with pytest.raises(InvalidLogo, match="at most"):
        sanitize_logo(raw, max_bytes=len(raw) - 1)
    assert sanitize_logo(raw, max_bytes=len(raw))


@pytest.mark.parametrize(
    ("width", "height"),
    [(20_000, 20_000), (10_000, 10_000), (5_000, 5_000)],
    ids=["over-pillow-error-limit", "in-pillow-warning-band", "over-max-pixels-only"],
)
def test_sanitize_logo_refuses_a_decompression_bomb_without_a_warning(width, height):
    raw = png_with_header(width, height)
    assert len(raw) < 2_000
    with pytest.raises(InvalidLogo, match="too many pixels"):
        sanitize_logo(raw)


def test_sanitize_logo_honours_a_smaller_max_pixels():
    with pytest.raises(InvalidLogo, match="too many pixels"):
        sanitize_logo(gen_image_bytes("PNG", size=(100, 100)), max_pixels=9_999)


# start-up cost


def test_starting_the_app_loads_neither_qrcode_nor_pillow_until_an_image_is_rendered(tmp_path):
    """Under CGI every dashboard page and API call starts the app afresh, and most of them render no image."""
    code = (
        "import sys\n"
        "from qrtrack import create_app\n"
        "from qrtrack.images import qr\n"
        f"create_app({{'TESTING': True, 'ENV_FILE': None, 'INSTANCE_PATH': {str(tmp_path)!r}}})\n"
        "assert not {'qrcode', 'PIL'} & set(sys.modules), 'loaded at start'\n"
        f"assert qr.render_png({URL!r}).startswith(bytes.fromhex('89504e47'))\n"
        "assert {'qrcode', 'PIL'} <= set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=PROJECT_ROOT, env=env_without_settings(),
                   check=True, timeout=60)


def test_warm_up_loads_qrcode_and_pillow_before_the_first_image():
    """gunicorn's workers call it (through AppServices.warm_up) so no visitor's image waits for the imports."""
    code = (
        "import sys\n"
        "from qrtrack.images import qr\n"
        "assert not {'qrcode', 'PIL'} & set(sys.modules)\n"
        "qr.warm_up()\n"
        "assert {'qrcode', 'PIL.PngImagePlugin'} <= set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=PROJECT_ROOT, env=env_without_settings(),
                   check=True, timeout=60)
