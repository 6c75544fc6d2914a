"""The disk cache of rendered QR images and what names them; standard library only.

Split from qr.py so the lean handler in front of Flask can serve a cached image without
importing qrcode or Pillow; and free of re and pathlib, which a CGI scan would pay for (see config).
"""
from __future__ import annotations

import os

MIN_SIZE = 64
MAX_SIZE = 2048
DEFAULT_SIZE = 400
_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_KINDS = frozenset({"png", "svg"})
IMAGE_CACHE_CONTROL = "public, max-age=300"
VERSIONED_IMAGE_CACHE_CONTROL = "public, max-age=31536000, immutable"
MIMETYPES = {"png": "image/png", "svg": "image/svg+xml"}
VERSION_LENGTH = 16
LOWER_HEX_DIGITS = frozenset("0123456789abcdef")


def clamp_size(size: int | None) -> int:
    """Return DEFAULT_SIZE for None, else size clamped into [MIN_SIZE, MAX_SIZE]."""
    if size is None:
        return DEFAULT_SIZE
    return max(MIN_SIZE, min(MAX_SIZE, int(size)))


def image_fingerprint(data: str, logo: str | None) -> str:
    """What a code's image depends on: the encoded URL and the logo's content hash."""
    return _sha256_hex(f"{data}|{logo or ''}".encode())


def image_version(data: str, logo: str | None) -> str:
    """A short name of what a code's image shows, for URLs that must change when the image does (?v=...)."""
    return image_fingerprint(data, logo)[:VERSION_LENGTH]


def image_cache_control(requested_version: str | None, *, fingerprint: str) -> str:
    """Cache-Control for the image with this fingerprint: for good when its URL names the version it shows
    (the dashboard's ?v=), since a new logo gives a new URL; else five minutes, so a logo change reaches
    printed-link readers soon."""
    if requested_version is not None and requested_version == fingerprint[:VERSION_LENGTH]:
        return VERSIONED_IMAGE_CACHE_CONTROL
    return IMAGE_CACHE_CONTROL


def is_image_version(text: str) -> bool:
    return len(text) == VERSION_LENGTH and all(character in LOWER_HEX_DIGITS for character in text)


def instance_image_cache(instance_path: str) -> ImageCache:
    """The image cache of an instance folder, the one every process serving that instance reads and writes."""
    return ImageCache(os.path.join(instance_path, "cache", "images"))


class ImageCache:
    """Rendered images kept as files named by key in one directory.

    Keys are file-name-safe (see cache_key). The directory is created on the
    first write. Writes are atomic, so readers never see half a file.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)

    def get(self, key: str) -> bytes | None:
        """Return the cached bytes for key, or None when absent or unreadable (the caller renders it again)."""
        try:
            with open(self._path(key), "rb") as cached:
                content = cached.read()
        except OSError:  # absent, or a file or folder this process may not read: a miss, not a failed request
            return None
        # An empty file can only come from a crash mid-write on some file systems.
        return content or None

    def put(self, key: str, content: bytes) -> None:
        """Store content under key, replacing any earlier version atomically."""
        path = self._path(key)
        os.makedirs(self.directory, exist_ok=True)
        # A leading dot keeps temporary files out of every key and every prefix. (os.open with
        # O_EXCL rather than tempfile, whose import costs a CGI scan several milliseconds.)
        temp_name = os.path.join(self.directory, f".tmp-{os.urandom(8).hex()}")
        fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as temp_file:
                temp_file.write(content)
            os.replace(temp_name, path)
        except BaseException:
            _remove(temp_name)
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
                _remove(entry.path)

    def _path(self, key: str) -> str:
        """Return the file path for key, refusing anything that is not a plain file name."""
        _check_name(key, what="key")
        return os.path.join(self.directory, key)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _check_name(name: str, *, what: str) -> None:
    """Raise ValueError unless name is a non-empty, file-name-safe string not starting with a dot."""
    if not name or name[0] in ".-" or not _NAME_CHARACTERS.issuperset(name):
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
    return '"' + _sha256_hex(content)[:32] + '"'


def _sha256_hex(data: bytes) -> str:
    import hashlib  # here: a CGI scan imports this module but hashes nothing, and hashlib loads OpenSSL (~4 ms)

    return hashlib.sha256(data).hexdigest()
