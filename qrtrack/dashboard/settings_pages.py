"""Dashboard pages for settings: account, users (admin), API keys, Live Console, API reference."""
from __future__ import annotations

from flask_login import login_required

from . import admin_required, bp


@bp.get("/settings/account")
@login_required
def account():
    raise NotImplementedError("being built")


@bp.get("/settings/users")
@admin_required
def users():
    raise NotImplementedError("being built")


@bp.get("/settings/api-keys")
@login_required
def api_keys():
    raise NotImplementedError("being built")


@bp.get("/console")
@login_required
def console():
    raise NotImplementedError("being built")


@bp.get("/api-reference")
@login_required
def api_reference():
    raise NotImplementedError("being built")
