"""``make demo-intel``: crime-gun intelligence end to end on a running server (issue 14).

Synthetic casings (seeded, real pipeline): one crime gun fired at two Riverside PD shootings
(jurisdiction state-north) and one Lakeside Sheriff shooting (state-south), and at a case of
Federal Lab X, a national lab that searches both states (they do not search it); distractor
guns in each agency. Printing each ``ballistics ...`` command as it runs it, the demo

1. submits the scene casings and records the incidents' coordinates (``locate``);
2. links the shootings: each examiner searches and records a hit on the top candidate when
   it is the same gun (checked against the synthetic ground truth);
3. Lakeside recovers a pistol (``firearm add``), test-fires it twice (``submit`` +
   ``firearm test-fire``), and the test fire's search finds the scene casings: the hit ties
   the pistol to the whole series across both jurisdictions; it records a trace request and
   its result (``firearm trace``, ``trace-result``);
4. prints the series report as Riverside sees it (the Federal link counted, not shown) and as
   Lakeside sees it, writing HTML, PNG, CSV and JSON, and the hub report (text, PNG, CSV,
   JSON);
5. stops the server and verifies the audit log.

Exit 0 when every step and check passed, else 1 naming the step. ``--out DIR`` picks the
folder (default ``out/demo-intel-<timestamp>/``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.demo import (
    FEDERAL,
    LAKESIDE,
    RIVERSIDE,
    USERS,
    DemoError,
    Result,
    cli,
    fresh_dir,
    json_lines,
    say,
    start_server,
    step,
    write_tokens_file,
)

AGENCIES = {RIVERSIDE: "state-north", LAKESIDE: "state-south", FEDERAL: "federal"}
#: The states search each other; the national lab searches both (not the other way round).
SHARING = {
    "state-north": ["state-south"],
    "state-south": ["state-north"],
    "federal": ["state-north", "state-south"],
}
TODAY = dt.datetime.now(dt.UTC).date()


def day(offset: int) -> str:
    return (TODAY + dt.timedelta(days=offset)).isoformat()


def write_auth_and_policy(out: Path) -> tuple[Path, Path, dict[tuple[str, str], str]]:
    from server.auth import new_token_entry, write_auth_file

    tokens: dict[tuple[str, str], str] = {}
    entries, rows = [], []
    for agency, roles in USERS.items():
        for role, user in roles.items():
            token, entry = new_token_entry(user, agency, role)
            tokens[(agency, role)] = token
            entries.append(entry)
            rows.append((agency, role, user, token))
    auth = out / "auth.json"
    write_auth_file(auth, entries)
    write_tokens_file(out / "tokens.txt", rows)
    policy = out / "policy.json"
    policy.write_text(json.dumps({"agencies": AGENCIES, "jurisdictions": SHARING}, indent=2))
    return auth, policy, tokens


#: The crime gun's shots: (agency, incident, date offset in days, place, lat, lon); shots 5-6
#: are the recovered pistol's test fires.
SCENES = [
    (RIVERSIDE, "RPD-0311", -61, "Mill Rd & 4th St, Riverside", 41.712, -73.921),
    (RIVERSIDE, "RPD-0402", -30, "Harbor Park, Riverside", 41.701, -73.936),
    (LAKESIDE, "LSO-1177", -1, "Route 9 gas station, Lakeside", 41.552, -73.874),
    (FEDERAL, "FED-0042", -45, "federal case (interstate)", 41.630, -73.800),
]


def run(opts: argparse.Namespace) -> Result:
    from ballistics.synth import write_corpus
    from server.client import Client

    r = Result()
    out = fresh_dir(opts.out and Path(opts.out))
    r.out_dir = out
    with step(r, "set-up: synthetic casings, auth, policy, audit key, server"):
        manifest = write_corpus(out / "casings", guns=2, shots=6, seed=14)
        with manifest.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        guns = sorted({row["firearm_id"] for row in rows})
        crime = [out / "casings" / row["file"] for row in rows if row["firearm_id"] == guns[0]]
        others = [
            (out / "casings" / row["file"], row["firearm_id"])
            for row in rows
            if row["firearm_id"] != guns[0]
        ]
        gun_of = {out / "casings" / row["file"]: row["firearm_id"] for row in rows}
        calibre = next(row["caliber"] for row in rows if row["firearm_id"] == guns[0])
        auth, policy, tokens = write_auth_and_policy(out)
        key = out / "audit.key"
        cli(["audit", "keygen", "--audit-key-file", str(key)], what="audit keygen")
        data = out / "data"
        srv = start_server(data, auth, policy, out / "server.log", 120.0, key)
        r.address = srv.address

    def tok(agency: str, role: str) -> str:
        return tokens[(agency, role)]

    server = ["--server", srv.address]
    casing_of: dict[Path, str] = {}
    try:
        with step(r, "scene casings: submit, and the incidents' coordinates"):
            for (agency, inc, off, place, lat, lon), path in zip(SCENES, crime, strict=False):
                p = cli(
                    [
                        "submit",
                        str(path),
                        *server,
                        "--incident",
                        inc,
                        "--date",
                        day(off),
                        "--place",
                        place,
                        "--caliber",
                        calibre,
                        "--no-search",
                        "--json",
                    ],
                    token=tok(agency, "submitter"),
                )
                casing_of[path] = json_lines(p.stdout)[0]["casing_id"]
                cli(
                    ["locate", inc, "--lat", str(lat), "--lon", str(lon), *server],
                    token=tok(agency, "submitter"),
                )
            # distractors: other guns' casings in every agency (no coordinates)
            owners = [RIVERSIDE, LAKESIDE, FEDERAL]
            for i, (path, gun) in enumerate(others):
                agency = owners[i % 3]
                with Client(srv.address, tok(agency, "submitter")) as c:
                    resp = c.submit(
                        path,
                        incident_id=f"{agency[:3].upper()}-{gun[-4:]}",
                        acquisition_date=day(-90 + i),
                        search=False,
                    )
                casing_of[path] = resp.casing_id
            say(f"   {len(casing_of)} casings stored ({len(others)} from other guns)")

        def search_and_decide(agency: str, query: Path) -> list[str]:
            """The examiner's search from ``query``: the top candidate must be the same gun
            (else the demo fails); a hit is recorded on each of the top three that is (the
            synthetic ground truth stands in for the examiner's comparison)."""
            p = cli(
                ["search", "--casing-id", casing_of[query], "--top", "5", "--json", *server],
                token=tok(agency, "examiner"),
            )
            cands = [c for c in json_lines(p.stdout) if c.get("rank")]
            if not cands:
                raise DemoError(f"no candidates for {casing_of[query]}")
            path_of = {v: k for k, v in casing_of.items()}

            def same_gun(c: dict[str, Any]) -> bool:
                return gun_of.get(path_of.get(c["casing_id"], Path())) == gun_of[query]

            for c in cands[:3]:
                say(
                    f"     #{c['rank']} {c['casing_id']} {c['agency']:<16} score"
                    f" {c['score'] if c['score'] is not None else '-'}  same gun: "
                    f"{'yes' if same_gun(c) else 'no'}"
                )
            if not same_gun(cands[0]):
                raise DemoError(f"top candidate of {casing_of[query]} is not the same gun")
            hits = [str(c["casing_id"]) for c in cands[:3] if same_gun(c)]
            for cid in hits:
                cli(
                    [
                        "decide",
                        casing_of[query],
                        cid,
                        "--verdict",
                        "hit",
                        "--comment",
                        "breech-face marks agree",
                        *server,
                    ],
                    token=tok(agency, "examiner"),
                )
            return hits

        with step(r, "link the shootings: searches and hits"):
            search_and_decide(RIVERSIDE, crime[1])  # RPD-0402: found among both states'
            search_and_decide(LAKESIDE, crime[2])  # LSO-1177
            search_and_decide(FEDERAL, crime[3])  # the national lab links its case too
        with step(r, "recover the pistol, test-fire it, hit the series"):
            p = cli(
                [
                    "firearm",
                    "add",
                    "--make",
                    "Taurus",
                    "--model",
                    "G2C",
                    "--caliber",
                    calibre,
                    "--serial",
                    "TGX-48213",
                    "--recovered-on",
                    day(0),
                    "--place",
                    "traffic stop, Route 9, Lakeside",
                    "--lat",
                    "41.560",
                    "--lon",
                    "-73.870",
                    "--json",
                    *server,
                ],
                token=tok(LAKESIDE, "submitter"),
            )
            fid = json.loads(p.stdout)["firearm_id"]
            # the first test fire: submitted, then marked (`firearm test-fire`); its search
            # runs before the second exists, so the top candidates are scene casings
            tf1, tf2 = crime[4], crime[5]
            p = cli(
                [
                    "submit",
                    str(tf1),
                    *server,
                    "--incident",
                    f"TF-{fid}",
                    "--date",
                    day(0),
                    "--caliber",
                    calibre,
                    "--no-search",
                    "--json",
                ],
                token=tok(LAKESIDE, "submitter"),
            )
            casing_of[tf1] = json_lines(p.stdout)[0]["casing_id"]
            cli(
                ["firearm", "test-fire", fid, casing_of[tf1], *server],
                token=tok(LAKESIDE, "submitter"),
            )
            search_and_decide(LAKESIDE, tf1)
            # the second in one command (`submit --test-fire-of`)
            p = cli(
                [
                    "submit",
                    str(tf2),
                    *server,
                    "--incident",
                    f"TF-{fid}",
                    "--date",
                    day(0),
                    "--caliber",
                    calibre,
                    "--test-fire-of",
                    fid,
                    "--no-search",
                    "--json",
                ],
                token=tok(LAKESIDE, "submitter"),
            )
            casing_of[tf2] = json_lines(p.stdout)[0]["casing_id"]
            p = cli(
                [
                    "firearm",
                    "trace",
                    fid,
                    "--requested-of",
                    "national tracing centre",
                    "--json",
                    *server,
                ],
                token=tok(LAKESIDE, "examiner"),
            )
            trace = json.loads(p.stdout)["traces"][0]["trace_id"]
            p = cli(
                [
                    "firearm",
                    "trace-result",
                    trace,
                    "--status",
                    "completed",
                    "--outcome",
                    "made 2019 (Brazil); imported by an example importer; first retail buyer"
                    " reported it stolen 2024",
                    *server,
                ],
                token=tok(LAKESIDE, "examiner"),
            )
            say(p.stdout.rstrip())
        with step(r, "series report (Riverside's view, then Lakeside's)"):
            for agency, tag in ((RIVERSIDE, "riverside"), (LAKESIDE, "lakeside")):
                p = cli(
                    [
                        "series",
                        "--firearm-id",
                        fid,
                        "--html",
                        str(out / f"series-{tag}.html"),
                        "--png",
                        str(out / f"series-{tag}.png"),
                        "--csv",
                        str(out / f"series-{tag}.csv"),
                        *server,
                    ],
                    token=tok(agency, "examiner"),
                )
                say(p.stdout.rstrip())
                p = cli(
                    ["series", "--firearm-id", fid, "--json", *server],
                    token=tok(agency, "examiner"),
                )
                view = json.loads(p.stdout)
                (out / f"series-{tag}.json").write_text(json.dumps(view, indent=2))
                if view["incidents"] < 3 or view["firearms"] != 1:
                    raise DemoError(
                        f"{agency} sees {view['incidents']} incidents, "
                        f"{view['firearms']} firearm(s); expected 3 and 1"
                    )
                if (
                    agency == RIVERSIDE
                    and FEDERAL not in view["agencies"]
                    and view["hidden_links"] < 1
                ):
                    raise DemoError("the Federal link should be counted as hidden for Riverside")
                if len(view["jurisdictions"]) < 2:
                    raise DemoError("the series should cross two jurisdictions")
            r.links = view
        with step(r, "the hub's report"):
            p = cli(
                ["report", "--png", str(out / "hub.png"), "--csv", str(out / "hub.csv"), *server],
                token=tok(LAKESIDE, "examiner"),
            )
            say(p.stdout.rstrip())
            p = cli(["report", "--json", *server], token=tok(LAKESIDE, "examiner"))
            (out / "hub.json").write_text(json.dumps(json.loads(p.stdout), indent=2))
    finally:
        code = srv.stop()
        if code != 0:
            r.failures.append(f"server exited with {code}")
    with step(r, "audit verify"):
        p = cli(
            ["audit", "verify", "--data-dir", str(data), "--audit-key-file", str(key), "--json"]
        )
        r.audit = json.loads(p.stdout)
        say(f"   audit: {r.audit}")
    return r


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output folder (default out/demo-intel-<timestamp>)")
    opts = ap.parse_args(argv)
    if not opts.out:
        opts.out = str(Path("out") / f"demo-intel-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.monotonic()
    try:
        r = run(opts)
    except DemoError as e:
        print(f"demo-intel: FAILED: {e}", file=sys.stderr)
        return 1
    say("\n== summary")
    for name, secs in r.timings:
        say(f"   {secs:6.1f} s  {name}")
    say(f"   total {time.monotonic() - t0:.1f} s; outputs in {r.out_dir}")
    if r.failures:
        print("demo-intel: FAILED: " + "; ".join(r.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
