"""Dashboard pages for codes: list, create, edit, pause/resume, delete, detail with analytics, CSV export."""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import date, timedelta

from flask import Response, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from ... import analytics, codes
from ...errors import ValidationError
from ...images import cache as image_cache
from ...images import qr
from ..context import as_sentence, public_base_url, services, short_url
from . import bp, upload_too_large_message
from .charts import scans_chart

log = logging.getLogger(__name__)

PAGE_SIZE = 25
MAX_SEARCH_LENGTH = 200  # the search box's maxlength too: a longer query string would pass what servers accept
# Far past any real list; it keeps the offset of a typed-in page number within the database's integers.
MAX_PAGE = 10_000_000
SORT_LABELS = {"created": "Created", "updated": "Updated", "scans": "Scans", "label": "Label"}
# The list's status choices: label and statuses shown. By default those the API lists too.
STATUS_FILTERS = {"": ("Active and paused", codes.LISTED_STATUSES), "active": ("Active", ("active",)),
                  "paused": ("Paused", ("paused",)), "archived": ("Archived", ("archived",)),
                  "all": ("All, archived too", None)}
STATUS_FLASHES = {
    "paused": ("Paused. Anyone scanning it now sees a notice instead of your page, and no scan is counted.", "info"),
    "archived": ("Archived. Scans see a notice and are not counted, as when paused, and your list leaves it out "
                 "unless you choose Archived.", "info"),
    "active": ("Resumed. Scans go to your destination again.", "success"),
}
DOWNLOAD_SIZES = (256, 512, 1024, 2048)
LOGO_DIGEST = re.compile(r"[0-9a-f]{64}")
FORM_FIELDS = ("type", "destination", "label")
# What the edit form posts back as it showed it (original_<name>), so a save sends only the fields changed.
OPENED_FIELDS = ("destination", "label", "logo")
PRESETS = ((7, "7 days"), (30, "30 days"), (90, "90 days"), (365, "12 months"))

bp.add_app_template_global(short_url, "code_short_url")


@bp.app_template_global("qr_image_url")
def qr_image_url(code, *, size: int | None = None, kind: str = "png") -> str:
    """The dashboard's URL of a code's QR image: v names what the image shows (its short URL and logo).

    /img/ sends such a URL to be cached for good while v is current (image_cache.image_cache_control); a
    logo change gives a new v, so the browser fetches the new image at once. The lean path
    (fastpath.image_request) answers such a URL from the image cache too.
    """
    version = image_cache.image_version(short_url(code.slug), code.logo)
    return url_for("public.qr_svg" if kind == "svg" else "public.qr_png", slug=code.slug, size=size, v=version)


@dataclass(frozen=True)
class Preset:
    name: str
    url: str
    is_active: bool


@bp.app_template_filter("thousands")
def thousands(number: int) -> str:
    return f"{number:,}"


@bp.app_template_filter("percent")
def percent(share: float) -> str:
    """A share of 0..1 as a whole percentage; a small non-zero share is "<1%", not "0%"."""
    return "<1%" if 0 < share < 0.005 else f"{share * 100:.0f}%"


@bp.app_template_filter("day_name")
def day_name(day: date) -> str:
    return day.strftime("%-d %b %Y")


# --- list --------------------------------------------------------------------------------------

