"""The review page without a browser: sessions, CSRF, headers, refusals, the decision path.

A real store of four synthetic casings (tests/test_web_support.py) behind the real gRPC
service; the page's calls go through ``MatchingService`` in-process, so they are checked and
audited like RPCs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from server.web import CSP, NOT_FOUND_TEXT, WebContext
from tests.test_web_support import Browserless, Review, review_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    with review_server(tmp_path_factory.mktemp("web")) as r:
        yield r


def _main(page: str) -> str:
    """The page's main content (the header carries the per-session CSRF token)."""
    return page[page.index("<main>") : page.index("</main>")]


def _audit_records(review: Review) -> list[dict]:
    path = review.srv.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_headers_and_cookie(review: Review) -> None:
    c = Browserless(review.url)
    status, h, page = c.request("GET", "/login")
    assert status == 200
    assert h["content-security-policy"] == CSP and "unsafe-inline" not in CSP
    assert "script-src 'self'" in CSP
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store"
    cookie = h["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; Secure under TLS
    assert "<script>" not in page and "onclick" not in page  # no inline script
    status, h, _ = c.request("GET", "/static/review.js")
    assert status == 200 and h["content-type"].startswith("text/javascript")


def test_login_flow_and_token_never_in_urls(review: Review) -> None:
    c = Browserless(review.url)
    assert c.request("GET", "/queue")[:2][0] == 303  # not logged in: to the login page
    _, _, page = c.request("GET", "/login")
    anon = c.cookie
    token = review.srv.tokens["north_exam"]
    status, h, _ = c.request("POST", "/login", {"csrf": c.csrf(page), "token": token})
    assert status == 303 and h["location"] == "/queue"
    assert c.cookie != anon  # a fresh session id at login
    status, _, queue = c.request("GET", "/queue")
    assert status == 200 and "north_exam" in queue
    assert token not in queue and token not in c.cookie
    # bad token: refused, audited, no session
    d = Browserless(review.url)
    _, _, page = d.request("GET", "/login")
    status, _, page = d.request("POST", "/login", {"csrf": d.csrf(page), "token": "nope"})
    assert status == 401 and "invalid token" in page
    assert d.request("GET", "/queue")[0] == 303
    outcomes = [(r["method"], r["outcome"]) for r in _audit_records(review)]
    assert ("WebLogin", "OK") in outcomes and ("WebLogin", "UNAUTHENTICATED") in outcomes


def test_post_without_csrf_is_refused(review: Review) -> None:
    c = Browserless(review.url)
    assert c.login(review.srv.tokens["north_exam"]) == 303
    a, b = review.ids["q"], review.ids["mate"]
    before = len(review.srv.backend.catalog.decisions(a))  # type: ignore[attr-defined]
    for form in ({}, {"csrf": "forged"}):
        status, _, page = c.request("POST", "/decide", {**form, "a": a, "b": b, "verdict": "hit"})
        assert status == 403 and "CSRF" in page
    assert len(review.srv.backend.catalog.decisions(a)) == before  # type: ignore[attr-defined]
    # a login form without the token is refused too
    d = Browserless(review.url)
    d.request("GET", "/login")
    assert d.request("POST", "/login", {"token": review.srv.tokens["north_exam"]})[0] == 403


def test_refusal_page_leaks_nothing(review: Review) -> None:
    c = Browserless(review.url)
    c.login(review.srv.tokens["north_exam"])
    q = review.ids["q"]
    pages = []
    for other in (review.ids["east"], "0123456789abcdef"):
        for path in (f"/compare?a={q}&b={other}", f"/render.png?a={q}&b={other}&view=b"):
            status, _, page = c.request("GET", path)
            assert status == 404
            pages.append(_main(page))
    assert pages[0] == pages[2] and pages[1] == pages[3]  # east's casing == an unknown id
    assert NOT_FOUND_TEXT in pages[0]
    assert review.ids["east"] not in pages[0] and "SO-East" not in pages[0]


def test_roles_come_from_the_service(review: Review) -> None:
    c = Browserless(review.url)
    c.login(review.srv.tokens["north_sub"])  # a submitter may search but not compare
    status, _, page = c.request("GET", f"/compare?a={review.ids['q']}&b={review.ids['mate']}")
    assert status == 403 and "may not compare" in page
    _, _, queue = c.request("GET", "/queue")
    status, _, page = c.request(
        "POST",
        "/decide",
        {"csrf": c.csrf(queue), "a": review.ids["q"], "b": review.ids["mate"], "verdict": "hit"},
    )
    assert status == 403 and "may not decide" in page


def test_search_compare_decide_audited(review: Review) -> None:
    c = Browserless(review.url)
    c.login(review.srv.tokens["north_exam"])
    _, _, queue = c.request("GET", "/queue")
    q, mate = review.ids["q"], review.ids["mate"]
    status, h, _ = c.request("POST", "/search", {"csrf": c.csrf(queue), "casing_id": q})
    assert status == 303
    status, _, page = c.request("GET", h["location"])
    assert status == 200
    rows = re.findall(r"<td>(\d+)</td><td><a href='/compare\?a=\w+&amp;b=(\w+)'", page)
    assert rows[0] == ("1", mate)  # the same gun's other shot first
    assert review.ids["east"] not in page  # east shares with nobody
    assert "3-D reference non-matches" in page and "fadul" in page
    _, _, queue = c.request("GET", "/queue")
    assert q in queue  # the search is in the queue
    status, h, page = c.request("GET", f"/compare?a={q}&b={mate}")
    assert status == 200 and h["cache-control"] == "no-store"
    assert "class='cell congruent'" in page and "500 &micro;m" in page
    status, h, _ = c.request("GET", f"/render.png?a={q}&b={mate}&view=shaded_b&rot=1.5&az=90")
    assert status == 200 and h["content-type"] == "image/png"
    status, _, page = c.request(
        "POST",
        "/decide",
        {"csrf": c.csrf(page), "a": q, "b": mate, "verdict": "hit", "comment": "agree"},
    )
    assert status == 303
    decisions = review.srv.backend.catalog.decisions(q)  # type: ignore[attr-defined]
    d = decisions[-1]
    assert (d.candidate_id, d.verdict, d.examiner, d.comment) == (
        mate,
        "hit",
        "north_exam",
        "agree",
    )
    rec = [r for r in _audit_records(review) if r["method"] == "Decide"][-1]
    assert rec["outcome"] == "OK" and rec["user"] == "north_exam"
    assert rec["peer"].startswith("http:127.0.0.1:") and str(d.id) in rec["targets"]
    status, _, report = c.request("GET", f"/report?a={q}&b={mate}")
    assert status == 200 and "agree" in report and "PDN-24-001" in report


def test_render_png_is_a_picture(review: Review, tmp_path: Path) -> None:
    c = Browserless(review.url)
    c.login(review.srv.tokens["north_exam"])
    q, mate = review.ids["q"], review.ids["mate"]
    import http.client

    conn = http.client.HTTPConnection(c.host, c.port, timeout=60)
    conn.request("GET", f"/render.png?a={q}&b={mate}&view=overlay", headers={"Cookie": c.cookie})
    raw = conn.getresponse().read()
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] == img.shape[1] and float(img.std()) > 10


