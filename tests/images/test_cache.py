"""Tests for qrtrack.images.cache: the disk cache of rendered images and the names it keeps them under."""

import os

import pytest

from qrtrack.images.cache import ImageCache, cache_key, clamp_size, etag_for, image_fingerprint


def test_fingerprint_changes_with_the_url_or_the_logo():
    base = image_fingerprint("https://qr.example.com/p/Ab3dE9x", None)
    assert base == image_fingerprint("https://qr.example.com/p/Ab3dE9x", None)
    assert base != image_fingerprint("https://qr.example.com/sub/p/Ab3dE9x", None)
    assert base != image_fingerprint("https://qr.example.com/p/Ab3dE9x", "ab" * 32)


def test_clamp_size_bounds():
    assert (clamp_size(None), clamp_size(1), clamp_size(10**6), clamp_size(512)) == (400, 64, 2048, 512)


# ImageCache


def test_cache_get_of_missing_key_is_none_and_creates_nothing(tmp_path):
    cache = ImageCache(tmp_path / "cache" / "img")
    assert cache.get("abc-0123456789abcdef-400.png") is None
    cache.discard_prefix("abc-")
    assert not (tmp_path / "cache").exists()


def test_cache_put_then_get_round_trips_and_creates_the_directory(tmp_path):
    cache = ImageCache(tmp_path / "cache" / "img")
    cache.put("abc-0123456789abcdef-400.png", b"\x89PNG first")
    cache.put("abc-0123456789abcdef-400.png", b"\x89PNG second")
    assert cache.get("abc-0123456789abcdef-400.png") == b"\x89PNG second"


def test_cache_put_leaves_no_temporary_files(tmp_path):
    cache = ImageCache(tmp_path)
    cache.put("abc-0123456789abcdef.svg", b"<svg/>")
    assert os.listdir(tmp_path) == ["abc-0123456789abcdef.svg"]


def test_cache_put_that_fails_midway_leaves_no_temporary_files(tmp_path):
    cache = ImageCache(tmp_path)
    with pytest.raises(TypeError):
        cache.put("abc-0123456789abcdef.svg", "not bytes")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_cache_discard_prefix_removes_only_that_slugs_files(tmp_path):
    cache = ImageCache(tmp_path)
    fingerprint = "0123456789abcdef0123"
    mine = [cache_key("abc", kind="png", size=400, fingerprint=fingerprint),
            cache_key("abc", kind="svg", size=None, fingerprint=fingerprint)]
    theirs = cache_key("abcd", kind="png", size=400, fingerprint=fingerprint)
    for key in [*mine, theirs]:
        cache.put(key, b"image")
    cache.discard_prefix("abc-")
    assert [cache.get(key) for key in mine] == [None, None]
    assert cache.get(theirs) == b"image"


@pytest.mark.parametrize("key", ["", "../escape.png", "a/b.png", ".hidden", "-dash.png", "abc\x00.png", "ab c.png",
                                 "é.png"])
def test_cache_refuses_keys_that_are_not_plain_file_names(tmp_path, key):
    cache = ImageCache(tmp_path)
    with pytest.raises(ValueError, match="Unsafe cache key"):
        cache.put(key, b"x")
    with pytest.raises(ValueError, match="Unsafe cache key"):
        cache.get(key)


def test_cache_discard_prefix_refuses_an_empty_prefix(tmp_path):
    with pytest.raises(ValueError, match="Unsafe cache prefix"):
        ImageCache(tmp_path).discard_prefix("")


# cache_key and etag_for


def test_cache_key_has_the_documented_shape():
    fingerprint = "f" * 64
    assert cache_key("Ab3dE9", kind="png", size=400, fingerprint=fingerprint) == f"Ab3dE9-{'f' * 16}-400.png"
    assert cache_key("Ab3dE9", kind="svg", size=None, fingerprint=fingerprint) == f"Ab3dE9-{'f' * 16}.svg"


def test_cache_key_differs_when_size_or_fingerprint_differs():
    keys = {cache_key("x", kind="png", size=s, fingerprint=f) for s in (128, 400) for f in ("a" * 16, "b" * 16)}
    assert len(keys) == 4


@pytest.mark.parametrize(
    ("slug", "kind", "message"),
    [
        ("../x", "png", "Unsafe cache slug"),
        ("x", "gif", "Unknown image kind"),
        ("x/y", "svg", "Unsafe cache slug"),
    ],
)
def test_cache_key_refuses_unsafe_slug_or_unknown_kind(slug, kind, message):
    with pytest.raises(ValueError, match=message):
        cache_key(slug, kind=kind, size=400, fingerprint="ab" * 8)


def test_etag_is_quoted_stable_and_changes_with_content():
    tag = etag_for(b"abc")
    assert tag == etag_for(b"abc")
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert len(tag) == 34
    assert tag[1:-1] == "ba7816bf8f01cfea414140de5dae2223"
    assert etag_for(b"abd") != tag