@bp.get("/codes")
@login_required
def codes_list():
    search = request.args.get("q", "").strip()[:MAX_SEARCH_LENGTH]
    sort = request.args.get("sort") if request.args.get("sort") in SORT_LABELS else "created"
    descending = request.args.get("order", "asc" if sort == "label" else "desc") != "asc"
    status = request.args.get("status") if request.args.get("status") in STATUS_FILTERS else ""
    page = min(max(1, request.args.get("page", 1, type=int) or 1), MAX_PAGE)
    db, owner_id = services().db, current_user.user_id
    rows, total = codes.list_codes(db, owner_id=owner_id, search=search or None,
                                   statuses=STATUS_FILTERS[status][1], sort=sort, descending=descending,
                                   limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    if page > pages:
        return redirect(url_for("dashboard.codes_list", **_list_args(page=pages)))
    first_code = not (total or search or status or codes.list_codes(db, owner_id=owner_id, limit=1)[1])
    return render_template("dashboard/codes/list.html", codes=rows, total=total, page=page, pages=pages,
                           page_size=PAGE_SIZE, search=search, max_search_length=MAX_SEARCH_LENGTH, sort=sort,
                           descending=descending, status=status, sort_labels=SORT_LABELS, first_code=first_code,
                           status_filters=STATUS_FILTERS, list_args=_list_args, pager_numbers=_pager_numbers)


def _list_args(**changes) -> dict:
    """The list's query arguments with some changed; defaults are left out so URLs stay short."""
    args = {name: request.args.get(name) for name in ("q", "sort", "order", "status", "page")}
    args.update(changes)
    return {name: value for name, value in args.items() if value not in (None, "", 1)}


def _pager_numbers(page: int, pages: int) -> list[int | None]:
    """Page numbers to link: the first, the last and two either side of this one; None marks a gap."""
    shown = sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)})
    numbers: list[int | None] = []
    for number in shown:
        if numbers and number - numbers[-1] > 1:
            numbers.append(None)
        numbers.append(number)
    return numbers


# --- create and edit ---------------------------------------------------------------------------

@bp.route("/codes/new", methods=["GET", "POST"])
@login_required
def code_new():
    form, errors = {"type": "url", "destination": "", "label": "", "logo": ""}, {}
    if request.method == "POST":
        form, errors = _read_code_form(form)
        code = None if errors else _saved(errors, lambda: codes.create_code(
            services().db, owner_id=current_user.user_id, destination=form["destination"], label=form["label"],
            code_type=form["type"], logo=form["logo"] or None, logo_dir=services().logo_dir))
        if code is not None:
            flash("Your code is ready. Print it anywhere: you can change where it points at any time.", "success")
            return redirect(url_for("dashboard.code_detail", uuid=code.uuid))
    return _render_form(None, form, errors)


@bp.route("/codes/<uuid>/edit", methods=["GET", "POST"])
@login_required
def code_edit(uuid: str):
    code = _owned_code(uuid)
    opened = _opened_values(code)
    form, errors = {"type": code.type, "destination": code.destination, "label": code.label, "logo": ""}, {}
    if request.method == "POST":
        form, errors = _read_code_form(form)
        changes = None if errors else _edited_changes(form, opened)
        updated = None if errors else _saved(errors, lambda: codes.update_code(
            services().db, owner_id=current_user.user_id, uuid=code.uuid, changes=changes,
            logo_dir=services().logo_dir, images=services().images, site_base_url=public_base_url()))
        if updated is not None:
            flash("Changes saved. The next scan already follows them.", "success")
            for note in _changed_elsewhere_notes(code, opened, changes):
                flash(note, "info")
            return redirect(url_for("dashboard.code_detail", uuid=code.uuid))
    shown_opened = {name: _current_value(code, name) if value is None else value for name, value in opened.items()}
    return _render_form(code, form, errors, opened=shown_opened)


def _current_value(code, name: str) -> str:
    return getattr(code, name) or ""


def _opened_values(code) -> dict[str, str | None]:
    """The code's values as its edit form showed them: now for a GET, else as the form posts them back.

    None for a value the form did not post (a page from before the form carried them): taken as changed.
    """
    if request.method == "GET":
        return {name: _current_value(code, name) for name in OPENED_FIELDS}
    try:
        return {name: request.form.get(f"original_{name}") for name in OPENED_FIELDS}
    except RequestEntityTooLarge:  # _read_code_form says so beside the logo field
        return dict.fromkeys(OPENED_FIELDS)