def test_search_page_lists_the_casings_leads(review: Review) -> None:
    """After background correlation, a search page shows the query casing's leads an examiner
    may see, each with whether the candidate list shows it; a submitter (no lead queue) gets
    the page without them."""
    from index.correlate import CorrelationConfig, CorrelationWorker

    service = review.srv.server.service
    assert service is not None
    catalog = review.srv.backend.catalog  # type: ignore[attr-defined]
    # every fully compared pair a lead, so the small store has some whatever their scores
    worker = CorrelationWorker(
        catalog, policy=service.policy, config=CorrelationConfig(lead_max_nmf=1.0)
    )
    try:
        worker.drain()
    finally:
        worker.stop()
    q, mate = review.ids["q"], review.ids["mate"]
    c = Browserless(review.url)
    c.login(review.srv.tokens["north_exam"])
    _, _, queue = c.request("GET", "/queue")
    _, h, _ = c.request("POST", "/search", {"csrf": c.csrf(queue), "casing_id": q})
    _, _, page = c.request("GET", h["location"])
    assert "Leads from background correlation" in page
    section = page.split("Leads from background correlation", 1)[1]
    assert f"class='lead'>{mate}</a>" in section
    assert review.ids["east"] not in page  # east shares with nobody: no lead, no candidate
    sub = Browserless(review.url)
    sub.login(review.srv.tokens["north_sub"])
    _, _, queue = sub.request("GET", "/queue")
    status, h, _ = sub.request("POST", "/search", {"csrf": sub.csrf(queue), "casing_id": q})
    assert status == 303  # a submitter may search, but has no lead queue
    _, _, page = sub.request("GET", h["location"])
    assert f"class='cand'>{mate}</a>" in page and "Leads from background correlation" not in page


def test_logout_ends_the_session(review: Review) -> None:
    c = Browserless(review.url)
    c.login(review.srv.tokens["north_exam"])
    old = c.cookie
    _, _, queue = c.request("GET", "/queue")
    assert c.request("POST", "/logout", {"csrf": c.csrf(queue)})[0] == 303
    c.cookie = old  # replaying the old session id does not work
    assert c.request("GET", "/queue")[0] == 303


def test_web_context_carries_the_session() -> None:
    ctx = WebContext("tok", "http:1.2.3.4:5", ("lab1", "PD North"))
    assert ctx.invocation_metadata() == [("authorization", "Bearer tok")]
    assert ctx.peer() == "http:1.2.3.4:5"
    from server.auth import peer_subject

    assert peer_subject(ctx) == ("lab1", "PD North")  # type: ignore[arg-type]
    assert 0 < ctx.time_remaining() <= 120
