"""The Intelligence service and the `firearm`, `locate`, `series`, `report` commands: gRPC and
CLI round trips through roles, the sharing policy and the audit log; bad input gives clear
errors, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from index.service import Catalog
from index.testing import PNG_MAGIC, FakeScreenEngine
from server.app import CatalogBackend
from server.cli import main as cli_main
from tests.test_server_support import POLICY, running_server


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value.code()


def test_cli_firearm_statuses_are_the_stores() -> None:
    from index.intel import FIREARM_STATUSES, TRACE_STATUSES
    from server import cli

    assert cli.FIREARM_STATUSES == FIREARM_STATUSES and cli.TRACE_STATUSES == TRACE_STATUSES


def test_grpc_and_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    catalog = Catalog.open(data, engine=FakeScreenEngine())
    try:
        with running_server(CatalogBackend(catalog), data) as srv:
            with (
                srv.client("north_exam") as n,
                srv.client("north_sub") as nsub,
                srv.client("south_exam") as s,
                srv.client("east_exam") as e,
            ):
                a = n.submit(PNG_MAGIC + b"FAKE:1:0", incident_id="N-1", search=False)
                b = s.submit(PNG_MAGIC + b"FAKE:1:1", incident_id="S-1", search=False)
                x = e.submit(PNG_MAGIC + b"FAKE:1:2", incident_id="E-1", search=False)
                n.decide(a.casing_id, b.casing_id, "hit", "")
                n.set_incident_location("N-1", 40.0, -75.0)
                s.set_incident_location("S-1", 39.9, -75.2)
                # a submitter records the firearm and its test fire
                fa = nsub.add_firearm(
                    make="Glock",
                    model="17",
                    calibre="9mm",
                    serial_number="ABC123",
                    recovered_on="2025-03-04",
                    place="Elm St",
                    lat=40.01,
                    lon=-75.01,
                )
                assert fa.agency == "PD-North" and fa.status == "recovered"
                t = nsub.submit(PNG_MAGIC + b"FAKE:1:3", incident_id="TF-1", search=False)
                fa = nsub.add_test_fire(fa.firearm_id, t.casing_id)
                assert list(fa.test_fire_casing_ids) == [t.casing_id]
                assert fa.status == "test_fired"
                n.decide(t.casing_id, b.casing_id, "hit", "test fire = scene")
                fa = n.add_trace(fa.firearm_id, "national tracing centre", "2025-03-05")
                (tr,) = fa.traces
                fa = n.update_trace(
                    tr.trace_id, "completed", "first retail buyer: J. Doe\nsold 2019"
                )
                assert fa.status == "traced" and "J. Doe" in fa.traces[0].outcome
                # the series, as north sees it: both shootings and the firearm
                rep = n.get_series(firearm_id=fa.firearm_id, with_png=True, with_html=True)
                view = json.loads(rep.series_json)
                assert view["incidents"] == 2 and view["firearms"] == 1 and view["links"] == 2
                assert view["jurisdictions"] == ["north", "south"]
                assert rep.png[:4] == b"\x89PNG" and "<h1>Series" in rep.html
                assert t.casing_id in rep.csv
                assert json.loads(n.list_series().series_json)[0]["series_id"] == view["series_id"]
                # south sees the same series and the firearm, but may not change it
                assert (
                    json.loads(s.get_series(incident_id="S-1").series_json)["series_id"]
                    == (view["series_id"])
                )
                assert s.get_firearm(fa.firearm_id).serial_number == "ABC123"
                assert _code(lambda: s.add_test_fire(fa.firearm_id, b.casing_id)) is (
                    grpc.StatusCode.PERMISSION_DENIED
                )
                # east sees none of it: NOT_FOUND like an unknown id, an empty list
                assert _code(lambda: e.get_firearm(fa.firearm_id)) is grpc.StatusCode.NOT_FOUND
                assert _code(lambda: e.get_firearm("F-nope")) is grpc.StatusCode.NOT_FOUND
                assert _code(lambda: e.get_series(series_id=view["series_id"])) is (
                    grpc.StatusCode.NOT_FOUND
                )
                assert json.loads(e.list_series().series_json) == []
                erep = json.loads(e.report().report_json)
                assert [r["jurisdiction"] for r in erep["jurisdictions"]] == ["east"]
                assert erep["total"]["scene_casings"] == 1 and erep["total"]["hits"] == 0
                # east links its own casing to north's? it cannot see north's casing
                assert _code(lambda: n.add_test_fire(fa.firearm_id, x.casing_id)) is (
                    grpc.StatusCode.NOT_FOUND
                )
                # the hub report, as north sees it
                hub = n.report(with_png=True)
                r = json.loads(hub.report_json)
                assert r["total"]["hits"] == 2 and r["total"]["hits_cross_jurisdiction"] == 2
                assert r["total"]["hits_firearm_to_scene"] == 1
                assert r["total"]["firearms_recovered"] == 1 and r["total"]["firearms_traced"] == 1
                assert r["total"]["test_fires"] == 1 and r["total"]["scene_casings"] == 2
                assert hub.png[:4] == b"\x89PNG" and hub.csv.startswith("jurisdiction,")
                # roles: a submitter reads firearms but not series or reports
                assert _code(lambda: nsub.report()) is grpc.StatusCode.PERMISSION_DENIED
                assert _code(lambda: nsub.list_series()) is grpc.StatusCode.PERMISSION_DENIED
                # bad input: INVALID_ARGUMENT with the reason, never INTERNAL
                bad = [
                    lambda: n.add_firearm(recovered_on="2025-02-30"),
                    lambda: n.add_firearm(lat=100.0, lon=0.0),
                    lambda: n.add_firearm(lat=10.0),
                    lambda: n.add_firearm(status="lost"),
                    lambda: n.add_firearm(firearm_id=fa.firearm_id),
                    lambda: n.get_firearm("F" * 200),
                    lambda: n.get_firearm(""),
                    lambda: n.report(date_from="yesterday"),
                    lambda: n.report(date_from="2025-02-01", date_to="2025-01-01"),
                    lambda: n.get_series(series_id="S-1", incident_id="N-1"),
                    lambda: n.get_series(),
                    lambda: n.update_trace(tr.trace_id, "done"),
                    lambda: n.add_trace(fa.firearm_id, ""),
                    lambda: n.set_incident_location("N-1", 0.0, 500.0),
                ]
                for call in bad:
                    assert _code(call) is grpc.StatusCode.INVALID_ARGUMENT
                assert _code(lambda: n.report(jurisdictions=["east"])) is grpc.StatusCode.NOT_FOUND
                assert _code(lambda: n.set_incident_location("S-1", 1.0, 1.0)) is (
                    grpc.StatusCode.NOT_FOUND  # south's incident: north has none of that name
                )
            # the audit log has one record per call, with the firearm named
            records = [json.loads(line) for line in srv.audit.path.read_text().splitlines()]
            methods = {(r["method"], r["outcome"]) for r in records}
            assert {("AddFirearm", "OK"), ("GetSeries", "OK"), ("GetReport", "OK")} <= methods
            assert ("GetFirearm", "NOT_FOUND") in methods
            assert ("GetReport", "PERMISSION_DENIED") in methods
            assert any(f"firearm:{fa.firearm_id}" in r.get("targets", []) for r in records)

            # CLI, remote
            base = ["--server", srv.address, f"--token={srv.tokens['north_exam']}"]
            assert cli_main(["series", "--firearm-id", fa.firearm_id, "--json", *base]) == 0
            remote_series = json.loads(capsys.readouterr().out)
            assert remote_series == view
            png, html, csv_ = tmp_path / "s.png", tmp_path / "s.html", tmp_path / "s.csv"
            assert (
                cli_main(
                    [
                        "series",
                        view["series_id"],
                        "--png",
                        str(png),
                        "--html",
                        str(html),
                        "--csv",
                        str(csv_),
                        *base,
                    ]
                )
                == 0
            )
            assert "series " + view["series_id"] in capsys.readouterr().out
            assert png.read_bytes()[:4] == b"\x89PNG" and "s.png" in html.read_text()
            assert cli_main(["report", "--json", *base]) == 0
            remote_report = json.loads(capsys.readouterr().out)
            assert remote_report["total"] == r["total"]
            assert cli_main(["firearm", "show", fa.firearm_id, "--json", *base]) == 0
            doc = json.loads(capsys.readouterr().out)
            assert doc["serial_number"] == "ABC123" and doc["traces"][0]["status"] == "completed"
            assert cli_main(["series", "--json", *base]) == 0
            assert json.loads(capsys.readouterr().out)["series_id"] == view["series_id"]
            sub = ["--server", srv.address, f"--token={srv.tokens['north_sub']}"]
            assert cli_main(["firearm", "add", "--make", "Colt", "--json", *sub]) == 0
            colt = json.loads(capsys.readouterr().out)
            assert colt["make"] == "Colt"
            # a status change: kept with who, when and why; only the owning agency changes it
            why = ["--comment", "court order 2026/118"]
            argv = ["firearm", "status", colt["firearm_id"], "--status", "destroyed", *why]
            assert cli_main([*argv, "--json", *sub]) == 0
            doc = json.loads(capsys.readouterr().out)
            assert doc["status"] == "destroyed"
            assert [(c["previous"], c["status"], c["comment"]) for c in doc["status_changes"]] == [
                ("recovered", "destroyed", "court order 2026/118")
            ]
            assert cli_main(["firearm", "show", colt["firearm_id"], *base]) == 0
            assert "recovered -> destroyed" in capsys.readouterr().out
            with srv.client("south_exam") as s2, srv.client("east_exam") as e2:
                fid = colt["firearm_id"]
                assert _code(lambda: s2.set_firearm_status(fid, "returned", "x")) is (
                    grpc.StatusCode.PERMISSION_DENIED
                )
                assert _code(lambda: e2.set_firearm_status(fid, "returned", "x")) is (
                    grpc.StatusCode.NOT_FOUND
                )
            with srv.client("north_sub") as n3:
                for bad_call in (
                    lambda: n3.set_firearm_status(fid, "lost", "x"),
                    lambda: n3.set_firearm_status(fid, "returned", ""),
                    lambda: n3.set_firearm_status("", "returned", "x"),
                ):
                    assert _code(bad_call) is grpc.StatusCode.INVALID_ARGUMENT
                assert n3.get_firearm(fid).status == "destroyed"  # refusals changed nothing
            audit = [json.loads(line) for line in srv.audit.path.read_text().splitlines()]
            assert {("SetFirearmStatus", o) for o in ("OK", "PERMISSION_DENIED", "NOT_FOUND")} <= {
                (r["method"], r["outcome"]) for r in audit
            }
            # submit --test-fire-of: the casing stored and linked in one command
            tf = tmp_path / "tf.png"
            tf.write_bytes(PNG_MAGIC + b"FAKE:1:4")
            argv = ["submit", str(tf), "--test-fire-of", fa.firearm_id, "--no-search", "--json"]
            assert cli_main([*argv, *sub]) == 0
            sent = json.loads(capsys.readouterr().out)
            assert sent["test_fire_of"] == fa.firearm_id
            assert cli_main(["firearm", "show", fa.firearm_id, "--json", *base]) == 0
            assert sent["casing_id"] in json.loads(capsys.readouterr().out)["test_fires"]
            with srv.client("north_exam") as n2:
                before = len(n2.list().casings)
                tf.write_bytes(PNG_MAGIC + b"FAKE:1:5")
                assert cli_main(["submit", str(tf), "--test-fire-of", "F-nope", *sub]) == 2
                assert "NOT_FOUND" in capsys.readouterr().err
                assert len(n2.list().casings) == before  # refused before any upload
            # the series and report now include that test fire: what the local view must match
            assert cli_main(["series", "--firearm-id", fa.firearm_id, "--json", *base]) == 0
            remote_series = json.loads(capsys.readouterr().out)
            assert cli_main(["report", "--json", *base]) == 0
            remote_report = json.loads(capsys.readouterr().out)
            assert remote_report["total"]["test_fires"] == 2
            # CLI errors: one line, exit 2
            for argv in (
                ["firearm", "show", "F-nope", *base],
                ["report", "--from", "2025-13-01", *base],
                ["firearm", "add", "--lat", "1", *sub],
                ["series", "S-1", "--incident-id", "N-1", *base],
                ["series", "--png", "x.png", *base],
                ["report", *sub],
                ["firearm", "add"],
                ["firearm", "show", fa.firearm_id],
                ["firearm", "status", fa.firearm_id, "--status", "returned", "--comment", "x"],
                ["series", "--data-dir", str(data)],
            ):
                assert cli_main(argv) == 2, argv
                err = capsys.readouterr().err
                assert err.startswith("ballistics: ") and "Traceback" not in err
            with pytest.raises(SystemExit) as no_comment:  # argparse: --comment is required
                cli_main(["firearm", "status", fa.firearm_id, "--status", "returned", *base])
            assert no_comment.value.code == 2
            assert "--comment" in capsys.readouterr().err
    finally:
        catalog.close()
    # CLI, local: the same series and report under the same policy
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps(POLICY))
    local = ["--data-dir", str(data), "--agency", "PD-North", "--policy", str(pol), "--json"]
    assert cli_main(["series", "--firearm-id", fa.firearm_id, *local]) == 0
    assert json.loads(capsys.readouterr().out) == remote_series
    assert cli_main(["report", *local]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == remote_report["total"]
    assert cli_main(["firearm", "show", fa.firearm_id, *local]) == 0
    assert json.loads(capsys.readouterr().out)["serial_number"] == "ABC123"
    east = ["--data-dir", str(data), "--agency", "SO-East", "--policy", str(pol)]
    assert cli_main(["firearm", "show", fa.firearm_id, *east]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    assert cli_main(["series", *east]) == 0
    assert "no series you may see" in capsys.readouterr().out
    bad_pol = tmp_path / "bad.json"
    bad_pol.write_text("[]")
    assert (
        cli_main(["report", "--data-dir", str(data), "--agency", "X", "--policy", str(bad_pol)])
        == 2
    )


def test_review_pages_for_series_and_hub(tmp_path: Path) -> None:
    from server.web import create_web_server
    from tests.test_web_support import Browserless

    data = tmp_path / "data"
    catalog = Catalog.open(data, engine=FakeScreenEngine())
    try:
        with running_server(CatalogBackend(catalog), data) as srv:
            with srv.client("north_exam") as n, srv.client("south_exam") as s:
                a = n.submit(PNG_MAGIC + b"FAKE:2:0", incident_id="N-9", search=False)
                b = s.submit(PNG_MAGIC + b"FAKE:2:1", incident_id="S-9", search=False)
                n.decide(a.casing_id, b.casing_id, "hit", "")
                n.set_incident_location("N-9", 51.5, -0.1)
                sid = json.loads(n.list_series().series_json)[0]["series_id"]
            assert srv.server.service is not None and srv.server.intel is not None
            web = create_web_server(srv.server.service, "127.0.0.1", 0, intel=srv.server.intel)
            try:
                c = Browserless(web.url.rstrip("/"))
                assert c.login(srv.tokens["north_exam"]) == 303
                status, _, page = c.request("GET", "/series")
                assert status == 200 and sid in page and "Hub report" in page
                status, _, page = c.request("GET", f"/series/{sid}")
                assert status == 200 and "N-9" in page and "S-9" in page
                assert "<style>" not in page  # the page's CSP: no inline style
                status, h, _ = c.request("GET", f"/series/{sid}.png")
                assert status == 200 and h["content-type"] == "image/png"
                status, _, page = c.request("GET", "/hub?from=2000-01-01")
                assert status == 200 and "<td>north</td>" in page and "<td>east</td>" not in page
                assert c.request("GET", "/hub.png")[0] == 200
                assert c.request("GET", "/hub?from=bad")[0] == 400
                e = Browserless(web.url.rstrip("/"))
                assert e.login(srv.tokens["east_exam"]) == 303
                assert e.request("GET", f"/series/{sid}")[0] == 404  # not shared: not found
                status, _, page = e.request("GET", "/series")
                assert status == 200 and sid not in page
                sub = Browserless(web.url.rstrip("/"))
                assert sub.login(srv.tokens["north_sub"]) == 303
                assert sub.request("GET", "/hub")[0] == 403
            finally:
                web.stop()
    finally:
        catalog.close()
