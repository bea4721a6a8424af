"""The examiner's review page: an HTTP front end in the server's own process.

``ballistics serve --http-port P`` starts it beside the gRPC server. Every page action is a call
of the same :class:`server.service.MatchingService` RPC method the gRPC API runs (ListLeads,
Search, Compare, GetCasing, Decide), made in-process with a :class:`WebContext` that carries the
session's ``authorization: Bearer <token>`` metadata, the browser's address as the peer
(``http:1.2.3.4:port``) and, under mutual TLS, the client certificate's subject. So the pages
are authenticated, role-checked, filtered by the sharing policy and audited exactly like the
RPCs; a refusal comes back as the RPC's status and becomes an error page:

* NOT_FOUND -> 404, one text for an unknown id and another agency's casing (nothing leaks);
* PERMISSION_DENIED -> 403; UNAUTHENTICATED -> the login page; anything else -> its page.

Sessions: a token typed into the login form (POST, never in a URL) is checked by the server's
:class:`server.auth.Authenticator` and kept in server memory under a random session id; the
browser only holds the id, in a cookie that is HttpOnly, SameSite=Strict, Secure under TLS,
and expires (idle 30 min, at most 8 h). Every form carries the session's CSRF token and every
POST without the right one is refused (403). Logging in and out are audited (``WebLogin``,
``WebLogout``). Searches run from the page are kept in server memory (per agency, the newest
50, lost on restart); leads come from the store.

Headers: a Content-Security-Policy without inline script (the page's JavaScript is the
vendored ``server/static/review.js``), X-Frame-Options DENY, nosniff, no referrer, and
``Cache-Control: no-store`` on every page and picture (evidence). Under TLS the pages are served
over HTTPS with the gRPC server's certificate and key (and a client certificate is required
when the gRPC server requires one); without TLS they bind like ``serve`` binds (plain HTTP,
127.0.0.1 by default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import logging
import math
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import grpc

from .auth import AuthError, Identity, TlsConfig
from .proto_gen import matching_pb2 as pb
from .service import MatchingService
from .validation import VERDICTS

log = logging.getLogger("ballistics.web")

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {"review.js": "text/javascript", "review.css": "text/css"}
COOKIE = "bsession"
SESSION_IDLE_S = 30 * 60.0
SESSION_MAX_S = 8 * 3600.0
MAX_SESSIONS = 1000
MAX_SEARCHES = 50  # kept per agency
MAX_FORM_BYTES = 64 * 1024
RPC_DEADLINE_S = 120.0
NOT_FOUND_TEXT = "No such casing or page, or it is not shared with your agency."

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
VERDICT_CODES: dict[str, Any] = {name: code for code, name in VERDICTS.items()}
VIEWS = ("a", "b", "overlay", "shaded_a", "shaded_b")


# ------------------------------------------------------------------------ the RPC bridge


class WebAbort(Exception):
    """An RPC refused the call (``context.abort``): its status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WebContext:
    """The part of ``grpc.ServicerContext`` the service uses, for an in-process call.

    Parameters
    ----------
    token : str
        The session's bearer token (sent as ``authorization`` metadata).
    peer : str
        The browser's address, ``http:1.2.3.4:port`` (the audit record's ``peer``).
    cert_subject : tuple of (str or None, str or None)
        (CN, O) of the verified client certificate under mutual TLS, else (None, None); given
        to :func:`server.auth.peer_subject` as gRPC's auth context would.
    deadline_s : float
        Seconds the call may take (``time_remaining``).
    """

    def __init__(
        self,
        token: str,
        peer: str,
        cert_subject: tuple[str | None, str | None] = (None, None),
        deadline_s: float = RPC_DEADLINE_S,
    ) -> None:
        self._token = token
        self._peer = peer
        self._cert = cert_subject
        self._deadline = time.monotonic() + deadline_s

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token}")] if self._token else []

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        cn, o = self._cert
        if cn is None:
            return {}
        subject = f"CN={cn}" + (f",O={o}" if o else "")
        return {"x509_common_name": [cn.encode()], "x509_subject": [subject.encode()]}

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise WebAbort(code, details)

    def is_active(self) -> bool:
        return True


# ------------------------------------------------------------------------ sessions


@dataclass
class Session:
    sid: str
    csrf: str
    created: float
    seen: float
    token: str = ""
    identity: Identity | None = None

    def expired(self, now: float) -> bool:
        return now - self.seen > SESSION_IDLE_S or now - self.created > SESSION_MAX_S


@dataclass
class PageSearch:
    """A search run from the page (kept in server memory)."""

    search_id: str
    casing_id: str
    user: str
    agency: str
    time: str
    kind: str
    response: pb.SearchResponse
    casings: dict[str, pb.Casing] = field(default_factory=dict)
    leads: list[pb.Lead] | None = None
    """The query casing's background-correlation leads (None: the user may not list leads)."""

    @property
    def state(self) -> str:
        return "partial (deadline)" if self.response.partial else "done"


