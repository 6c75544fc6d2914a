"""Dashboard pages for settings: your account, the users (admins only) and your API keys."""
from __future__ import annotations

from datetime import UTC, datetime

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user

from ... import accounts, codes, keys
from ...clock import isoformat_utc, now_epoch
from ...errors import NotFound, QrTrackError
from ..context import as_sentence, services

# console_pages and reference_pages are the rest of the settings pages: importing them adds their routes.
from . import DashboardUser, admin_required, bp, console_pages, reference_pages  # noqa: F401

# accounts.change_password names its fields after the service's arguments; the form names them for people.
PASSWORD_FORM_FIELDS = {"current_password": "current_password", "password": "new_password"}
TIME_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"))


@bp.app_template_filter("utc_time")
def utc_time(epoch: int | None) -> str:
    """2026-04-15 18:24 UTC, the exact time shown beside a relative one."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("iso_time")
def iso_time(epoch: int | None) -> str:
    return isoformat_utc(epoch) or ""


@bp.app_template_filter("time_ago")
def time_ago(epoch: int) -> str:
    """'just now', '5 minutes ago', '3 days ago'; past a month, empty (pages then show the exact date)."""
    elapsed = max(0, now_epoch() - epoch)
    if elapsed < 60:
        return "just now"
    if elapsed >= 30 * 86400:
        return ""
    seconds, unit = next((s, u) for s, u in TIME_UNITS if elapsed >= s)
    count = elapsed // seconds
    return f"{count} {unit}{'' if count == 1 else 's'} ago"


# --- your account ------------------------------------------------------------------------------

@bp.route("/settings/account", methods=["GET", "POST"])
@login_required
def account():
    errors: dict[str, str] = {}
    if request.method == "POST":
        errors = _change_password()
        if not errors:
            flash("Password changed. Any other browser signed in as you has been logged out.", "success")
            return redirect(url_for("dashboard.account"))
    user = accounts.get_user(services().db, current_user.user_id)
    return render_template("dashboard/settings/account.html", user=user, errors=errors), 400 if errors else 200


def _change_password() -> dict[str, str]:
    """Change the signed-in user's password from the form; the errors by field, empty on success."""
    db = services().db
    new_password = request.form.get("new_password", "")
    errors: dict[str, str] = {}
    if not request.form.get("current_password"):
        errors["current_password"] = "Enter your current password."
    try:
        accounts.validate_password(new_password, username=current_user.username)
    except QrTrackError as error:
        errors["new_password"] = as_sentence(error.message)
    if new_password != request.form.get("new_password_confirm", ""):
        errors["new_password_confirm"] = "The two new passwords differ."
    if errors:
        return errors
    try:
        accounts.change_password(db, user_id=current_user.user_id, current=request.form.get("current_password", ""),
                                 new=new_password)
    except QrTrackError as error:
        return {PASSWORD_FORM_FIELDS.get(error.field or "", "new_password"): as_sentence(error.message)}
    # The session id carries a fragment of the password hash: sign in again so this browser stays in.
    login_user(DashboardUser(accounts.get_user(db, current_user.user_id)))
    return {}


# --- users (admins only) -----------------------------------------------------------------------

@bp.route("/settings/users", methods=["GET", "POST"])
@admin_required
def users():
    db = services().db
    form = {"username": request.form.get("username", "").strip(), "is_admin": request.form.get("is_admin") == "on"}
    errors: dict[str, str] = {}
    if request.method == "POST":
        password = request.form.get("password", "")
        errors = _new_user_form_errors(form["username"], password)
        if not errors:
            try:
                accounts.create_user(db, username=form["username"], password=password, is_admin=form["is_admin"])
            except QrTrackError as error:
                errors[error.field or "username"] = as_sentence(error.message)
        if not errors:
            flash(f"Added {form['username']}. Give them their password; they can change it under their name.",
                  "success")
            return redirect(url_for("dashboard.users"))
    return render_template("dashboard/settings/users.html", users=accounts.list_users(db), form=form, errors=errors,
                           code_counts=accounts.count_codes_by_user(db)), 400 if errors else 200


