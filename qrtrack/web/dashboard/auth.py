"""Dashboard pages for signing in: the one-time /setup, login and logout."""
from __future__ import annotations

import time

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError
from limits import RateLimitItem, parse
from werkzeug.exceptions import TooManyRequests

from ... import accounts
from ...errors import QrTrackError, error_body
from ..context import as_sentence, services
from . import DashboardUser, bp, safe_next_url, upload_too_large_message

LOGIN_LIMIT_PER_ADDRESS = "20 per 5 minutes"
LOGIN_LIMIT_PER_ACCOUNT = "10 per 5 minutes"
CSRF_REFUSED_MESSAGE = ("This form came from a page of an earlier sign-in, or was not sent from this site, so "
                        "nothing was changed. Go back, reload the page and try again.")


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """Create the first admin from the browser; gone (404) once any user exists."""
    db = services().db
    if accounts.count_users(db):
        abort(404)
    form = {"username": request.form.get("username", "admin")}
    errors: dict[str, str] = {}
    if request.method == "POST":
        password = request.form.get("password", "")
        if password != request.form.get("password_confirm", ""):
            errors["password_confirm"] = "The two passwords differ."
        else:
            try:
                user_id = accounts.create_user(db, username=form["username"], password=password, is_admin=True,
                                               only_if_first=True)
            except QrTrackError as error:
                errors[error.field or "username"] = as_sentence(error.message)
        if not errors:
            login_user(DashboardUser(accounts.get_user(db, user_id)))
            flash("Welcome to QR Track. Create your first code below.", "success")
            return redirect(url_for("dashboard.codes_list"))
    return render_template("dashboard/setup.html", form=form, errors=errors), 400 if errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(safe_next_url())
    username = request.form.get("username", "")
    error = None
    if request.method == "POST":
        _refuse_when_too_many_failed_logins()
        user = accounts.authenticate_user(services().db, username=username, password=request.form.get("password", ""))
        if user is not None:
            login_user(DashboardUser(user))
            return redirect(safe_next_url())
        _count_failed_login()
        error = "Wrong username or password, or the account is disabled."
    return render_template("dashboard/login.html", username=username, error=error), 401 if error else 200


@bp.post("/logout")
def logout():
    """Ends the sign-in and forgets the whole session, its CSRF token too: a form still open from before is
    refused rather than sent as the next person to sign in on this browser."""
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("dashboard.login"))


def _failed_login_limits() -> list[tuple[RateLimitItem, str]]:
    return [(parse(LOGIN_LIMIT_PER_ADDRESS), login_address_key()),
            (parse(LOGIN_LIMIT_PER_ACCOUNT), login_account_key())]


def _refuse_when_too_many_failed_logins() -> None:
    """429 while this address or this account is over its budget of failed logins.

    Counted here rather than by a flask-limiter decorator so that only failures count: a person who
    logs in and out ten times is not locked out. The counters share the app limiter's storage.
    """
    strategy = current_app.extensions["qrtrack_limiter"].limiter
    for limit, key in _failed_login_limits():
        if not strategy.test(limit, key):
            reset_at = strategy.get_window_stats(limit, key).reset_time
            raise TooManyRequests(f"too many failed logins ({limit})", retry_after=max(1, int(reset_at - time.time())))


def _count_failed_login() -> None:
    strategy = current_app.extensions["qrtrack_limiter"].limiter
    for limit, key in _failed_login_limits():
        strategy.hit(limit, key)


def login_account_key() -> str:
    return "login-account:" + request.form.get("username", "").strip().lower()[:64]


def login_address_key() -> str:
    return "login-address:" + (request.remote_addr or "")


@bp.errorhandler(CSRFError)
def csrf_refused(error: CSRFError):
    if request.is_json:
        return jsonify(error_body("csrf_failed", CSRF_REFUSED_MESSAGE)), 400
    return render_template("errors/error.html", status=400, message=CSRF_REFUSED_MESSAGE), 400


@bp.errorhandler(413)
def upload_too_large(error):
    """A form whose upload is past the request limit. Its page shows the limit beside the logo field where it
    can (codes_pages), but without JavaScript the CSRF check reads the body first and ends up here. A JSON
    request (the Live Console's) gets JSON, which its page shows."""
    if request.is_json:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return jsonify(error_body("payload_too_large", f"the request is larger than the {limit:,} bytes this "
                                                       "server takes")), 413
    message = f"{upload_too_large_message()} Go back and choose a smaller file."
    return render_template("errors/error.html", status=413, message=message), 413


@bp.errorhandler(429)
def too_many_requests(error):
    if request.endpoint == "dashboard.login":
        message = ("Too many login attempts for this account or from your network. "
                   "Wait a few minutes, then try again.")
    else:
        message = "Too many requests in a short time. Wait a minute, then try again."
    retry_after = [(name, value) for name, value in error.get_headers() if name == "Retry-After"]
    return render_template("errors/error.html", status=429, message=message), 429, retry_after
