"""Blueprint for the browser dashboard: sign-in plumbing here, the pages in the modules beside it."""
from __future__ import annotations

from functools import wraps

from flask import Blueprint, Flask, abort, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_wtf.csrf import CSRFProtect

from ... import accounts
from ..context import services

bp = Blueprint("dashboard", __name__)
csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "dashboard.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"


class DashboardUser(UserMixin):
    """The signed-in person as Flask-Login sees them.

    The session id carries a fragment of the password hash, so changing the password signs out
    every other session.
    """

    def __init__(self, row):
        self.user_id = row.id
        self.username = row.username
        self.is_admin = bool(row.is_admin)
        self._is_active = bool(row.is_active)
        self.session_token = f"{row.id}:{row.password_hash[-12:]}"

    @property
    def is_active(self) -> bool:
        return self._is_active

    def get_id(self) -> str:
        return self.session_token


@login_manager.user_loader
def load_user(session_token: str) -> DashboardUser | None:
    user_id, _, fragment = session_token.partition(":")
    if not user_id.isdigit():
        return None
    row = accounts.get_user(services().db, int(user_id))
    if row is None or not row.is_active or row.password_hash[-12:] != fragment:
        return None
    return DashboardUser(row)


def upload_too_large_message() -> str:
    """What a form says of an upload past the logo limit: beside its field, or on the 413 page when the CSRF check
    read the body first (a browser without JavaScript, which checks the size before sending)."""
    limit = services().settings.MAX_LOGO_BYTES // 1000
    return f"That upload is larger than the {limit:,} kB logo limit, so nothing was saved."


def admin_required(view):
    """Like login_required, and 404 (not 403) for non-admins, so the page's existence is not revealed."""

    @wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            abort(404)
        return view(*args, **kwargs)

    return wrapper


def safe_next_url(default_endpoint: str = "dashboard.index") -> str:
    """The ?next= target when it stays on this site, else the default page.

    Control characters are refused too: browsers drop tabs and newlines from a URL, so
    "/\t/evil.example" would reach them as "//evil.example", another site.
    """
    target = request.args.get("next") or request.form.get("next") or ""
    is_local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    if is_local and not any(ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return target
    return url_for(default_endpoint)


@bp.get("/")
def index():
    if accounts.count_users(services().db) == 0:
        return redirect(url_for("dashboard.setup"))
    if not current_user.is_authenticated:
        return redirect(url_for("dashboard.login"))
    return redirect(url_for("dashboard.codes_list"))


@bp.app_context_processor
def geo_attribution() -> dict[str, bool]:
    """DB-IP Lite's licence (CC BY 4.0) asks pages that show its results to link back to DB-IP."""
    return {"shows_dbip_attribution": services().geo.is_dbip}


def init_dashboard(app: Flask) -> None:
    """Register the dashboard with its CSRF protection and sign-in handling."""
    from . import auth, codes_pages, settings_pages  # noqa: F401 - these modules add their routes to bp

    csrf.init_app(app)
    login_manager.init_app(app)
    app.register_blueprint(bp)
