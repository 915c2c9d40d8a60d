"""Security headers (issue 9, point 7): a Content-Security-Policy with no inline script, no
framing, no sniffing, a referrer policy, no caching of personal data, HSTS in production only;
documents always downloaded or shown as an allow-listed type inside a sandbox, and anything else
that is not a page (the API's JSON) under the same empty sandbox."""

from __future__ import annotations

import io
from collections import deque
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient

from backoffice.security import DOCUMENT_POLICY, HSTS, PAGE_POLICY, security_headers
from backoffice.staff.models import Role
from tests.factories import bearer, make_call_task, make_customer, make_policyholder, signed_in_client
from tests.test_association_cases import _case as open_case
from tests.test_review_views import _application as submitted_application

COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
MAX_PAGES = 80


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def assert_common_headers(response: Response) -> None:
    for name, value in COMMON_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "Strict-Transport-Security" not in response.headers


def assert_page_headers(response: Response) -> None:
    assert_common_headers(response)
    assert response.headers["Content-Security-Policy"] == PAGE_POLICY
    assert response.headers["Cache-Control"] == "no-store"


def assert_document_headers(response: Response) -> None:
    assert_common_headers(response)
    assert response.headers["Content-Security-Policy"] == DOCUMENT_POLICY
    assert "no-store" in response.headers["Cache-Control"]


def assert_data_headers(response: Response) -> None:
    assert_common_headers(response)
    assert response.headers["Content-Security-Policy"] == DOCUMENT_POLICY
    assert response.headers["Cache-Control"] == "no-store"


# The policy itself


def test_the_page_policy_runs_only_our_own_script_files():
    policy = directives(PAGE_POLICY)

    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["style-src"]
    assert "'unsafe-eval'" not in " ".join(sum(policy.values(), []))


def test_the_page_policy_forbids_framing_plugins_and_foreign_forms():
    policy = directives(PAGE_POLICY)

    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]


def test_the_document_policy_is_an_empty_sandbox():
    policy = directives(DOCUMENT_POLICY)

    assert policy["default-src"] == ["'none'"]
    assert policy["sandbox"] == []


# Every kind of response


