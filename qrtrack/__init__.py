"""QR Track: self-hosted dynamic QR codes.

Importing the package is cheap on purpose: a CGI process that only records a scan imports
qrtrack.web.fastpath and never pays for Flask. create_app() loads the full app on demand.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app; see qrtrack.factory.build_app."""
    from .factory import build_app

    return build_app(test_config)
