"""qrtrack/links.py: the public URLs the API hands out are the ones the app answers."""
from urllib.parse import urlsplit

import pytest

from qrtrack import codes, links

from .web.dashboard.test_codes_pages import png_bytes


def test_every_public_url_of_a_code_is_answered_by_the_app(client, services, alice, api_headers):
    logo = codes.save_logo(services.logo_dir, png_bytes())
    code = codes.create_code(services.db, owner_id=alice, destination="https://example.com/landing", logo=logo,
                             logo_dir=services.logo_dir)
    listed = client.get("/api.php", headers=api_headers).get_json()["codes"][0]

    assert client.get(urlsplit(listed["short_url"]).path).headers["Location"] == "https://example.com/landing"
    image = client.get(urlsplit(listed["qr_image_url"]).path)
    assert image.status_code == 200 and image.mimetype == "image/png"
    with client.get(urlsplit(listed["logo"]).path) as served:  # a file response: closed when read
        assert served.data == codes.logo_path(services.logo_dir, logo).read_bytes()
    assert listed["short_url"] == links.short_url("http://localhost", code.slug)


def test_urls_keep_the_folder_of_the_base_url():
    base = "https://example.com/qr"
    assert links.short_url(base, "AbC12") == "https://example.com/qr/p/AbC12"
    assert links.qr_image_url(base, "AbC12") == "https://example.com/qr/img/AbC12.png"
    assert links.logo_url(base, "0f" * 32) == f"https://example.com/qr/logo/{'0f' * 32}.png"


@pytest.mark.parametrize(("url", "slug"), [
    ("https://qr.example.com/q/p/AbC12", "AbC12"),
    ("http://QR.Example.com:8080/q/p/AbC12?utm=x#top", "AbC12"),  # any scheme, port, case of host: the same scan
    ("https://qr.example.com/q/p/AbC12/", None),
    ("https://qr.example.com/p/AbC12", None),  # not under the site's folder
    ("https://other.example.com/q/p/AbC12", None),
    ("https://qr.example.com/q/img/AbC12.png", None),
    ("https://qr.example.com/q/p/", None),
    ("https://[::1]x/q/p/AbC12", None),
])
def test_a_short_url_of_the_site_gives_its_slug(url, slug):
    assert links.slug_in_short_url("https://qr.example.com/q", url) == slug


def test_a_short_url_with_an_internationalised_host_is_recognised_in_either_form():
    assert links.slug_in_short_url("https://xn--fa-hia.de", "https://faß.de/p/AbC12") == "AbC12"
    assert links.slug_in_short_url("https://faß.de", "https://xn--fa-hia.de/p/AbC12") == "AbC12"
