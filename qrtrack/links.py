"""The public URLs of a code, made from the site's base URL and the code's slug; standard library only.

The lean CGI handler (fastpath) builds short URLs too, so this module imports nothing.
"""
from __future__ import annotations


def short_url(base_url: str, slug: str) -> str:
    """What a code's QR image encodes and a scan opens. base_url has no trailing slash."""
    return f"{base_url}/p/{slug}"


def qr_image_url(base_url: str, slug: str) -> str:
    """The PNG of a code's QR image (also served as .svg). base_url has no trailing slash."""
    return f"{base_url}/img/{slug}.png"


def logo_url(base_url: str, logo: str) -> str:
    """The PNG of a code's logo, named by its content hash. base_url has no trailing slash."""
    return f"{base_url}/logo/{logo}.png"
