"""Renderings of the intelligence views (``index.intel``): text, CSV, printable HTML and PNG.

PNG pictures are drawn with numpy and OpenCV (no plotting library, no web tiles): the series
map places incidents and firearms by their coordinates alone (an equirectangular projection
about the mean latitude, with a kilometre scale bar), under it a timeline; the hub report is
a grouped bar chart per jurisdiction and the median hours to lead and to hit against the
48-hour goal.
"""

from __future__ import annotations

import csv
import html
import io
import math
from typing import Any

import cv2
import numpy as np

from index.intel import REPORT_COUNTS

SERIES_CSV_KEYS = (
    "casing_id",
    "agency",
    "incident",
    "exhibit_id",
    "caliber",
    "acquisition_date",
    "test_fire_of",
)
REPORT_CSV_KEYS = (
    "jurisdiction",
    *REPORT_COUNTS,
    "incident_to_lead_n",
    "incident_to_lead_median_h",
    "incident_to_lead_share_within_goal",
    "lead_to_hit_n",
    "lead_to_hit_median_h",
    "lead_to_hit_share_within_goal",
)

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GREY = (170, 170, 170)
_RED = (40, 40, 210)  # BGR
_BLUE = (200, 90, 20)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


# ------------------------------------------------------------------------------ series


def series_csv(series: dict[str, Any]) -> str:
    """The evidence list, one casing per row (columns :data:`SERIES_CSV_KEYS`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SERIES_CSV_KEYS)
    for e in series.get("evidence", []):
        w.writerow(["" if e.get(k) is None else e[k] for k in SERIES_CSV_KEYS])
    return buf.getvalue()


def _hidden_line(s: dict[str, Any]) -> str:
    if not s["hidden_links"] and not s["hidden_nodes"]:
        return ""
    return (
        f"this series has {s['hidden_links']} link(s) to {s['hidden_nodes']} record(s) you may"
        " not see (not shown; ask the owning agency)"
    )


def series_text(s: dict[str, Any]) -> str:
    """The series as lines for a terminal."""
    lines = [
        f"series {s['series_id']}: {s['incidents']} incident(s), {s['firearms']} firearm(s),"
        f" {s['links']} confirmed link(s); {s['first_date'] or '?'} .. {s['last_date'] or '?'}",
        f"agencies: {', '.join(s['agencies'])}",
    ]
    if s.get("jurisdictions"):
        lines.append(f"jurisdictions: {', '.join(s['jurisdictions'])}")
    hidden = _hidden_line(s)
    if hidden:
        lines.append("NOTE: " + hidden)
    if "timeline" not in s:
        return "\n".join(lines)
    lines.append("timeline:")
    lines += [f"  {e['time'][:19]:<19}  {e['event']:<17} {e['what']}" for e in s["timeline"]]
    for f in s["firearm_list"]:
        lines.append(
            f"firearm {f['firearm_id']}: {f['make'] or '?'} {f['model'] or ''} {f['caliber'] or ''}"
            f" serial {f['serial_number'] or '?'}, {f['status']}, test fires"
            f" {', '.join(f['test_fires']) or '-'}"
        )
        for t in f["traces"]:
            lines.append(
                f"  trace {t['trace_id']} asked of {t['requested_of']} on {t['requested_at']}:"
                f" {t['status']}" + (f" -- {t['outcome']}" if t["outcome"] else "")
            )
    lines.append("evidence:")
    for e in s["evidence"]:
        where = f"test fire of {e['test_fire_of']}" if e["test_fire_of"] else e["incident"]
        lines.append(f"  {e['casing_id']:<20} {e['agency']:<18} {where}")
    if s["open_leads"]:
        lines.append("open leads (not links; for review):")
        for ld in s["open_leads"]:
            lines.append(
                f"  lead {ld['lead_id']}: {ld['casing_a']} ~ {ld['casing_b']} ({ld['state']})"
            )
    return "\n".join(lines)


def html_table(head: list[str], rows: list[list[Any]], css_class: str = "") -> str:
    """An escaped HTML table."""
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    trs = "".join(
        "<tr>" + "".join(f"<td>{e('' if v is None else str(v))}</td>" for v in r) + "</tr>"
        for r in rows
    )
    cls = f" class='{e(css_class)}'" if css_class else ""
    return f"<table{cls}><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def series_html(s: dict[str, Any], png_name: str | None = None) -> str:
    """A printable, self-contained HTML report of the series (every value escaped)."""
    e = html.escape
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Series {e(s['series_id'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #999;padding:3px 8px;font-size:90%}"
        ".note{border:2px solid #c60;padding:6px;margin:1em 0}img{max-width:100%}"
        "@media print{.noprint{display:none}}</style></head><body>"
        f"<h1>Series {e(s['series_id'])}</h1>" + series_html_body(s, png_name) + "</body></html>"
    )


def series_html_body(s: dict[str, Any], png_src: str | None = None, css_class: str = "") -> str:
    """The series report's body (no head, no inline style: the review page's CSP)."""
    e = html.escape

    def table(head: list[str], rows: list[list[Any]]) -> str:
        return html_table(head, rows, css_class)

    parts = [
        f"<p>{s['incidents']} incident(s), {s['firearms']} firearm(s), {s['links']} confirmed"
        f" link(s), {e(s['first_date'] or '?')} to {e(s['last_date'] or '?')}. Agencies:"
        f" {e(', '.join(s['agencies']))}. Jurisdictions:"
        f" {e(', '.join(s.get('jurisdictions', [])))}."
        "</p>",
    ]
    hidden = _hidden_line(s)
    if hidden:
        parts.append(f"<p class='note'>{e(hidden)}</p>")
    if png_src:
        parts.append(f"<p><img src='{e(png_src)}' alt='map and timeline'></p>")
    parts.append("<h2>Timeline</h2>")
    parts.append(
        table(
            ["time", "event", "what"], [[t["time"], t["event"], t["what"]] for t in s["timeline"]]
        )
    )
    parts.append("<h2>Places</h2>")
    parts.append(
        table(
            ["incident", "agency", "date", "place", "lat", "lon"],
            [
                [i["incident"], i["agency"], i["date"], i["place"], i["lat"], i["lon"]]
                for i in s["incident_list"]
            ],
        )
    )
    if s["firearm_list"]:
        parts.append("<h2>Firearm</h2>")
        parts.append(
            table(
                [
                    "firearm",
                    "agency",
                    "make",
                    "model",
                    "calibre",
                    "serial",
                    "recovered",
                    "place",
                    "status",
                ],
                [
                    [
                        f["firearm_id"],
                        f["agency"],
                        f["make"],
                        f["model"],
                        f["caliber"],
                        f["serial_number"],
                        f["recovered_on"],
                        f["place"],
                        f["status"],
                    ]
                    for f in s["firearm_list"]
                ],
            )
        )
        traces = [t for f in s["firearm_list"] for t in f["traces"]]
        if traces:
            parts.append(
                table(
                    ["trace", "asked of", "on", "status", "outcome"],
                    [
                        [
                            t["trace_id"],
                            t["requested_of"],
                            t["requested_at"],
                            t["status"],
                            t["outcome"],
                        ]
                        for t in traces
                    ],
                )
            )
    parts.append("<h2>Confirmed hits</h2>")
    parts.append(
        table(
            ["decision", "casing", "of", "casing", "of", "time", "examiner"],
            [
                [
                    h["decision_id"],
                    h["casing_a"],
                    h["node_a"],
                    h["casing_b"],
                    h["node_b"],
                    h["time"],
                    h["examiner"],
                ]
                for h in s["hits"]
            ],
        )
    )
    parts.append("<h2>Evidence</h2>")
    parts.append(
        table(list(SERIES_CSV_KEYS), [[ev.get(k) for k in SERIES_CSV_KEYS] for ev in s["evidence"]])
    )
    if s["open_leads"]:
        parts.append("<h2>Open leads (not links)</h2>")
        parts.append(
            table(
                ["lead", "casing a", "casing b", "state", "created"],
                [
                    [ld["lead_id"], ld["casing_a"], ld["casing_b"], ld["state"], ld["created_at"]]
                    for ld in s["open_leads"]
                ],
            )
        )
    return "\n".join(parts)


def _text(
    img: np.ndarray,
    s: str,
    xy: tuple[int, int],
    scale: float = 0.45,
    color: tuple[int, int, int] = _BLACK,
) -> None:
    cv2.putText(img, s, xy, _FONT, scale, color, 1, cv2.LINE_AA)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return bytes(buf)


def series_png(s: dict[str, Any], width: int = 1000, height: int = 760) -> bytes:
    """Map (by coordinates only; incidents red, firearms blue, hits as lines) over a
    timeline. Places without coordinates are listed under the map."""
    img = np.full((height, width, 3), 255, np.uint8)
    _text(img, f"Series {s['series_id']}", (20, 28), 0.7)
    hidden = _hidden_line(s)
    if hidden:
        _text(img, hidden[:120], (20, 50), 0.42, (0, 90, 200))
    mx0, my0, mx1, my1 = 40, 70, width - 40, 520
    cv2.rectangle(img, (mx0, my0), (mx1, my1), _GREY, 1)
    points: dict[str, tuple[float, float, str, bool]] = {}
    for i in s.get("incident_list", []):
        if i["lat"] is not None:
            points[f"{i['agency']}/{i['incident']}"] = (i["lat"], i["lon"], i["incident"], False)
    for f in s.get("firearm_list", []):
        if f["lat"] is not None:
            points[f"firearm/{f['firearm_id']}"] = (f["lat"], f["lon"], f["firearm_id"], True)
    missing = [i["incident"] for i in s.get("incident_list", []) if i["lat"] is None]
    if points:
        lat0 = float(np.mean([p[0] for p in points.values()]))
        k = math.cos(math.radians(lat0))
        xs = np.array([p[1] * k for p in points.values()])
        ys = np.array([p[0] for p in points.values()])
        span = max(float(xs.max() - xs.min()), float(ys.max() - ys.min()), 1e-3)
        pad = 60
        scale = min(mx1 - mx0 - 2 * pad, my1 - my0 - 2 * pad) / span
        cx, cy = (xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2

        def pix(lat: float, lon: float) -> tuple[int, int]:
            return (
                round((mx0 + mx1) / 2 + (lon * k - cx) * scale),
                round((my0 + my1) / 2 - (lat - cy) * scale),
            )

        for h in s.get("hits", []):
            a, b = points.get(h["node_a"]), points.get(h["node_b"])
            if a and b:
                cv2.line(img, pix(a[0], a[1]), pix(b[0], b[1]), _GREY, 2, cv2.LINE_AA)
        for lat, lon, label, is_gun in points.values():
            p = pix(lat, lon)
            if is_gun:
                cv2.rectangle(img, (p[0] - 7, p[1] - 7), (p[0] + 7, p[1] + 7), _BLUE, -1)
            else:
                cv2.circle(img, p, 7, _RED, -1, cv2.LINE_AA)
            # firearms labelled below, incidents above: a gun recovered at a scene stays legible
            _text(img, label, (p[0] + 10, p[1] + (20 if is_gun else -8)))
        # scale bar: a round number of km near a fifth of the map's width
        km_per_px = 111.32 / scale
        target = km_per_px * (mx1 - mx0) / 5
        bar_km = 10 ** math.floor(math.log10(target)) if target > 0 else 1.0
        for m in (5, 2):
            if bar_km * m <= target:
                bar_km *= m
                break
        bar_px = int(bar_km / km_per_px)
        cv2.line(img, (mx0 + 15, my1 - 15), (mx0 + 15 + bar_px, my1 - 15), _BLACK, 2)
        _text(img, f"{bar_km:g} km", (mx0 + 15, my1 - 22))
        _text(img, "N ^", (mx1 - 45, my0 + 20))
    else:
        _text(img, "no coordinates recorded for this series", (mx0 + 20, (my0 + my1) // 2))
    if missing:
        _text(img, "without coordinates: " + ", ".join(missing)[:110], (mx0, my1 + 18), 0.4)
    # timeline
    ty = 640
    tx0, tx1 = 60, width - 60
    cv2.line(img, (tx0, ty), (tx1, ty), _BLACK, 1)
    events = [e for e in s.get("timeline", []) if e["time"]]
    if events:
        import datetime as dt

        def when(t: str) -> float:
            v = dt.datetime.fromisoformat(t if len(t) > 10 else t + "T00:00:00+00:00")
            if v.tzinfo is None:
                v = v.replace(tzinfo=dt.UTC)
            return v.timestamp()

        ts = [when(e["time"]) for e in events]
        t0, t1 = min(ts), max(ts)
        rng = max(t1 - t0, 1.0)
        colors = {"incident": _RED, "hit": (40, 150, 40), "firearm recovered": _BLUE}
        # events closer than 40 px share one label ("hit x3"), stacked above the axis
        clusters: list[tuple[int, list[str]]] = []
        for e, t in zip(events, ts, strict=True):
            x = int(tx0 + (t - t0) / rng * (tx1 - tx0))
            cv2.circle(img, (x, ty), 5, colors.get(e["event"], _GREY), -1, cv2.LINE_AA)
            if clusters and x - clusters[-1][0] < 40:
                clusters[-1][1].append(e["event"])
            else:
                clusters.append((x, [e["event"]]))
        for x, names in clusters:
            for j, name in enumerate(dict.fromkeys(names)):
                n = names.count(name)
                label = name if n == 1 else f"{name} x{n}"
                _text(
                    img, label, (min(x, tx1 - 120), ty - 14 - 14 * j), 0.38, colors.get(name, _GREY)
                )
        _text(img, events[0]["time"][:10], (tx0 - 20, ty + 22), 0.4)
        _text(img, events[-1]["time"][:10], (tx1 - 70, ty + 22), 0.4)
    _text(
        img,
        "timeline: incidents (red), firearm recovered (blue), hits (green)",
        (tx0, height - 20),
        0.42,
    )
    return _png(img)


# ------------------------------------------------------------------------------ report


def _report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [*report["jurisdictions"], report["total"]]


def report_csv(report: dict[str, Any]) -> str:
    """One row per jurisdiction and a ``total`` row (columns :data:`REPORT_CSV_KEYS`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REPORT_CSV_KEYS)
    for r in _report_rows(report):
        flat = dict(r)
        for k in ("incident_to_lead", "lead_to_hit"):
            flat[f"{k}_n"] = r[k]["n"]
            flat[f"{k}_median_h"] = r[k]["median_h"]
            flat[f"{k}_share_within_goal"] = r[k]["share_within_goal"]
        w.writerow(["" if flat.get(k) is None else flat[k] for k in REPORT_CSV_KEYS])
    return buf.getvalue()