@pytest.mark.parametrize("path", ["/login", "/api/v1/docs"])
def test_public_pages_carry_every_header(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert_page_headers(response)


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/openapi.json"])
def test_json_answers_are_an_empty_sandbox(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert_data_headers(response)


def test_a_back_office_page_carries_every_header(app):
    admin, _ = signed_in_client(app, Role.ADMIN)

    response = admin.get("/admin/")

    assert response.status_code == 200
    assert_page_headers(response)


def test_an_api_response_with_personal_data_carries_every_header(app, client):
    make_customer("ana.lopez@correo.example")
    token = client.post(
        "/api/v1/sessions", json={"username": "ana.lopez@correo.example", "password": "Portal-Cliente-2026!"}
    ).json["access_token"]

    response = client.get("/api/v1/me", headers=bearer(token))

    assert response.status_code == 200
    assert_data_headers(response)


def test_an_error_answer_carries_every_header(client):
    response = client.get("/api/v1/me")

    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert_data_headers(response)


def test_the_api_neither_reads_nor_touches_the_back_office_cookie(app):
    staff_browser, _ = signed_in_client(app, Role.ADMIN)

    response = staff_browser.get("/api/v1/me")

    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")
    assert staff_browser.get("/admin/").status_code == 200


def test_static_files_keep_their_own_caching(client):
    response = client.get("/static/js/admin-links.js")
    response.close()

    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] != "no-store"


def test_a_view_that_sets_its_own_page_policy_keeps_it():
    app = _bare_app("testing")

    @app.get("/own")
    def own():
        return Response("x", headers={"Content-Security-Policy": "default-src 'none'"})

    response = app.test_client().get("/own")

    assert response.headers["Content-Security-Policy"] == "default-src 'none'"


# HSTS


def _bare_app(environment: str) -> Flask:
    """The hook alone on a minimal app: a full production app needs PostgreSQL, S3, SMTP..."""
    app = Flask(__name__)
    app.config["APP_ENV"] = environment
    app.after_request(security_headers)

    @app.get("/page")
    def page():
        return "<p>page</p>"

    return app


def test_production_asks_browsers_to_use_https_only():
    response = _bare_app("production").test_client().get("/page")

    assert response.headers["Strict-Transport-Security"] == HSTS
    assert "max-age=31536000" in HSTS and "includeSubDomains" in HSTS


@pytest.mark.parametrize("environment", ["development", "testing"])
def test_development_and_testing_send_no_hsts(environment):
    response = _bare_app(environment).test_client().get("/page")

    assert "Strict-Transport-Security" not in response.headers


# No inline script anywhere staff can go


class ScriptFinder(HTMLParser):
    """Inline <script> elements, on* handler attributes, and the same-site links of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and not attributes.get("src"):
            self.problems.append(f"inline <script> ({self.getpos()})")
        for name, _ in attrs:
            if name.lower().startswith("on"):
                self.problems.append(f"<{tag} {name}=...> ({self.getpos()})")
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])


def inline_script_problems(html: str) -> tuple[list[str], list[str]]:
    finder = ScriptFinder()
    finder.feed(html)
    finder.close()
    return finder.problems, finder.links


def test_the_finder_sees_inline_scripts_and_handlers():
    problems, _ = inline_script_problems(
        '<script>alert(1)</script><script src="/x.js"></script><a href="#" onclick="x()">x</a>'
    )

    assert len(problems) == 2


def _seed_every_queue(app: Flask) -> None:
    submitted_application(app)
    make_call_task(datetime.now(UTC) + timedelta(days=1))
    open_case(candidates=[make_policyholder()])


def crawl(client: FlaskClient, start: str) -> dict[str, list[str]]:
    """Every back-office page reachable by links from `start` (GET only, one visit per path),
    with the inline scripts found on each."""
    found: dict[str, list[str]] = {}
    queue = deque([start])
    seen = {start}
    while queue and len(found) < MAX_PAGES:
        path = queue.popleft()
        response = client.get(path)
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        assert response.headers["Content-Security-Policy"] == PAGE_POLICY, path
        problems, links = inline_script_problems(response.get_data(as_text=True))
        found[path] = problems
        for link in links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or not parts.path.startswith("/admin"):
                continue
            if parts.path not in seen:
                seen.add(parts.path)
                queue.append(link)
    return found


def test_no_back_office_page_any_role_can_reach_has_inline_script(app):
    _seed_every_queue(app)
    pages: dict[str, list[str]] = {}

    for role in Role:
        staff, _ = signed_in_client(app, role)
        pages |= crawl(staff, "/admin/")

    visited = {urlsplit(path).path for path in pages}
    assert {
        "/admin/",
        "/admin/dashboard/",
        "/admin/review/",
        "/admin/calls/",
        "/admin/association/",
        "/admin/audit/",
        "/admin/audit/details/",
        "/admin/staff/new/",
        "/admin/staff/edit/",
    } <= visited
    assert {path: problems for path, problems in pages.items() if problems} == {}


def test_list_views_with_filters_and_actions_use_no_inline_handlers(app):
    admin, _ = signed_in_client(app, Role.ADMIN)

    for path in ("/admin/audit/", "/admin/outbox/", "/admin/staff/"):
        page = admin.get(path).get_data(as_text=True)
        problems, _ = inline_script_problems(page)

        assert 'class="dropdown-item filter"' in page, path
        assert problems == [], path


def test_the_sign_in_page_and_the_api_docs_have_no_inline_script(client):
    for path in ("/login", "/api/v1/docs"):
        problems, _ = inline_script_problems(client.get(path).get_data(as_text=True))

        assert problems == [], path


def test_the_api_docs_load_nothing_from_another_site(client):
    page = client.get("/api/v1/docs").get_data(as_text=True)

    assert "http://" not in page and "https://" not in page


# Documents


def _view_document(app: Flask) -> Response:
    application = submitted_application(app)
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)
    document = application.documents[0]
    link = reviewer.get(f"/admin/review/{application.id}/documents/{document.id}/view")
    assert link.status_code == 302
    response = reviewer.get(link.headers["Location"])
    response.close()
    return response


def test_a_viewed_document_is_an_allow_listed_type_inline_in_a_sandbox(app):
    response = _view_document(app)

    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"].startswith("inline; filename=")
    assert_document_headers(response)


def _stored_url(app: Flask, data: bytes, **claims) -> str:
    storage = app.extensions["storage"]
    key = storage.put(io.BytesIO(data), prefix="applications", content_type=claims["content_type"])
    return storage.url(key, **claims)


@pytest.mark.parametrize(
    ("content_type", "filename"),
    [
        ("text/html", "invoice.html"),
        ("image/svg+xml", "logo.svg"),
        ("application/xhtml+xml", "page.xhtml"),
        ("text/plain", "notes.txt"),
    ],
)
def test_a_stored_page_in_disguise_is_downloaded_as_opaque_bytes(app, client, content_type, filename):
    url = _stored_url(
        app,
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        filename=filename,
        content_type=content_type,
        inline=True,
    )

    response = client.get(url)
    response.close()

    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert_document_headers(response)


def test_html_stored_as_a_pdf_is_still_served_as_a_pdf_in_a_sandbox(app, client):
    url = _stored_url(
        app,
        b"<html><script>alert(1)</script></html>",
        filename="deed.pdf",
        content_type="application/pdf",
        inline=True,
    )

    response = client.get(url)
    response.close()

    assert response.mimetype == "application/pdf"
    assert_document_headers(response)


def test_any_file_answer_gets_the_sandbox_and_cannot_be_an_inline_page():
    app = _bare_app("testing")

    @app.get("/export")
    def export():
        return Response(
            "<script>alert(1)</script>",
            mimetype="text/html",
            headers={"Content-Disposition": 'inline; filename="x.html"'},
        )

    response = app.test_client().get("/export")

    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == 'attachment; filename="x.html"'
    assert response.headers["Content-Security-Policy"] == DOCUMENT_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_generated_downloads_keep_their_type_as_attachments_in_a_sandbox():
    app = _bare_app("testing")

    @app.get("/report.csv")
    def report():
        return Response(
            "a,b\n", mimetype="text/csv", headers={"Content-Disposition": 'attachment; filename="r.csv"'}
        )

    response = app.test_client().get("/report.csv")

    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="r.csv"'
    assert response.headers["Content-Security-Policy"] == DOCUMENT_POLICY