def _edited_changes(form: dict, opened: dict[str, str | None]) -> codes.CodeChanges:
    """Only what the user changed in the form, so a change made meanwhile elsewhere (the API) to another field stays."""
    return codes.CodeChanges(
        destination=form["destination"] if form["destination"] != opened["destination"] else None,
        label=form["label"] if form["label"] != opened["label"] else None,
        logo=form["logo"] or None, remove_logo=form["remove_logo"] and not form["logo"])


def _changed_elsewhere_notes(code, opened: dict[str, str | None], changes: codes.CodeChanges) -> list[str]:
    """A sentence per field changed elsewhere between opening the form and saving it, saying whose value stands."""
    notes = []
    for name in OPENED_FIELDS:
        if opened[name] is None or opened[name] == _current_value(code, name):
            continue
        is_replaced = getattr(changes, name) is not None or (name == "logo" and changes.remove_logo)
        outcome = "yours replaced that change" if is_replaced else "that change is kept"
        notes.append(f"The {name} was changed elsewhere since you opened the form; {outcome}.")
    return notes


def _saved(errors: dict, save):
    """What save() returns; a refusal the form checks did not foresee still lands beside its field."""
    try:
        return save()
    except ValidationError as error:
        errors[error.field or "destination"] = as_sentence(error.message)
        return None


def _render_form(code, form: dict, errors: dict, *, opened: dict | None = None):
    return render_template("dashboard/codes/form.html", code=code, form=form, errors=errors, opened=opened or {},
                           code_types=codes.CODE_TYPES, max_logo_bytes=services().settings.MAX_LOGO_BYTES), (
        400 if errors else 200)


def _read_code_form(defaults: dict) -> tuple[dict, dict]:
    """What was typed, kept for the page, and a message per field the codes service would refuse."""
    try:
        form = {name: request.form.get(name, defaults[name]) for name in FORM_FIELDS}
    except RequestEntityTooLarge:
        return defaults, {"logo": upload_too_large_message()}
    # A URL pasted with a space or line break around it is what the person meant; the API, whose spec says
    # so, refuses it instead.
    form["destination"] = form["destination"].strip()
    form["remove_logo"] = request.form.get("remove_logo") == "1"
    errors = {}
    for name, validate in (("type", codes.validate_type), ("destination", codes.validate_destination),
                           ("label", codes.validate_label)):
        try:
            validate(form[name])
        except ValidationError as error:
            errors[name] = as_sentence(error.message)
    form["logo"], logo_error = _read_logo()
    if logo_error:
        errors["logo"] = logo_error
    return form, errors


def _read_logo() -> tuple[str, str | None]:
    """(digest of the logo to use or "", error): a fresh upload, else one kept from a refused submission."""
    upload = request.files.get("logo")
    if upload is None or not upload.filename:
        kept = request.form.get("kept_logo", "")
        is_kept = LOGO_DIGEST.fullmatch(kept) and codes.logo_path(services().logo_dir, kept).is_file()
        return (kept if is_kept else ""), None
    max_bytes = services().settings.MAX_LOGO_BYTES
    try:
        png = qr.sanitize_logo(upload.stream.read(max_bytes + 1), max_bytes=max_bytes)
    except qr.InvalidLogo as error:
        return "", f"{error}."
    try:
        return codes.save_logo(services().logo_dir, png), None
    except OSError:  # a folder the app cannot write, a full disk: the user's other fields are kept
        log.exception("could not store an uploaded logo in %s", services().logo_dir)
        return "", "The logo could not be stored on the server (the error log says why). Try again, or leave it out."


# --- status and delete -------------------------------------------------------------------------

@bp.post("/codes/<uuid>/status")
@login_required
def code_status(uuid: str):
    status = request.form.get("status") if request.form.get("status") in STATUS_FLASHES else "active"
    code = codes.update_code(services().db, owner_id=current_user.user_id, uuid=uuid,
                             changes=codes.CodeChanges(status=status), logo_dir=services().logo_dir,
                             images=services().images)
    flash(*STATUS_FLASHES[status])
    return redirect(url_for("dashboard.code_detail", uuid=code.uuid))


