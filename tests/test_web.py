"""qrtrack/web.py: what the HTTP layer shares."""
import io

import pytest


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

    from .conftest import close_app, make_app

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
    from .conftest import close_app, make_app

    (tmp_path / "instance" / "cache").mkdir(parents=True)
    (tmp_path / "instance" / "cache" / "templates").write_text("a file where the folder should be")
    app = make_app(tmp_path / "instance")
    assert app.test_client().get("/setup").status_code == 200
    close_app(app)
