"""qrtrack/web/error_responses.py and context.py: error answers, and what the HTTP layer shares."""
import io
import logging
import secrets

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from qrtrack import codes

from ..conftest import close_app, gen_key, gen_user, make_app
from ..dashboard_helpers import log_in, post_form, text


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"X-Api-Key": "qrt_" + "0" * 40}, 401)])
def test_a_body_refused_unread_is_read_before_the_answer(client, headers, status):
    """Behind nginx, an answer sent with the body unread let gunicorn close the connection mid-send: a 502."""
    body = b'{"destination": "https://example.org/", "label": "' + b"x" * 300_000 + b'"}'
    stream = io.BytesIO(body)
    response = client.post("/api.php", input_stream=stream, content_length=len(body),
                           headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status and response.is_json
    assert stream.tell() == len(body)


def test_a_body_over_the_apis_limit_is_refused_as_413_and_read(client, api_headers):
    body = b'{"label": "' + b"x" * 100_000 + b'"}'
    stream = io.BytesIO(body)
    response = client.post("/api.php", input_stream=stream, content_length=len(body),
                           headers={"Content-Type": "application/json", **api_headers})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"
    assert stream.tell() == len(body)


def test_a_body_over_max_content_length_is_left_unread(app, client):
    """The API answers (401: no key) without reading it, and the after-request hook leaves it unread too:
    reading megabytes an attacker sends would only help them."""
    length = app.config["MAX_CONTENT_LENGTH"] + 1
    stream = io.BytesIO(b"x" * length)
    response = client.post("/api.php", input_stream=stream, content_length=length,
                           headers={"Content-Type": "application/json"})
    assert response.status_code in (401, 413)
    assert response.status_code == 401
    assert stream.tell() == 0


def test_compiled_templates_are_kept_in_the_instance_folder_for_the_next_process(tmp_path, monkeypatch):
    """A CGI process renders from the templates another process compiled: Jinja does not parse them again."""
    import jinja2

    from ..conftest import close_app, make_app

    first = make_app(tmp_path / "instance")
    page = first.test_client().get("/setup")
    assert page.status_code == 200
    assert list((tmp_path / "instance" / "cache" / "templates").iterdir())
    close_app(first)

    def must_not_parse(*_args, **_kwargs):
        raise AssertionError("the template should have come from the bytecode cache")

    monkeypatch.setattr(jinja2.Environment, "_parse", must_not_parse)
    second = make_app(tmp_path / "instance")
    again = second.test_client().get("/setup")
    assert (again.status_code, again.data.count(b"<form")) == (200, page.data.count(b"<form"))
    close_app(second)


def test_a_template_cache_folder_that_cannot_be_written_costs_only_the_compiling(tmp_path):
    from ..conftest import close_app, make_app

    (tmp_path / "instance" / "cache").mkdir(parents=True)
    (tmp_path / "instance" / "cache" / "templates").write_text("a file where the folder should be")
    app = make_app(tmp_path / "instance")
    assert app.test_client().get("/setup").status_code == 200
    close_app(app)


def test_an_unexpected_error_is_logged_and_answered_500_as_json_for_the_api_and_a_page_for_people(tmp_path,
                                                                                                   monkeypatch, caplog):
    """Outside tests (where Flask re-raises) a bug gives a readable answer without its details, and the log has them."""
    app = make_app(tmp_path, TESTING=False, SECRET_KEY=secrets.token_urlsafe(48))
    db = app.extensions["qrtrack"].db
    key = gen_key(db, gen_user(db, "alice"))

    def fail(*args, **kwargs):
        raise RuntimeError("the secret details of a bug")

    monkeypatch.setattr(codes, "list_code_summaries", fail)  # the API's list
    monkeypatch.setattr(codes, "list_codes", fail)  # the dashboard's
    client = app.test_client()
    response = client.get("/api.php", headers={"X-Api-Key": key})
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error",
                                             "message": "something went wrong on our side; it has been logged"}}

    log_in(client)
    page = client.get("/codes")
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "Something went wrong on our side" in text(page) and "secret details" not in text(page)
    logged = [record for record in caplog.records if record.getMessage().startswith("unhandled error")]
    assert [record.getMessage() for record in logged] == ["unhandled error on GET /api.php",
                                                          "unhandled error on GET /codes"]
    assert all("the secret details of a bug" in record.exc_text for record in logged)
    close_app(app)