@bp.route("/codes/<uuid>/delete", methods=["GET", "POST"])
@login_required
def code_delete(uuid: str):
    code = _owned_code(uuid)
    error = None
    if request.method == "POST":
        if request.form.get("confirm", "").strip() == code.slug:
            codes.delete_code(services().db, owner_id=current_user.user_id, uuid=code.uuid,
                              logo_dir=services().logo_dir, images=services().images)
            flash(f"Deleted {code.label or code.slug} and its scan history.", "success")
            return redirect(url_for("dashboard.codes_list"))
        error = f"Type {code.slug} exactly to confirm."
    return render_template("dashboard/codes/delete.html", code=code, error=error), 400 if error else 200


# --- detail, analytics and export ---------------------------------------------------------------

@bp.get("/codes/<uuid>")
@login_required
def code_detail(uuid: str):
    code = _owned_code(uuid)
    options, period_error = _report_options()
    report = analytics.build_report(services().db, code_id=code.id, **options)
    csv_url = url_for("dashboard.code_scans_csv", uuid=code.uuid, **{"from": report.period.first.isoformat(),
                                                                     "to": report.period.last.isoformat(),
                                                                     "bots": "1" if report.include_bots else None})
    return render_template("dashboard/codes/detail.html", code=code, report=report, chart=scans_chart(report),
                           period_error=period_error, presets=_presets(report), csv_url=csv_url,
                           download_sizes=DOWNLOAD_SIZES)


@bp.get("/analytics")
@login_required
def analytics_overview():
    options, period_error = _report_options()
    report = analytics.build_report(services().db, owner_id=current_user.user_id, **options)
    return render_template("dashboard/codes/overview.html", report=report, chart=scans_chart(report),
                           period_error=period_error, presets=_presets(report))


@bp.get("/codes/<uuid>/scans.csv")
@login_required
def code_scans_csv(uuid: str):
    code = _owned_code(uuid)
    period = analytics.parse_period(request.args.get("from"), request.args.get("to"), today=analytics.today_utc())
    include_bots = request.args.get("bots") == "1"  # as the page the link is on: bots left out unless it shows them
    filename = f"qrtrack-{code.slug}-scans-{period.first}-to-{period.last}{'-with-bots' if include_bots else ''}.csv"
    return Response(analytics.scan_log_csv(services().db, code_id=code.id, period=period, include_bots=include_bots),
                    mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                                  "Cache-Control": "no-store"})


def _report_options() -> tuple[dict, str | None]:
    """Period, granularity and bots from the query string; a bad period falls back to the last 30 days."""
    today = analytics.today_utc()
    error = None
    try:
        period = analytics.parse_period(request.args.get("from"), request.args.get("to"), today=today)
    except ValidationError as problem:
        period, error = analytics.parse_period(None, None, today=today), as_sentence(problem.message)
    granularity = request.args.get("granularity")
    return {"period": period, "granularity": granularity if granularity in analytics.GRANULARITIES else "day",
            "include_bots": request.args.get("bots") == "1"}, error


def _presets(report: analytics.Report) -> list[Preset]:
    """Links to the last 7, 30, 90 and 365 days, keeping the grouping and the bots choice."""
    today = analytics.today_utc()
    presets = []
    for days, name in PRESETS:
        first = today - timedelta(days=days - 1)
        args = {"from": first.isoformat(), "to": today.isoformat(), "granularity": report.granularity,
                "bots": "1" if report.include_bots else None}
        presets.append(Preset(name, url_for(request.endpoint, **request.view_args, **args),
                              is_active=(report.period.first, report.period.last) == (first, today)))
    return presets


def _owned_code(uuid: str):
    """The signed-in user's code; 404 for anyone else's, exactly as for one that does not exist."""
    return codes.get_code(services().db, owner_id=current_user.user_id, uuid=uuid)