def _new_user_form_errors(username: str, password: str) -> dict[str, str]:
    """Each field's own problem, all at once: an empty form is flagged in both fields, not one after the other."""
    errors: dict[str, str] = {}
    checks = (("username", lambda: accounts.validate_username(username)),
              ("password", lambda: accounts.validate_password(password, username=username)))
    for field, check in checks:
        try:
            check()
        except QrTrackError as error:
            errors[field] = as_sentence(error.message)
    return errors


@bp.post("/settings/users/<int:user_id>/status")
@admin_required
def set_user_status(user_id: int):
    user = _other_user_or_404(user_id)
    if user is None:
        flash("You cannot disable your own account. Another admin can.", "error")
        return redirect(url_for("dashboard.users"))
    is_active = request.form.get("is_active") == "1"
    try:
        accounts.set_user_active(services().db, user_id=user_id, is_active=is_active)
    except QrTrackError as error:
        flash(as_sentence(error.message), "error")
    else:
        flash(f"{user.username} is enabled again." if is_active else
              f"{user.username} is disabled: their sessions and API keys stopped working.", "success")
    return redirect(url_for("dashboard.users"))


@bp.route("/settings/users/<int:user_id>/remove", methods=["GET", "POST"])
@admin_required
def remove_user(user_id: int):
    db = services().db
    user = _other_user_or_404(user_id)
    if user is None:
        flash("You cannot remove your own account. Another admin can.", "error")
        return redirect(url_for("dashboard.users"))
    if request.method == "GET":
        code_count = accounts.count_codes_by_user(db).get(user_id, 0)
        return render_template("dashboard/settings/remove_user.html", user=user, code_count=code_count)
    try:
        accounts.delete_user(db, user_id=user_id)
    except QrTrackError as error:
        flash(as_sentence(error.message), "error")
    else:
        codes.remove_unused_logos(db, services().logo_dir)
        flash(f"Removed {user.username} with their codes, scans and API keys.", "success")
    return redirect(url_for("dashboard.users"))


def _other_user_or_404(user_id: int):
    """The user to act on; None when it is the signed-in admin, so nobody locks themselves out by a slip."""
    user = accounts.get_user(services().db, user_id)
    if user is None:
        abort(404)
    return None if user.id == current_user.user_id else user


# --- API keys ----------------------------------------------------------------------------------

@bp.route("/settings/api-keys", methods=["GET", "POST"])
@login_required
def api_keys():
    db = services().db
    name = request.form.get("name", "")
    error = new_key = new_key_id = resent_key_id = None
    if request.method == "POST":
        try:
            new_key, new_key_id = keys.issue_api_key(db, user_id=current_user.user_id, name=name,
                                                     form_token=request.form.get("form_token"))
        except keys.FormAlreadySent as resent:
            resent_key_id = resent.key_id
        except QrTrackError as failure:
            error = as_sentence(failure.message)
    # The full key is in this response only: never in the session, a flash message or a redirect.
    user_keys = keys.list_api_keys(db, user_id=current_user.user_id)
    resent_key = next((key for key in user_keys if key.id == resent_key_id), None)
    response = render_template("dashboard/settings/api_keys.html", keys=user_keys, new_key=new_key,
                               new_key_id=new_key_id or resent_key_id, resent_key=resent_key,
                               name="" if new_key or resent_key else name, error=error,
                               form_token=keys.new_form_token())
    status = 400 if error else 201 if new_key else 200
    return response, status, {"Cache-Control": "no-store"}


@bp.route("/settings/api-keys/<int:key_id>/revoke", methods=["GET", "POST"])
@login_required
def revoke_api_key(key_id: int):
    db = services().db
    key = next((k for k in keys.list_api_keys(db, user_id=current_user.user_id)
                if k.id == key_id and k.revoked_at is None), None)
    if key is None:
        abort(404)
    if request.method == "GET":
        return render_template("dashboard/settings/revoke_key.html", key=key)
    try:
        keys.revoke_api_key(db, user_id=current_user.user_id, key_id=key_id)
    except NotFound:
        abort(404)
    flash(f"Revoked {key.name}. Calls with it are refused from now on; codes made with it stay.", "success")
    return redirect(url_for("dashboard.api_keys"))