class Sessions:
    """Server-side sessions by random id (``secrets.token_urlsafe(32)``), thread-safe."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> Session:
        now = time.monotonic()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._by_id[s.sid] = s
            while len(self._by_id) > MAX_SESSIONS:
                self._by_id.popitem(last=False)
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if s.expired(now):
                del self._by_id[sid]
                return None
            s.seen = now
            self._by_id.move_to_end(sid)
            return s

    def drop(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)


# ------------------------------------------------------------------------ the application


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "&mdash;" if v is None else f"{v:.{digits}f}"


class ReviewApp:
    """The pages, over one :class:`MatchingService` and its backend (``server.app``).

    ``backend`` must offer ``comparison_view`` (``server.app.CatalogBackend``) for the
    pictures; the numbers all come from the RPCs.
    """

    def __init__(
        self, service: MatchingService, *, secure: bool = False, intel: Any = None
    ) -> None:
        self.service = service
        self.intel = intel  # server.intel_service.IntelligenceService, or None: no such pages
        self.backend: Any = service.backend
        self.secure = secure
        self.sessions = Sessions()
        self._searches: dict[str, OrderedDict[str, PageSearch]] = {}
        self._kinds: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------------------
    def rpc(self, req: Request, method: str, message: Any) -> Any:
        """Call ``MatchingService.<method>`` as the session's user (WebAbort on refusal)."""
        s = req.session
        ctx = WebContext(s.token if s else "", req.peer, req.cert_subject)
        return getattr(self.service, method)(message, ctx)

    def intel_rpc(self, req: Request, method: str, message: Any) -> Any:
        """Call ``IntelligenceService.<method>`` as the session's user (NOT_FOUND page when
        the server has no intelligence service)."""
        if self.intel is None:
            raise WebAbort(grpc.StatusCode.NOT_FOUND, "no intelligence service")
        s = req.session
        ctx = WebContext(s.token if s else "", req.peer, req.cert_subject)
        return getattr(self.intel, method)(message, ctx)

    def audit(self, req: Request, method: str, outcome: str, identity: Identity | None) -> None:
        self.service.audit.append(
            user=identity.user if identity else "",
            agency=identity.agency if identity else "",
            method=method,
            outcome=outcome,
            peer=req.peer,
        )

    def kind_of(self, casing_id: str) -> str:
        """'topography' (3-D) or 'image' (2-D) of a stored casing (cached). Call only after an
        RPC showed the caller may see the casing."""
        with self._lock:
            k = self._kinds.get(casing_id)
        if k is None:
            k = str(getattr(self.backend.catalog.prepared(casing_id), "kind", "topography"))
            with self._lock:
                self._kinds[casing_id] = k
        return k

    def searches_of(self, agency: str) -> list[PageSearch]:
        with self._lock:
            return list(reversed(self._searches.get(agency, OrderedDict()).values()))

    def _keep_search(self, ps: PageSearch) -> None:
        with self._lock:
            by = self._searches.setdefault(ps.agency, OrderedDict())
            by[ps.search_id] = ps
            while len(by) > MAX_SEARCHES:
                by.popitem(last=False)

    def _search(self, agency: str, search_id: str) -> PageSearch | None:
        with self._lock:
            return self._searches.get(agency, OrderedDict()).get(search_id)

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            return self._route(req)
        except Redirect as r:
            return Response(HTTPStatus.SEE_OTHER, b"", headers=[("Location", r.location)])
        except WebAbort as e:
            return self._refusal(req, e.code, e.message)
        except _Forbidden:
            return self.page(
                req,
                "Refused",
                "<p>Refused: this form lacks a valid CSRF token (reload the page and try"
                " again).</p>",
                status=HTTPStatus.FORBIDDEN,
            )
        except Exception:
            log.exception("review page %s %s failed", req.method, req.path)
            return self.page(
                req,
                "Error",
                "<p>Internal error; see the server log.</p>",
                status=HTTPStatus.INTERNAL_SERVER_ERROR,
            )

    def _refusal(self, req: Request, code: grpc.StatusCode, message: str) -> Response:
        if code is grpc.StatusCode.UNAUTHENTICATED:
            if req.session is not None and req.session.identity is not None:
                self.sessions.drop(req.session.sid)
                req.session = None
            return self.login_page(req, "Please log in (" + message + ").", HTTPStatus.UNAUTHORIZED)
        if code is grpc.StatusCode.NOT_FOUND:  # one text for unknown and not shared
            return self.page(
                req, "Not found", f"<p>{esc(NOT_FOUND_TEXT)}</p>", status=HTTPStatus.NOT_FOUND
            )
        if code is grpc.StatusCode.PERMISSION_DENIED:
            return self.page(
                req, "Refused", f"<p>Refused: {esc(message)}</p>", status=HTTPStatus.FORBIDDEN
            )
        status = {
            grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
            grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
            grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
            grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
        }.get(code, HTTPStatus.INTERNAL_SERVER_ERROR)
        return self.page(req, "Refused", f"<p>{esc(code.name)}: {esc(message)}</p>", status=status)

    def _route(self, req: Request) -> Response:
        path, method = req.path, req.method
        if path.startswith("/static/") and method == "GET":
            return self.static(path.removeprefix("/static/"))
        if method == "POST":
            self._check_csrf(req)
        if path == "/login":
            if method == "POST":
                return self.login(req)
            if req.session is not None and req.session.identity is not None:
                raise Redirect("/queue")
            return self.login_page(req)
        if path == "/logout" and method == "POST":
            return self.logout(req)
        if req.session is None or req.session.identity is None:
            if method == "GET":
                raise Redirect("/login")
            return self.login_page(req, "Please log in.", HTTPStatus.UNAUTHORIZED)
        routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/"): lambda r: self._to("/queue"),
            ("GET", "/queue"): self.queue,
            ("POST", "/search"): self.run_search,
            ("GET", "/search"): self.search_get,
            ("GET", "/compare"): self.compare,
            ("GET", "/render.png"): self.render,
            ("POST", "/decide"): self.decide,
            ("GET", "/report"): self.report,
            ("GET", "/series"): self.series_list,
            ("GET", "/hub"): self.hub,
            ("GET", "/hub.png"): self.hub_png,
        }
        fn = routes.get((method, path))
        if fn is not None:
            return fn(req)
        if method == "GET" and path.startswith("/search/"):
            return self.search_page(req, path.removeprefix("/search/"))
        if method == "GET" and path.startswith("/series/"):
            return self.series_page(req, path.removeprefix("/series/"))
        return self.page(
            req, "Not found", f"<p>{esc(NOT_FOUND_TEXT)}</p>", status=HTTPStatus.NOT_FOUND
        )

    @staticmethod
    def _to(location: str) -> Response:
        raise Redirect(location)

    def _check_csrf(self, req: Request) -> None:
        sent = req.form.get("csrf", "")
        s = req.session
        if s is None or not sent or not secrets.compare_digest(sent, s.csrf):
            raise _Forbidden()

    def static(self, name: str) -> Response:
        ctype = STATIC_FILES.get(name)
        if ctype is None:
            return Response(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        return Response(
            HTTPStatus.OK,
            (STATIC_DIR / name).read_bytes(),
            ctype + "; charset=utf-8",
            [("Cache-Control", "private, max-age=300")],
        )

    # -- layout --------------------------------------------------------------------------------
    def page(
        self,
        req: Request,
        title: str,
        body: str,
        *,
        status: int = HTTPStatus.OK,
        body_class: str = "",
    ) -> Response:
        s = req.session
        who = ""
        if s is not None and s.identity is not None:
            i = s.identity
            who = (
                f'<span class="who">{esc(i.user)} &middot; {esc(i.agency)} &middot; {esc(i.role)}'
                f"</span> <a href='/queue'>Queue</a>"
                + (
                    " <a href='/series'>Series</a> <a href='/hub'>Hub report</a>"
                    if self.intel
                    else ""
                )
                + f' <form method="post" action="/logout" class="inline">{self.csrf_field(req)}'
                '<button type="submit">Log out</button></form>'
            )
        doc = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(title)} &ndash; ballistics review</title>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='stylesheet' href='/static/review.css'>"
            "<script src='/static/review.js' defer></script></head>"
            f"<body class='{esc(body_class)}'><header><strong>Ballistic comparison review</strong>"
            f" {who}</header><main><h1>{esc(title)}</h1>{body}</main></body></html>"
        )
        return Response(status, doc.encode("utf-8"))

    def csrf_field(self, req: Request) -> str:
        s = req.session
        return f'<input type="hidden" name="csrf" value="{esc(s.csrf if s else "")}">'

    # -- login ---------------------------------------------------------------------------------
    def login_page(self, req: Request, message: str = "", status: int = HTTPStatus.OK) -> Response:
        if req.session is None or req.session.identity is not None:
            req.session = self.sessions.new()  # an anonymous session carries the form's CSRF
            req.set_cookie = True
        msg = f"<p class='msg'>{esc(message)}</p>" if message else ""
        body = (
            f"{msg}<form method='post' action='/login' class='login'>{self.csrf_field(req)}"
            "<label>Access token <input type='password' name='token' autocomplete='off'"
            " required autofocus></label> <button type='submit'>Log in</button></form>"
            "<p class='note'>The token is the one `ballistics auth add-user` issued (the gRPC"
            " API's bearer token). It is kept on the server, never in the page or its address."
            "</p>"
        )
        return self.page(req, "Log in", body, status=status)

    def login(self, req: Request) -> Response:
        token = req.form.get("token", "").strip()
        ctx = WebContext(token, req.peer, req.cert_subject)
        try:
            identity = self.service.auth.authenticate(ctx)
        except AuthError as e:
            self.audit(req, "WebLogin", grpc.StatusCode.UNAUTHENTICATED.name, None)
            return self.login_page(req, f"Not logged in: {e}", HTTPStatus.UNAUTHORIZED)
        if req.session is not None:
            self.sessions.drop(req.session.sid)
        s = self.sessions.new()  # a fresh id at login: no session fixation
        s.token, s.identity = token, identity
        req.session, req.set_cookie = s, True
        self.audit(req, "WebLogin", "OK", identity)
        raise Redirect("/queue")

    def logout(self, req: Request) -> Response:
        s = req.session
        if s is not None:
            self.audit(req, "WebLogout", "OK", s.identity)
            self.sessions.drop(s.sid)
        req.session, req.clear_cookie = None, True
        raise Redirect("/login")

    # -- queue ---------------------------------------------------------------------------------
    def queue(self, req: Request) -> Response:
        ident = req.who
        parts = [
            "<section><h2>Search with a stored casing</h2>"
            f"<form method='post' action='/search' class='search'>{self.csrf_field(req)}"
            "<label>Casing id <input name='casing_id' required size='24'></label>"
            " <label>Candidates <input name='top' type='number' min='1' max='200' value='10'>"
            "</label> <button type='submit'>Search</button></form></section>"
        ]
        rows = []
        for ps in self.searches_of(ident.agency):
            n = len(ps.response.combined.candidates)
            rows.append(
                f"<tr><td>{esc(ps.time)}</td><td><a href='/search/{esc(ps.search_id)}'>"
                f"{esc(ps.casing_id)}</a></td><td>{esc(ps.user)}</td><td>{n}</td>"
                f"<td>{esc(ps.state)}</td></tr>"
            )
        parts.append(
            "<section><h2>Searches run from this page</h2>"
            "<p class='note'>Kept in the server's memory (newest 50 of your agency; gone"
            " after a restart).</p>"
            + (
                "<table class='grid'><thead><tr><th>time (UTC)</th><th>query casing</th>"
                "<th>by</th><th>candidates</th><th>state</th></tr></thead><tbody>"
                + "".join(rows)
                + "</tbody></table>"
                if rows
                else "<p>None yet.</p>"
            )
            + "</section>"
        )
        if ident.can_leads:
            leads = self.rpc(req, "ListLeads", pb.ListLeadsRequest(limit=100))
            lrows = []
            for ld in sorted(leads.leads, key=lambda x: x.created_at, reverse=True):
                href = "/compare?" + urlencode({"a": ld.casing_a, "b": ld.casing_b})
                lrows.append(
                    f"<tr class='state-{esc(ld.state)}'><td>{esc(ld.created_at)}</td>"
                    f"<td><a href='{esc(href)}'>{esc(ld.casing_a)} &harr; {esc(ld.casing_b)}</a>"
                    f"</td><td>{esc(ld.agency_a)} / {esc(ld.agency_b)}</td>"
                    f"<td>{esc(ld.incident_a)} / {esc(ld.incident_b)}</td>"
                    f"<td>{_fmt(ld.score if ld.HasField('score') else None)}</td>"
                    f"<td>{ld.cmc if ld.HasField('cmc') else '&mdash;'}</td>"
                    f"<td>{esc(ld.state)}</td>"
                    f"<td>{'low confidence' if ld.low_confidence else ''}</td></tr>"
                )
            j = leads.jobs
            parts.append(
                "<section><h2>Leads (background correlation)</h2>"
                f"<p class='note'>Correlation jobs: {j.pending} pending, {j.running} running,"
                f" {j.done} done, {j.failed} failed.</p>"
                + (
                    "<table class='grid'><thead><tr><th>created (UTC)</th><th>casings</th>"
                    "<th>agencies</th><th>incidents</th><th>score</th><th>CMC</th>"
                    "<th>state</th><th>quality</th></tr></thead><tbody>"
                    + "".join(lrows)
                    + "</tbody></table>"
                    if lrows
                    else "<p>No leads.</p>"
                )
                + "</section>"
            )
        # oldest first from the store: ask for the service's maximum, show the newest 30
        cas = self.rpc(req, "ListCasings", pb.ListCasingsRequest(limit=1000))
        crow = []
        for c in sorted(cas.casings, key=lambda c: c.submitted_at, reverse=True)[:30]:
            crow.append(
                f"<tr><td>{esc(c.submitted_at)}</td><td>{esc(c.casing_id)}</td>"
                f"<td>{esc(c.agency)}</td><td>{esc(c.incident_id)}</td>"
                f"<td>{esc(c.file_name)}</td><td><form method='post' action='/search'"
                f" class='inline'>{self.csrf_field(req)}<input type='hidden' name='casing_id'"
                f" value='{esc(c.casing_id)}'><button type='submit'>Search</button></form></td>"
                "</tr>"
            )
        parts.append(
            "<section><h2>Recent casings you may see</h2>"
            "<table class='grid'><thead><tr><th>submitted (UTC)</th><th>casing</th>"
            "<th>agency</th><th>incident</th><th>file</th><th></th></tr></thead><tbody>"
            + "".join(crow)
            + "</tbody></table></section>"
        )
        return self.page(req, "Examiner's queue", "".join(parts))

    # -- search --------------------------------------------------------------------------------
    def _do_search(self, req: Request, casing_id: str, top: int) -> PageSearch:
        resp = self.rpc(
            req,
            "Search",
            pb.SearchRequest(casing_id=casing_id, filters=pb.SearchFilters(max_results=top)),
        )
        ident = req.who
        casings: dict[str, pb.Casing] = {}
        ids = {c.casing_id for lst in [resp.combined, *resp.regions] for c in lst.candidates}
        for cid in sorted(ids | {casing_id}):  # dates and case numbers, each an audited read
            with contextlib.suppress(WebAbort):
                casings[cid] = self.rpc(req, "GetCasing", pb.GetCasingRequest(casing_id=cid))
        leads: list[pb.Lead] | None = None
        with contextlib.suppress(WebAbort):  # an examiner's read; others have no lead queue
            got = self.rpc(req, "ListLeads", pb.ListLeadsRequest(casing_id=casing_id, limit=200))
            leads = list(got.leads)
        ps = PageSearch(
            search_id=secrets.token_urlsafe(9),
            casing_id=casing_id,
            user=ident.user,
            agency=ident.agency,
            time=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            kind=self.kind_of(casing_id),
            response=resp,
            casings=casings,
            leads=leads,
        )
        self._keep_search(ps)
        return ps

    def run_search(self, req: Request) -> Response:
        cid = req.form.get("casing_id", "").strip()
        try:
            top = int(req.form.get("top", "10") or 10)
        except ValueError:
            top = 10
        ps = self._do_search(req, cid, max(1, min(top, 200)))
        raise Redirect(f"/search/{ps.search_id}")

    def search_get(self, req: Request) -> Response:
        """``/search?casing_id=X``: run the search now (a read; the address the demo prints)."""
        cid = req.query.get("casing_id", "").strip()
        if not cid:
            raise Redirect("/queue")
        ps = self._do_search(req, cid, 10)
        raise Redirect(f"/search/{ps.search_id}")

    def search_page(self, req: Request, search_id: str) -> Response:
        ps = self._search(req.who.agency, search_id)
        if ps is None:
            return self.page(
                req, "Not found", f"<p>{esc(NOT_FOUND_TEXT)}</p>", status=HTTPStatus.NOT_FOUND
            )
        from ballistics.picture import reference_name

        r = ps.response
        q = ps.casings.get(ps.casing_id)
        head = (
            f"<p>Query casing <strong>{esc(ps.casing_id)}</strong>"
            + (
                f" ({esc(q.agency)}, incident {esc(q.incident_id) or '&mdash;'},"
                f" case {esc(q.agency_case_number) or '&mdash;'}, file {esc(q.file_name)})"
                if q
                else ""
            )
            + f"; searched {esc(ps.time)} UTC by {esc(ps.user)}.</p>"
            f"<p>{r.scored} candidates compared in full, {r.screened_out} screened out by the"
            " fast screen"
            + (
                " &mdash; <strong>partial: the deadline stopped the re-ranking</strong>"
                if r.partial
                else ""
            )
            + ".</p>"
            f"<p class='note'>Non-match frequencies of this {esc(ps.kind)} query use the"
            f" reference set of the same kind: {esc(reference_name(ps.kind))}.</p>"
        )
        if r.HasField("query_quality") and r.query_quality.low_confidence:
            head += (
                "<p class='warn'>Query quality: low confidence ("
                + esc(", ".join(r.query_quality.reasons))
                + ")</p>"
            )
        sections = [self._cand_table(req, ps, "combined", r.combined.candidates)]
        for lst in r.regions:
            sections.append(self._cand_table(req, ps, lst.region, lst.candidates))
        if ps.leads:
            sections.append(self._leads_table(ps, r.combined.candidates))
        if r.identical:
            sections.append(
                "<section><h2>The query's very file, stored before (not ranked)</h2><ul>"
                + "".join(f"<li>{esc(c.casing_id)} ({esc(c.agency)})</li>" for c in r.identical)
                + "</ul></section>"
            )
        return self.page(req, "Candidate list", head + "".join(sections))

    def _cand_table(
        self, req: Request, ps: PageSearch, region: str, cands: Iterable[pb.Candidate]
    ) -> str:
        from ballistics.picture import frequency_words

        rows = []
        for c in cands:
            rec = ps.casings.get(c.casing_id)
            score = c.score if c.HasField("score") else None
            flags = list(c.flags) + (
                ["low confidence: " + ", ".join(c.low_confidence_reasons)]
                if c.low_confidence
                else []
            )
            href = "/compare?" + urlencode({"a": ps.casing_id, "b": c.casing_id})
            state = "compared" if c.rescored else "screened out (not compared in full)"
            rows.append(
                f"<tr class='{'low' if c.low_confidence else ''}'><td>{c.rank}</td>"
                f"<td><a href='{esc(href)}' class='cand'>{esc(c.casing_id)}</a></td>"
                f"<td>{esc(c.agency)}</td><td>{esc(c.incident_id) or '&mdash;'}</td>"
                f"<td>{esc(rec.acquisition_date) if rec and rec.acquisition_date else '&mdash;'}"
                f"</td><td>{_fmt(score)}</td>"
                f"<td>{c.cmc if c.HasField('cmc') else '&mdash;'}</td>"
                f"<td class='nmf'>{esc(frequency_words(score, ps.kind, region))}</td>"
                f"<td>{esc('; '.join(flags)) or 'none'}</td><td>{esc(state)}</td></tr>"
            )
        if not rows:
            return f"<section><h2>{esc(region)}</h2><p>No candidates.</p></section>"
        return (
            f"<section><h2>{esc(region.replace('_', ' '))}</h2><table class='grid cands'>"
            "<thead><tr><th>rank</th><th>casing</th><th>agency</th><th>incident</th>"
            "<th>date</th><th>score</th><th>CMC</th><th>non-match frequency</th>"
            "<th>quality flags</th><th>state</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table></section>"
        )

    def _leads_table(self, ps: PageSearch, listed: Iterable[pb.Candidate]) -> str:
        """The query casing's leads from background correlation, and whether the candidate
        list above shows each (a lead's mate may lie beyond what the search compared)."""
        shown = {c.casing_id for c in listed}
        rows = []
        for ld in ps.leads or []:
            mine = ld.casing_a == ps.casing_id
            other, agency = (ld.casing_b, ld.agency_b) if mine else (ld.casing_a, ld.agency_a)
            href = "/compare?" + urlencode({"a": ps.casing_id, "b": other})
            nmf = ld.non_match_frequency if ld.HasField("non_match_frequency") else None
            rows.append(
                f"<tr><td><a href='{esc(href)}' class='lead'>{esc(other)}</a></td>"
                f"<td>{esc(agency)}</td>"
                f"<td>{_fmt(ld.score if ld.HasField('score') else None)}</td>"
                f"<td>{ld.cmc if ld.HasField('cmc') else '&mdash;'}</td>"
                f"<td>{'&mdash;' if nmf is None else esc(f'{nmf:.2g}')}</td>"
                f"<td>{esc(ld.state)}</td>"
                f"<td>{'yes' if other in shown else '<strong>no</strong>'}</td></tr>"
            )
        return (
            "<section><h2>Leads from background correlation</h2>"
            "<p class='note'>Pairs the background correlation compared in full and found worth a"
            " look; one not in the list above was not among the candidates this search"
            " compared.</p><table class='grid leads'><thead><tr><th>casing</th><th>agency</th>"
            "<th>score</th><th>CMC</th><th>non-match frequency</th><th>state</th>"
            "<th>in the list above</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            "</section>"
        )

    # -- comparison ----------------------------------------------------------------------------
    def _pair(self, req: Request, source: dict[str, str]) -> tuple[str, str]:
        a, b = source.get("a", "").strip(), source.get("b", "").strip()
        if not a or not b:
            raise WebAbort(grpc.StatusCode.NOT_FOUND, "no such pair")
        return a, b

    def _compare(self, req: Request, a: str, b: str) -> pb.CompareResponse:
        return self.rpc(
            req, "Compare", pb.CompareRequest(casing_a=a, casing_b=b, omit_picture=True)
        )

    def compare(self, req: Request) -> Response:
        a, b = self._pair(req, req.query)
        cmp = self._compare(req, a, b)  # authorises, checks the policy, audits
        ra = self.rpc(req, "GetCasing", pb.GetCasingRequest(casing_id=a))
        rb = self.rpc(req, "GetCasing", pb.GetCasingRequest(casing_id=b))
        pa, pb_, comp = self.backend.comparison_view(a, b)
        from ballistics.lighting import picture_surfaces
        from ballistics.picture import align_pair, colour_scale, frequency_words

        sa, sb = picture_surfaces(pa, pb_, comp)
        pair = align_pair(sa, sb, comp)
        kind = self.kind_of(a)
        heights = pair.kind == "topography"
        q = {"a": a, "b": b}
        img = lambda view: esc("/render.png?" + urlencode({**q, "view": view}))  # noqa: E731
        size = pair.size
        svg_cells = self._cells_svg(pair, "forward", size)
        svg_back = self._cells_svg(pair, "backward", size)
        bar_px = 500e-6 / pair.spacing_m
        scale = (
            f"<g class='scalebar'><rect x='{size * 0.05:.0f}' y='{size * 0.93:.0f}'"
            f" width='{bar_px:.1f}' height='{max(3, size // 150)}'/>"
            f"<text x='{size * 0.05:.0f}' y='{size * 0.92:.0f}'>500 &micro;m</text></g>"
        )
        lo = min(pair.range_a[0], pair.range_b[0])
        hi = max(pair.range_a[1], pair.range_b[1])
        stops = colour_scale()
        if heights:
            bar = (
                "<svg class='colourbar' viewBox='0 0 300 40' role='img'"
                " aria-label='height colour bar'><defs><linearGradient id='cb'>"
                + "".join(
                    f"<stop offset='{i / (len(stops) - 1):.2f}' stop-color='{c}'/>"
                    for i, c in enumerate(stops)
                )
                + "</linearGradient></defs><rect x='0' y='0' width='300' height='16'"
                f" fill='url(#cb)'/><text x='0' y='34'>{lo * 1e6:.2f} &micro;m</text>"
                f"<text x='300' y='34' text-anchor='end'>{hi * 1e6:.2f} &micro;m</text></svg>"
                "<p class='note'>Height (band-passed, 1st to 99th percentile of each surface);"
                " grey-blue: no data.</p>"
            )
        else:
            bar = (
                "<p class='note'>2-D image: grey levels are flattened intensity (no unit), each"
                " image clipped at its 1st/99th percentile; grey-blue: no data.</p>"
            )
        shade_ctl = (
            "<label>Light azimuth <input type='range' id='azimuth' min='0' max='355' step='5'"
            " value='315'> <output id='az-out'>315&deg;</output></label>"
            " <label><input type='checkbox' id='shade-toggle'> shaded rendering</label>"
            if heights
            else ""
        )
        freq = frequency_words(cmp.score, kind)
        flags = list(cmp.flags) + (
            ["low confidence: " + ", ".join(cmp.low_confidence_reasons)]
            if cmp.low_confidence
            else []
        )
        detail = json.loads(cmp.detail_json) if cmp.detail_json else {}
        params = detail.get("params") or dataclasses.asdict(comp.params)
        msg = req.query.get("decided", "")
        body = (
            (f"<p class='msg' id='decided'>Decision {esc(msg)} recorded.</p>" if msg else "")
            + self._pair_header(ra, rb)
            + f"<p class='scores'>score <strong>{cmp.score:.3f}</strong>, CMC"
            f" <strong>{cmp.cmc}</strong> of {len(pair.forward) + len(pair.backward)} cells"
            f" considered; {esc(freq)}.</p>"
            f"<p>Pose: B rotated {cmp.rotation_deg:.2f}&deg; about its primer centre, then"
            f" moved dx {cmp.dx_m * 1e6:.1f} &micro;m, dy {cmp.dy_m * 1e6:.1f} &micro;m into"
            f" A's frame. Quality flags: {esc('; '.join(flags)) or 'none'}.</p>"
            "<div class='controls'>"
            "<label>Split <input type='range' id='split' min='0' max='100' value='50'></label>"
            " <label><input type='checkbox' id='overlay-toggle'> overlay (A magenta, B green)"
            "</label> <label>Fine rotation of B <input type='range' id='rot' min='-5' max='5'"
            " step='0.25' value='0'> <output id='rot-out'>+0.00&deg;</output></label>"
            f" {shade_ctl}"
            " <button type='button' id='zoom-in'>+</button>"
            "<button type='button' id='zoom-out'>&minus;</button>"
            "<button type='button' id='zoom-reset'>1:1</button>"
            " <label><input type='checkbox' id='cells-toggle' checked> cells</label></div>"
            f"<div class='viewer' id='viewer' data-a='{esc(a)}' data-b='{esc(b)}'>"
            "<div class='stage' id='stage'>"
            f"<img id='img-a' alt='A' src='{img('a')}' width='{size}' height='{size}'>"
            f"<img id='img-b' alt='B in A frame' src='{img('b')}' width='{size}'"
            f" height='{size}'>"
            "<div id='split-line' class='split-line'></div>"
            f"<img id='img-overlay' alt='overlay' class='hidden' src='{img('overlay')}'"
            f" width='{size}' height='{size}'>"
            f"<svg class='cells' id='cells-a' viewBox='0 0 {size} {size}'>{svg_cells}{scale}"
            "</svg>"
            f"<svg class='cells hidden' id='cells-b' viewBox='0 0 {size} {size}'>{svg_back}"
            "</svg></div></div>"
            "<p class='note'>Left of the split line: A; right: B moved into A's frame. Hover a"
            " cell for its correlation and shift. Green outline: congruent; grey: not. Forward"
            " cells (A&rarr;B) are drawn on A; tick &lsquo;B cells&rsquo; to see the backward"
            " cells carried into A's frame. Wheel or +/&minus; to zoom, drag to pan.</p>"
            "<label><input type='checkbox' id='bcells-toggle'> B cells</label>"
            + bar
            + self._cells_table(pair)
            + self._verdict_form(req, a, b)
            + f"<p><a href='/report?{esc(urlencode(q))}' id='report-link'>Printable case-file"
            " report</a></p>" + self._params_block(params, kind)
        )
        return self.page(req, "Comparison", body, body_class="compare")

    @staticmethod
    def _pair_header(ra: pb.Casing, rb: pb.Casing) -> str:
        def one(label: str, r: pb.Casing) -> str:
            return (
                f"<tr><th>{label}</th><td>{esc(r.casing_id)}</td><td>{esc(r.agency)}</td>"
                f"<td>{esc(r.incident_id) or '&mdash;'}</td>"
                f"<td>{esc(r.agency_case_number) or '&mdash;'}</td>"
                f"<td>{esc(r.acquisition_date) or '&mdash;'}</td><td>{esc(r.file_name)}</td></tr>"
            )

        return (
            "<table class='grid pair'><thead><tr><th></th><th>casing</th><th>agency</th>"
            "<th>incident</th><th>case number</th><th>acquired</th><th>file</th></tr></thead>"
            f"<tbody>{one('A', ra)}{one('B', rb)}</tbody></table>"
        )

    @staticmethod
    def _cells_svg(pair: Any, which: str, size: int) -> str:
        cells = pair.forward if which == "forward" else pair.backward
        out = []
        font = max(10, size // 60)
        for n, (c, quad) in enumerate(cells, 1):
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in quad)
            cls = "congruent" if c.congruent else "other"
            tip = (
                f"cell {n} ({'A' if which == 'forward' else 'B'}, row {c.row}, col {c.col}):"
                f" correlation {c.ccf:.3f}, shift dx {c.dx_m * 1e6:+.1f} um,"
                f" dy {c.dy_m * 1e6:+.1f} um, rotation {c.rotation_deg:+.1f} deg,"
                f" {'congruent' if c.congruent else 'not congruent'}"
            )
            x0, y0 = quad.min(axis=0)
            out.append(
                f"<g class='cell {cls}' data-n='{n}'><title>{esc(tip)}</title>"
                f"<polygon points='{pts}'/><text x='{x0 + 4:.0f}' y='{y0 + font + 2:.0f}'"
                f" font-size='{font}'>{n}</text></g>"
            )
        return "".join(out)

    @staticmethod
    def _cells_table(pair: Any) -> str:
        rows = []
        for label, cells in (("A→B", pair.forward), ("B→A", pair.backward)):
            for n, (c, _) in enumerate(cells, 1):
                rows.append(
                    f"<tr class='{'congruent' if c.congruent else ''}'><td>{label}</td>"
                    f"<td>{n}</td><td>{c.row}</td><td>{c.col}</td><td>{c.ccf:.3f}</td>"
                    f"<td>{c.dx_m * 1e6:+.1f}</td><td>{c.dy_m * 1e6:+.1f}</td>"
                    f"<td>{c.rotation_deg:+.1f}</td><td>{'yes' if c.congruent else 'no'}</td></tr>"
                )
        return (
            "<details class='cells-table'><summary>Cells (correlation and shift relative to"
            " the registered pose)</summary><table class='grid'><thead><tr><th>direction</th>"
            "<th>#</th><th>row</th><th>col</th><th>correlation</th><th>dx &micro;m</th>"
            "<th>dy &micro;m</th><th>rotation &deg;</th><th>congruent</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table></details>"
        )

    def _verdict_form(self, req: Request, a: str, b: str) -> str:
        if not req.who.can_decide:
            return "<p class='note'>Your role may not record verdicts.</p>"
        return (
            "<section class='verdict'><h2>Verdict</h2>"
            f"<form method='post' action='/decide' id='verdict-form'>{self.csrf_field(req)}"
            f"<input type='hidden' name='a' value='{esc(a)}'>"
            f"<input type='hidden' name='b' value='{esc(b)}'>"
            "<label>Comment <textarea name='comment' rows='2' cols='60'></textarea></label><br>"
            "<button type='submit' name='verdict' value='hit' id='v-hit'>Hit (identification)"
            "</button> <button type='submit' name='verdict' value='excluded' id='v-excluded'>"
            "Excluded</button> <button type='submit' name='verdict' value='inconclusive'"
            " id='v-inconclusive'>Inconclusive</button></form>"
            "<p class='note'>Recorded through the service's Decide call (append-only,"
            " audited); a new verdict supersedes, never overwrites.</p></section>"
        )

    @staticmethod
    def _params_block(params: dict[str, Any], kind: str) -> str:
        import ballistics
        from ballistics.descriptors import EXTRACTOR_VERSION

        items = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in sorted(params.items())
        )
        return (
            "<details class='params'><summary>Comparison parameters and software version"
            "</summary><table class='grid'>"
            f"<tr><th>software</th><td>ballistics {esc(ballistics.__version__)}, extractor"
            f" {esc(EXTRACTOR_VERSION)}</td></tr><tr><th>kind of scan</th><td>{esc(kind)}</td>"
            f"</tr>{items}</table></details>"
        )

    def render(self, req: Request) -> Response:
        """A picture of the pair for the page: ``view`` one of :data:`VIEWS`, ``rot`` extra
        degrees for B, ``az`` the light azimuth of the shaded views. Each is a Compare call
        (authorised and audited like the RPC; the numbers come from the cache of the page's
        own Compare)."""
        from ballistics.lighting import picture_surfaces
        from ballistics.picture import (
            align_pair,
            encode_png,
            height_colours,
            overlay_image,
            shaded,
        )

        a, b = self._pair(req, req.query)
        view = req.query.get("view", "a")
        if view not in VIEWS:
            raise WebAbort(grpc.StatusCode.INVALID_ARGUMENT, f"view must be one of {VIEWS}")
        rot = _number(req.query.get("rot"), 0.0, -10.0, 10.0)
        az = _number(req.query.get("az"), 315.0, -360.0, 720.0)
        self._compare(req, a, b)
        pa, pb_, comp = self.backend.comparison_view(a, b)
        sa, sb = picture_surfaces(pa, pb_, comp)
        pair = align_pair(sa, sb, comp, extra_rotation_deg=rot)
        heights = pair.kind == "topography"
        rng = (min(pair.range_a[0], pair.range_b[0]), max(pair.range_a[1], pair.range_b[1]))
        if view == "a":
            pic = height_colours(
                pair.a, pair.a_mask, rng if heights else pair.range_a, colour=heights
            )
        elif view == "b":
            pic = height_colours(
                pair.b, pair.b_mask, rng if heights else pair.range_b, colour=heights
            )
        elif view == "overlay":
            pic = overlay_image(pair)
        elif view == "shaded_a":
            pic = shaded(pair.a, pair.a_mask, pair.spacing_m, azimuth_deg=az)
        else:
            pic = shaded(pair.b, pair.b_mask, pair.spacing_m, azimuth_deg=az)
        return Response(HTTPStatus.OK, encode_png(pic), "image/png")

    # -- verdict -------------------------------------------------------------------------------
    def decide(self, req: Request) -> Response:
        a, b = self._pair(req, req.form)
        verdict = req.form.get("verdict", "")
        if verdict not in VERDICT_CODES:
            raise WebAbort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"verdict must be one of {', '.join(VERDICT_CODES)}",
            )
        d = self.rpc(
            req,
            "Decide",
            pb.DecideRequest(
                casing_id=a,
                candidate_id=b,
                verdict=VERDICT_CODES[verdict],
                comment=req.form.get("comment", "")[:2000],
            ),
        )
        raise Redirect(
            "/compare?" + urlencode({"a": a, "b": b, "decided": d.decision_id}) + "#decided"
        )

    # -- report --------------------------------------------------------------------------------
    def report(self, req: Request) -> Response:
        a, b = self._pair(req, req.query)
        cmp = self._compare(req, a, b)
        ra = self.rpc(req, "GetCasing", pb.GetCasingRequest(casing_id=a))
        rb = self.rpc(req, "GetCasing", pb.GetCasingRequest(casing_id=b))
        from ballistics.picture import frequency_words

        kind = self.kind_of(a)
        visible = self.service.policy.allowed_agencies(req.who.agency)
        decisions = [
            d
            for d in self.backend.catalog.decisions(a)
            if {d.casing_id, d.candidate_id} == {a, b} and (d.agency or "") in visible
        ]
        drows = "".join(
            f"<tr><td>{esc(d.time)}</td><td>{esc(d.examiner)}</td><td>{esc(d.agency)}</td>"
            f"<td>{esc(d.verdict)}</td><td>{esc(d.comment)}</td><td>{esc(d.id)}</td></tr>"
            for d in decisions
        )
        q = {"a": a, "b": b}
        img = lambda view: esc("/render.png?" + urlencode({**q, "view": view}))  # noqa: E731
        detail = json.loads(cmp.detail_json) if cmp.detail_json else {}
        _, _, comp = self.backend.comparison_view(a, b)
        params = detail.get("params") or dataclasses.asdict(comp.params)
        body = (
            f"<p>Printed {esc(time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()))} UTC by"
            f" {esc(req.who.user)} ({esc(req.who.agency)}).</p>"
            + self._pair_header(ra, rb)
            + "<div class='report-pics'>"
            f"<figure><img alt='A' src='{img('a')}'><figcaption>A ({esc(a)})</figcaption>"
            f"</figure><figure><img alt='B' src='{img('b')}'><figcaption>B ({esc(b)}) moved"
            " into A's frame</figcaption></figure>"
            f"<figure><img alt='overlay' src='{img('overlay')}'><figcaption>overlay: A"
            " magenta, B green</figcaption></figure></div>"
            f"<p>Score {cmp.score:.3f}; CMC {cmp.cmc}; rotation {cmp.rotation_deg:.2f}&deg;;"
            f" translation dx {cmp.dx_m * 1e6:.1f} &micro;m, dy {cmp.dy_m * 1e6:.1f} &micro;m;"
            f" {esc(frequency_words(cmp.score, kind))}.</p>"
            + (
                "<h2>Decisions</h2><table class='grid'><thead><tr><th>time</th><th>examiner"
                "</th><th>agency</th><th>verdict</th><th>comment</th><th>decision id</th></tr>"
                f"</thead><tbody>{drows}</tbody></table>"
                if drows
                else "<p>No verdict recorded for this pair.</p>"
            )
            + self._params_block(params, kind).replace("<details", "<details open")
            + "<p class='noprint'><button type='button' id='print'>Print</button></p>"
        )
        return self.page(req, "Case-file report", body, body_class="report")

    # -- intelligence: series and the hub report (server.intel_service) ---------------------
    def series_list(self, req: Request) -> Response:
        from .proto_gen import intelligence_pb2 as ipb

        views = json.loads(self.intel_rpc(req, "ListSeries", ipb.ListSeriesRequest()).series_json)
        rows = "".join(
            f"<tr><td><a href='/series/{esc(v['series_id'])}'>{esc(v['series_id'])}</a></td>"
            f"<td>{v['incidents']}</td><td>{v['firearms']}</td><td>{v['links']}</td>"
            f"<td>{v['hidden_links']}</td><td>{esc(', '.join(v['agencies']))}</td>"
            f"<td>{esc(v['first_date'] or '')}</td><td>{esc(v['last_date'] or '')}</td></tr>"
            for v in views
        )
        body = (
            "<p>Incidents linked by confirmed hits (leads are not links). Hidden: links to"
            " records you may not see.</p><table class='grid'><thead><tr><th>series</th>"
            "<th>incidents</th><th>firearms</th><th>links</th><th>hidden</th><th>agencies</th>"
            f"<th>first</th><th>last</th></tr></thead><tbody>{rows}</tbody></table>"
            if views
            else "<p>No series you may see.</p>"
        )
        return self.page(req, "Series", body)

    def series_page(self, req: Request, name: str) -> Response:
        from .intel_output import series_html_body
        from .proto_gen import intelligence_pb2 as ipb

        png = name.endswith(".png")
        sid = name.removesuffix(".png")
        resp = self.intel_rpc(req, "GetSeries", ipb.GetSeriesRequest(series_id=sid, with_png=png))
        if png:
            return Response(HTTPStatus.OK, resp.png, "image/png")
        view = json.loads(resp.series_json)
        body = series_html_body(view, f"/series/{view['series_id']}.png", css_class="grid")
        body += "<p class='noprint'><button type='button' id='print'>Print</button></p>"
        return self.page(req, f"Series {view['series_id']}", body, body_class="report")

    def _report_request(self, req: Request, with_png: bool) -> Any:
        from .proto_gen import intelligence_pb2 as ipb

        return self.intel_rpc(
            req,
            "GetReport",
            ipb.ReportRequest(
                date_from=req.query.get("from", ""),
                date_to=req.query.get("to", ""),
                with_png=with_png,
            ),
        )

    def hub(self, req: Request) -> Response:
        from .intel_output import REPORT_CSV_KEYS, html_table

        rep = json.loads(self._report_request(req, False).report_json)
        rows = []
        for r in [*rep["jurisdictions"], rep["total"]]:
            flat = dict(r)
            for k in ("incident_to_lead", "lead_to_hit"):
                flat[f"{k}_n"] = r[k]["n"]
                flat[f"{k}_median_h"] = r[k]["median_h"]
                flat[f"{k}_share_within_goal"] = r[k]["share_within_goal"]
            rows.append([flat.get(k) for k in REPORT_CSV_KEYS])
        q = urlencode(
            {k: v for k, v in (("from", rep["period"]["from"]), ("to", rep["period"]["to"])) if v}
        )
        body = (
            "<form method='get' action='/hub' class='noprint'>From <input name='from' type='date'"
            f" value='{esc(rep['period']['from'] or '')}'> to <input name='to' type='date'"
            f" value='{esc(rep['period']['to'] or '')}'> <button type='submit'>Show</button>"
            "</form>"
            + html_table(list(REPORT_CSV_KEYS), rows, "grid")
            + f"<p><img src='/hub.png?{esc(q)}' alt='hub report chart'></p>"
            + "".join(f"<p>{esc(n)}.</p>" for n in rep["notes"])
        )
        return self.page(req, "Hub report", body, body_class="report")

    def hub_png(self, req: Request) -> Response:
        return Response(HTTPStatus.OK, self._report_request(req, True).png, "image/png")


