"""The host of a destination URL as browsers read it: checked when a code is saved, in ASCII when a scan redirects.

Browsers follow the URL Standard, which turns an internationalised host into ASCII by UTS #46 without
transitional processing (IDNA 2008's letters): ß and ς stay themselves. Python's "idna" codec, which werkzeug's
iri_to_uri uses, is IDNA 2003 and maps them to ss and σ, so https://faß.de/ sent its visitors to fass.de, another
domain. The mapping table is the idna package's; the URL Standard's looser rules on what a label may hold are
applied here, since the package's own IDNA 2008 checks refuse hosts browsers open, such as emoji domains.

Imported by the lean scan handler only for a destination that is not ASCII, so it imports nothing at the top.
"""
from __future__ import annotations

# The URL Standard's forbidden host code points that can reach a host here: urlsplit keeps /?#@: out of it and
# validate_destination refuses whitespace and control characters.
FORBIDDEN_IN_HOST = frozenset("<>\\^|")


def ascii_authority(netloc: str) -> str:
    """netloc (user info, host and port, as urlsplit gives it) with its host in ASCII, as a browser sends it.

    ValueError, with a reason a person can act on, when the host is not one a browser opens.
    """
    userinfo, at, host_and_port = netloc.rpartition("@")
    if host_and_port.startswith("["):
        address, bracket, after = host_and_port[1:].partition("]")
        if not bracket or (after and not after.startswith(":")) or not _is_ipv6_address(address):
            raise ValueError(f"{host_and_port!r} is not an IPv6 address in brackets, like [2001:db8::1]")
        return netloc
    host, colon, port = host_and_port.partition(":")
    return f"{userinfo}{at}{ascii_domain(host)}{colon}{port}"


def ascii_domain(host: str) -> str:
    """A domain name (or IPv4 address) as browsers look it up: internationalised labels as xn-- labels."""
    if not host.isascii():
        import idna

        try:
            host = idna.uts46_remap(host, std3_rules=False, transitional=False)
        except idna.IDNAError as error:
            raise ValueError(f"{host!r} is not a domain name: {error}") from None
    labels = host.split(".")
    trailing_dot = len(labels) > 1 and labels[-1] == ""
    if trailing_dot:
        labels.pop()
    return ".".join(_ascii_label(label, host) for label in labels) + ("." if trailing_dot else "")


def _ascii_label(label: str, host: str) -> str:
    if not label:
        raise ValueError(f"{host!r} is not a domain name: it has an empty part between dots")
    if not FORBIDDEN_IN_HOST.isdisjoint(label):
        raise ValueError(f"{host!r} is not a domain name: it holds one of {' '.join(sorted(FORBIDDEN_IN_HOST))}")
    if not label.isascii():
        return "xn--" + label.encode("punycode").decode("ascii")
    if label[:4].lower() == "xn--" and not _is_punycode(label[4:].lower()):  # UTS #46 lowercases before decoding
        raise ValueError(f"{host!r} is not a domain name: {label!r} is not a valid xn-- (punycode) label")
    return label


def _is_punycode(encoded: str) -> bool:
    """True when encoded decodes to a label that needed encoding and that UTS #46 leaves as it is, as the URL
    Standard asks of an xn-- label."""
    try:
        decoded = encoded.encode("ascii").decode("punycode")
    except UnicodeError:
        return False
    if decoded.isascii():
        return False
    import idna

    try:
        return idna.uts46_remap(decoded, std3_rules=False, transitional=False) == decoded
    except idna.IDNAError:
        return False


def _is_ipv6_address(address: str) -> bool:
    """A zone (fe80::1%eth0) is refused, as browsers refuse it; so is the IPvFuture form ([v1.x])."""
    import ipaddress

    if "%" in address:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def location(destination: str) -> str:
    """destination as an ASCII URI for a Location header: the host as ascii_authority makes it, the rest
    percent-encoded. A destination saved before hosts were checked keeps the host werkzeug gives it."""
    if destination.isascii():
        return destination
    from urllib.parse import urlsplit, urlunsplit

    from werkzeug.urls import iri_to_uri

    parts = urlsplit(destination)
    try:
        parts = parts._replace(netloc=ascii_authority(parts.netloc))
    except ValueError:
        pass
    return iri_to_uri(urlunsplit(parts))