def test_a_broken_rate_limit_store_refuses_api_calls_and_sign_ins_with_503_and_says_why_in_the_log(tmp_path, caplog):
    """Both must stay limited, so they are refused while the counters cannot be kept, with a 503 that tells the
    client to come back, and the log names the file and what to check. A folder where the file should be
    stands for any file the app cannot open; removing it mends it."""
    app = make_app(tmp_path)
    db = app.extensions["qrtrack"].db
    key = gen_key(db, gen_user(db, "alice"))
    counters = tmp_path / "ratelimit.db"
    counters.mkdir()
    client = app.test_client()

    with caplog.at_level(logging.ERROR):
        response = client.get("/api.php", headers={"X-Api-Key": key})
        assert response.status_code == 503 and response.headers["Retry-After"] == "60"
        assert response.get_json()["error"] == {
            "code": "rate_limit_unavailable",
            "message": "the server cannot check its rate limits right now; try again in a minute"}
        page = log_in(client)
        assert page.status_code == 503 and page.mimetype == "text/html"
        assert "Back in a moment" in text(page) and "The server cannot check its rate limits right now" in text(page)
    logged = [record.getMessage() for record in caplog.records if "rate-limit storage failed" in record.getMessage()]
    assert [message.split(":", 1)[0] for message in logged] == ["refused GET /api.php", "refused POST /login"]
    assert all(f"its counters are in {counters}" in message and "unable to open database file" in message
               for message in logged)

    counters.rmdir()
    assert client.get("/api.php", headers={"X-Api-Key": key}).status_code == 200
    assert log_in(client).status_code == 302
    close_app(app)


def test_a_damaged_rate_limit_file_is_replaced_and_api_calls_and_sign_ins_go_on(tmp_path, caplog):
    """A file that is not a database holds no counters worth keeping: the app starts it afresh, says so in the log,
    and goes on limiting, instead of refusing everyone until someone deletes it."""
    app = make_app(tmp_path, API_RATE_LIMIT="2 per minute")
    db = app.extensions["qrtrack"].db
    key = gen_key(db, gen_user(db, "alice"))
    counters = tmp_path / "ratelimit.db"
    counters.write_bytes(b"not a database, " * 512)
    client = app.test_client()

    with caplog.at_level(logging.WARNING):
        assert [client.get("/api.php", headers={"X-Api-Key": key}).status_code for _ in range(3)] == [200, 200, 429]
        assert log_in(client).status_code == 302
    warned = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warned == [f"the rate-limit counters in {counters} were damaged (file is not a database): deleted them; "
                      "counting starts afresh"]
    close_app(app)


def test_a_database_the_app_cannot_write_answers_503_and_the_log_names_the_file_and_users(tmp_path, caplog):
    """What a database file created by another user (a command run as root) does on a shared host: reads work,
    every write fails. SQLite's query_only gives the same 'attempt to write a readonly database' here, where
    the tests run as root and file permissions would not stop them."""
    app = make_app(tmp_path)
    db = app.extensions["qrtrack"].db
    key = gen_key(db, gen_user(db, "alice"))
    client = app.test_client()
    log_in(client)
    event.listen(db.engine, "connect", lambda connection, record: connection.execute("PRAGMA query_only = ON"))
    db.engine.dispose()

    with caplog.at_level(logging.ERROR):
        response = client.post("/api.php", headers={"X-Api-Key": key}, json={"destination": "https://example.com/"})
        assert response.status_code == 503 and response.headers["Retry-After"] == "60"
        assert response.get_json()["error"] == {
            "code": "database_unavailable",
            "message": "the database cannot take this request right now; try again in a minute"}
        page = post_form(client, "/codes/new", {"destination": "https://example.com/", "label": "x"})
        assert page.status_code == 503 and "Back in a moment" in text(page)
    logged = [record.getMessage() for record in caplog.records if "the database failed" in record.getMessage()]
    assert [message.split(":", 1)[0] for message in logged] == ["refused POST /api.php", "refused POST /codes/new"]
    database = app.extensions["qrtrack"].settings.sqlite_path
    assert all("attempt to write a readonly database" in message and f"the database is {database}, owned by root; "
               "this process runs as root" in message for message in logged)
    close_app(app)


def test_a_database_error_that_is_a_bug_is_not_called_unavailable(app, client, monkeypatch):
    """SQLite reports bad SQL as OperationalError too: that is a bug to see (a 500 outside tests), not a 503."""
    def bad_sql(*args, **kwargs):
        with app.extensions["qrtrack"].db.read() as conn:
            conn.exec_driver_sql("SELECT no_such_column FROM codes")

    monkeypatch.setattr(codes, "list_codes", bad_sql)
    gen_user(app.extensions["qrtrack"].db, "alice")
    log_in(client)
    with pytest.raises(OperationalError, match="no such column"):
        client.get("/codes")