def report_text(report: dict[str, Any]) -> str:
    p = report["period"]
    lines = [
        f"hub report {p['from'] or 'start'} .. {p['to'] or 'now'} (goal: lead within"
        f" {report['goal_hours']:g} h)",
        f"{'jurisdiction':<16} {'scene':>5} {'tests':>5} {'leads':>5} {'hits':>4}"
        f" {'x-jur':>5} {'gun':>4} {'guns':>4} {'traced':>6}  incident->lead   lead->hit",
    ]

    def dur(d: dict[str, Any]) -> str:
        if not d["n"]:
            return "-"
        return f"{d['median_h']:.1f} h ({d['within_goal']}/{d['n']} <=48h)"

    for r in _report_rows(report):
        lines.append(
            f"{r['jurisdiction']:<16} {r['scene_casings']:>5} {r['test_fires']:>5}"
            f" {r['leads']:>5} {r['hits']:>4} {r['hits_cross_jurisdiction']:>5}"
            f" {r['hits_firearm_to_scene']:>4} {r['firearms_recovered']:>4}"
            f" {r['firearms_traced']:>6}  {dur(r['incident_to_lead']):<16} {dur(r['lead_to_hit'])}"
        )
    pairs = report["total"]["cross_jurisdiction_pairs"]
    if pairs:
        lines.append(
            "hits across jurisdictions: " + ", ".join(f"{k}: {v}" for k, v in sorted(pairs.items()))
        )
    peers = report["total"].get("cross_border_peers") or {}
    if peers:
        lines.append(
            "hits across borders (federation): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(peers.items()))
        )
    lines.append("(x-jur: hits across jurisdictions; gun: hits tying a test fire to a scene)")
    return "\n".join(lines)


