"""Shared helpers for the review-page tests: a real store of a few synthetic casings, the gRPC
server over it and the review page beside it, on loopback.

(No tests here; the module is imported by the test_web_* files.)
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.test_server_support import Running, running_server


@dataclass
class Review:
    """The running servers and the stored casings (name -> casing id)."""

    srv: Running
    web: Any  # server.web.WebServer
    ids: dict[str, str]

    @property
    def url(self) -> str:
        return self.web.url.rstrip("/")


# name: (gun index, shot, agency, incident, case number)
CASINGS = {
    "q": (0, 1, "PD-North", "N-1", "PDN-24-001"),
    "mate": (0, 2, "PD-South", "S-7", "PDS-24-117"),
    "other": (1, 1, "PD-North", "N-2", ""),
    "east": (1, 2, "SO-East", "E-1", "SOE-9"),
}


@contextmanager
def review_server(tmp_path: Path, *, tls: Any = None) -> Iterator[Review]:
    """Write 2 synthetic guns x 2 shots (seed 5), store them for three agencies (north and
    south share; east shares with nobody), serve gRPC and the review page on loopback."""
    from ballistics.synth import write_corpus
    from server.app import open_backend
    from server.service import ServiceLimits
    from server.web import create_web_server

    corpus = tmp_path / "corpus"
    manifest = write_corpus(corpus, guns=2, shots=2, seed=5)
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    guns = sorted({r["firearm_id"] for r in rows})
    data = tmp_path / "data"
    backend, close = open_backend(data, ServiceLimits(spool_dir=str(tmp_path)))
    try:
        ids: dict[str, str] = {}
        for name, (g, shot, agency, incident, case) in CASINGS.items():
            row = [r for r in rows if r["firearm_id"] == guns[g]][shot - 1]
            path = corpus / row["file"]
            md = {
                "agency": agency,
                "incident": incident,
                "case_number": case,
                "caliber": "9mm",
                "date": f"2024-03-0{shot}",
            }
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            done = backend.catalog.ingest_file(path, path.name, md, sha256=sha)
            ids[name] = done.record.casing_id
        with running_server(backend, data, tls=tls) as srv:
            assert srv.server.service is not None
            web = create_web_server(srv.server.service, "127.0.0.1", 0, tls=None)
            try:
                yield Review(srv, web, ids)
            finally:
                web.stop()
    finally:
        close()


class Browserless:
    """A tiny cookie-keeping HTTP client for the review page (no redirects followed)."""

    def __init__(self, base: str) -> None:
        u = urlsplit(base)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.cookie = ""

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if "set-cookie" in hdrs:
            self.cookie = hdrs["set-cookie"].split(";", 1)[0]
        conn.close()
        return resp.status, hdrs, text

    def csrf(self, page: str) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        assert m, "no CSRF field in the page"
        return m.group(1)

    def login(self, token: str) -> int:
        _, _, page = self.request("GET", "/login")
        status, _, _ = self.request("POST", "/login", {"csrf": self.csrf(page), "token": token})
        return status
