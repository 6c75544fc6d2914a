"""destinations: a destination's host as browsers read it (the URL Standard's UTS #46, not IDNA 2003)."""
from __future__ import annotations

import idna
import pytest

from qrtrack.destinations import ascii_authority, ascii_domain, location


@pytest.mark.parametrize("host", ["faß.de", "ς.com", "bücher.de", "例え.jp", "пример.рф", "ﻣﺜﺎﻝ.example"])
def test_internationalised_hosts_take_the_ascii_form_idna_2008_gives_them(host):
    """The reference is the idna package's own UTS #46 non-transitional encoding, for hosts it accepts."""
    expected = idna.encode(host, uts46=True, transitional=False).decode("ascii")
    assert ascii_domain(host) == expected


@pytest.mark.parametrize(("host", "expected"), [
    ("faß.de", "xn--fa-hia.de"),  # IDNA 2003 made this fass.de, another domain
    ("ς.com", "xn--3xa.com"),  # and this xn--4xa.com (σ)
    ("i❤.ws", "xn--i-7iq.ws"),  # emoji domains open in browsers, though IDNA 2008 proper refuses them
    ("ＥＸＡＭＰＬＥ.com", "example.com"),  # fullwidth letters are mapped
    ("例え。jp", "xn--r8jz45g.jp"),  # so is the ideographic full stop, to a dot
    ("bücher.de.", "xn--bcher-kva.de."),  # a fully qualified name keeps its trailing dot
    ("Example.COM", "Example.COM"),  # ASCII hosts are left as they are
    ("xn--fa-hia.de", "xn--fa-hia.de"),
    ("XN--Bcher-KVA.de", "XN--Bcher-KVA.de"),  # read as xn--bcher-kva: UTS #46 lowercases before decoding
    ("192.0.2.1", "192.0.2.1"),
])
def test_hosts_are_written_as_browsers_send_them(host, expected):
    assert ascii_domain(host) == expected


@pytest.mark.parametrize(("netloc", "reason"), [
    ("a..b", "empty part between dots"),
    (".", "empty part between dots"),
    ("example.com..", "empty part between dots"),
    ("xn--", "not a valid xn-- (punycode) label"),
    ("xn--abc-.de", "not a valid xn-- (punycode) label"),  # decodes to ASCII: nothing needed encoding
    ("xn--abc.de", "not a valid xn-- (punycode) label"),  # decodes to control characters
    ("xn--zz!!.de", "not a valid xn-- (punycode) label"),
    ("exa<mple.com", "holds one of"),
    ("a|b.com", "holds one of"),
    ("⒈.com", "not a domain name"),
    ("[::1]x", "not an IPv6 address in brackets"),
    ("[::1", "not an IPv6 address in brackets"),
    ("[v1.x]", "not an IPv6 address in brackets"),
    ("[fe80::1%25eth0]", "not an IPv6 address in brackets"),
    ("[1:2:3:4:5:6:7:8:9]", "not an IPv6 address in brackets"),
    ("[::ffff:01.2.3.4]", "not an IPv6 address in brackets"),
])
def test_hosts_a_browser_would_not_open_are_refused_with_the_reason(netloc, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        ascii_authority(netloc)


@pytest.mark.parametrize(("netloc", "expected"), [
    ("user:pw@faß.de:8443", "user:pw@xn--fa-hia.de:8443"),
    ("a@b@faß.de", "a@b@xn--fa-hia.de"),  # the host follows the last @, as urlsplit and browsers agree
    ("[2001:db8::1]:8080", "[2001:db8::1]:8080"),
    ("[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]"),
    ("example.com:000443", "example.com:000443"),
])
def test_user_info_and_port_are_kept_around_the_host(netloc, expected):
    assert ascii_authority(netloc) == expected


def test_a_location_is_ascii_with_the_host_in_idna_2008_form_and_the_rest_percent_encoded():
    assert location("https://faß.de/straße?q=ä#ö") == "https://xn--fa-hia.de/stra%C3%9Fe?q=%C3%A4#%C3%B6"
    assert location("https://example.com/a?b=c") == "https://example.com/a?b=c"


def test_a_destination_saved_before_hosts_were_checked_still_gets_an_ascii_location():
    """⒈.com is refused now; one saved earlier is sent as werkzeug writes it rather than failing the scan."""
    sent = location("https://⒈.com/ü")
    assert sent.isascii() and sent.endswith("/%C3%BC")
