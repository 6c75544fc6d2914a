"""Dashboard pages for codes: list, create, edit, detail with analytics, CSV export."""
from __future__ import annotations

from flask_login import login_required

from . import bp


@bp.get("/codes")
@login_required
def codes_list():
    raise NotImplementedError("being built")


@bp.get("/analytics")
@login_required
def analytics_overview():
    raise NotImplementedError("being built")
