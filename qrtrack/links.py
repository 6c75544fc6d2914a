"""The public URLs of a code, made from the site's base URL and the code's slug, and the slug read back from one.

The lean CGI handler (fastpath) builds short URLs too, so this module imports nothing at the top; reading a
short URL back (slug_in_short_url) happens only when a code is saved, and imports what it needs then.
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


def slug_in_short_url(base_url: str, url: str) -> str | None:
    """The slug when url is a short URL of the site at base_url, whatever its scheme, port, case of host,
    query or fragment (each reaches the same scan); else None."""
    from urllib.parse import urlsplit

    from .destinations import ascii_domain

    try:
        site, target = urlsplit(base_url), urlsplit(url)
        is_this_site = bool(target.hostname) and ascii_domain(target.hostname).lower() == ascii_domain(
            site.hostname or "").lower()
    except ValueError:
        return None
    prefix = f"{site.path.rstrip('/')}/p/"
    slug = target.path[len(prefix):] if is_this_site and target.path.startswith(prefix) else ""
    return slug if slug and "/" not in slug else None