class _Forbidden(Exception):
    """A POST without the session's CSRF token."""


def _number(raw: str | None, default: float, lo: float, hi: float) -> float:
    try:
        v = float(raw) if raw is not None else default
    except ValueError:
        return default
    return min(hi, max(lo, v)) if math.isfinite(v) else default


# ------------------------------------------------------------------------ HTTP plumbing


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    peer: str
    cert_subject: tuple[str | None, str | None]
    session: Session | None
    set_cookie: bool = False
    clear_cookie: bool = False

    @property
    def who(self) -> _Who:
        assert self.session is not None and self.session.identity is not None
        return _Who(self.session.identity)


@dataclass(frozen=True)
class _Who:
    identity: Identity

    @property
    def user(self) -> str:
        return self.identity.user

    @property
    def agency(self) -> str:
        return self.identity.agency

    @property
    def can_decide(self) -> bool:
        from .auth import Permission

        return self.identity.can(Permission.DECIDE)

    @property
    def can_leads(self) -> bool:
        from .auth import Permission

        return self.identity.can(Permission.LEADS)


def _first(d: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[0] for k, v in d.items() if v}


def _cert_subject(sock: Any) -> tuple[str | None, str | None]:
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None, None
    cert = getpeercert()
    if not cert:
        return None, None
    fields = {k: v for rdn in cert.get("subject", ()) for k, v in rdn}
    return fields.get("commonName"), fields.get("organizationName")