def report_png(report: dict[str, Any], width: int = 1000, height: int = 640) -> bytes:
    """Grouped bars per jurisdiction (counts) and median hours to lead / to hit vs 48 h."""
    img = np.full((height, width, 3), 255, np.uint8)
    p = report["period"]
    _text(img, f"Hub report {p['from'] or 'start'} .. {p['to'] or 'now'}", (20, 28), 0.7)
    rows = report["jurisdictions"] or [report["total"]]
    keys = (
        "scene_casings",
        "test_fires",
        "leads",
        "hits",
        "hits_cross_jurisdiction",
        "firearms_recovered",
    )
    palette = [
        (180, 119, 31),
        (14, 127, 255),
        (44, 160, 44),
        (40, 39, 214),
        (189, 103, 148),
        (75, 86, 140),
    ]
    x0, y0, x1, y1 = 70, 60, width - 30, 360
    cv2.line(img, (x0, y1), (x1, y1), _BLACK, 1)
    cv2.line(img, (x0, y0), (x0, y1), _BLACK, 1)
    vmax = max([max(r[k] for k in keys) for r in rows] + [1])
    group_w = (x1 - x0) / len(rows)
    bar_w = max(4, int(group_w * 0.8 / len(keys)))
    for gi, r in enumerate(rows):
        gx = x0 + gi * group_w + group_w * 0.1
        for ki, k in enumerate(keys):
            h = int((y1 - y0 - 20) * r[k] / vmax)
            bx = int(gx + ki * bar_w)
            cv2.rectangle(img, (bx, y1 - h), (bx + bar_w - 2, y1), palette[ki], -1)
            _text(img, str(r[k]), (bx, y1 - h - 4), 0.33)
        _text(img, r["jurisdiction"][:22], (int(gx), y1 + 18), 0.45)
    _text(img, str(vmax), (20, y0 + 20), 0.4)
    _text(img, "0", (50, y1), 0.4)
    for ki, k in enumerate(keys):
        cv2.rectangle(img, (x0 + ki * 150, 390), (x0 + ki * 150 + 12, 402), palette[ki], -1)
        _text(
            img, k.replace("hits_cross_jurisdiction", "hits x-jur"), (x0 + ki * 150 + 16, 401), 0.38
        )
    # median hours vs the goal
    hx0, hy0, hx1, hy1 = 70, 440, width - 30, 600
    _text(
        img,
        "median hours: incident -> lead (left), lead -> hit (right); red line: 48 h goal",
        (hx0, hy0 - 10),
        0.45,
    )
    cv2.line(img, (hx0, hy1), (hx1, hy1), _BLACK, 1)
    meds = [
        v
        for r in rows
        for v in (r["incident_to_lead"]["median_h"], r["lead_to_hit"]["median_h"])
        if v is not None
    ]
    hmax = max([*meds, report["goal_hours"] * 1.25])
    gy = int(hy1 - (hy1 - hy0) * report["goal_hours"] / hmax)
    cv2.line(img, (hx0, gy), (hx1, gy), (0, 0, 220), 1)
    gw = (hx1 - hx0) / len(rows)
    for gi, r in enumerate(rows):
        for j, k in enumerate(("incident_to_lead", "lead_to_hit")):
            v = r[k]["median_h"]
            bx = int(hx0 + gi * gw + gw * 0.2 + j * 40)
            if v is None:
                _text(img, "-", (bx + 10, hy1 - 4), 0.4)
                continue
            h = int((hy1 - hy0) * min(v, hmax) / hmax)
            cv2.rectangle(img, (bx, hy1 - h), (bx + 34, hy1), palette[j + 2], -1)
            _text(img, f"{v:.0f}h", (bx, hy1 - h - 4), 0.35)
        _text(img, r["jurisdiction"][:22], (int(hx0 + gi * gw + gw * 0.2), hy1 + 18), 0.45)
    return _png(img)