class _Handler(BaseHTTPRequestHandler):
    server_version = "ballistics-review"
    sys_version = ""
    app: ReviewApp  # set on the subclass made by :func:`create_web_server`

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        form: dict[str, str] = {}
        if method == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_FORM_BYTES:
                self._send(Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"form too large"))
                return
            raw = self.rfile.read(n).decode("utf-8", "replace")
            form = _first(parse_qs(raw, keep_blank_values=True))
        cookie = SimpleCookie()
        with contextlib.suppress(Exception):
            cookie.load(self.headers.get("Cookie") or "")
        sid = cookie[COOKIE].value if COOKIE in cookie else None
        host, port = self.client_address[:2]
        req = Request(
            method=method,
            path=url.path,
            query=_first(parse_qs(url.query)),
            form=form,
            peer=f"http:{host}:{port}",
            cert_subject=_cert_subject(self.connection),
            session=self.app.sessions.get(sid),
        )
        self._send(self.app.handle(req), req)

    def _send(self, resp: Response, req: Request | None = None) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if self.app.secure:
            self.send_header("Strict-Transport-Security", "max-age=31536000")
        names = {k.lower() for k, _ in resp.headers}
        if "cache-control" not in names:
            self.send_header("Cache-Control", "no-store")
        for k, v in resp.headers:
            self.send_header(k, v)
        if req is not None and (req.set_cookie or req.clear_cookie):
            self.send_header("Set-Cookie", self._cookie(req))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def _cookie(self, req: Request) -> str:
        secure = "; Secure" if self.app.secure else ""
        if req.clear_cookie or req.session is None:
            return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"
        return (
            f"{COOKIE}={quote(req.session.sid)}; Path=/; Max-Age={int(SESSION_MAX_S)};"
            f" HttpOnly; SameSite=Strict{secure}"
        )


@dataclass
class WebServer:
    """The running HTTP(S) server (a daemon thread)."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread
    app: ReviewApp
    url: str

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def create_web_server(
    service: MatchingService,
    host: str,
    port: int,
    *,
    tls: TlsConfig | None = None,
    intel: Any = None,
) -> WebServer:
    """Bind the review page on ``host:port`` (0: any free port) and start it in a thread.

    Under ``tls`` it serves HTTPS with the same certificate and key, and asks for (and
    requires) a client certificate signed by ``tls.client_ca`` when ``tls.require_client_cert``.
    Raises ``OSError`` when the address cannot be bound.
    """
    app = ReviewApp(service, secure=tls is not None, intel=intel)
    handler = type("ReviewHandler", (_Handler,), {"app": app})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.client_ca is not None and tls.require_client_cert:
            ctx.load_verify_locations(str(tls.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    bound = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, name="review-http", daemon=True)
    t.start()
    return WebServer(httpd, t, app, f"{scheme}://{host}:{bound}/")


__all__: Sequence[str] = (
    "ReviewApp",
    "WebAbort",
    "WebContext",
    "WebServer",
    "create_web_server",
)
