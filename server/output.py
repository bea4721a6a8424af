"""One JSON vocabulary for the command line, local (``--data-dir``, files) and remote
(``--server``) alike.

``search --json`` prints one object per candidate per line (the combined ranking, best first)
with the keys :data:`CANDIDATE_KEYS`; ``compare --json`` prints one object with the keys
:data:`COMPARE_KEYS` (plus ``cells`` for one pair, and ``png_path`` with ``--png``). A value
that is not known is ``null`` (e.g. ``score`` of a candidate that was not fully compared),
never a made-up zero; ``false`` and ``0`` are printed, never dropped.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

#: Keys of one search candidate. ``identical_file``: the candidate's stored file is
#: byte-identical (same SHA-256) to the query's; such a candidate is listed after the ranking
#: with ``rank`` null (it is the query's own scan stored again, not a second casing to compare).
CANDIDATE_KEYS = (
    "rank",
    "casing_id",
    "region",
    "score",
    "cmc",
    "non_match_frequency",
    "coarse_score",
    "screen_score",
    "rescored",
    "identical_file",
    "incident_id",
    "agency",
    "quality",
    "low_confidence",
    "low_confidence_reasons",
    "flags",
    "server",  # a federated search: the peer holding the candidate; null for this server
    "agreement_id",  # a peer's candidate: the agreement it was released under; else null
)

#: Keys of a comparison (local: two files; remote: two stored casings). ``light``: how two 2-D
#: images' lights were used (``ballistics.lighting.LitComparison.light``); null for 3-D.
COMPARE_KEYS = (
    "a",
    "b",
    "score",
    "cmc",
    "cmc_forward",
    "cmc_backward",
    "cells_considered",
    "correlation",
    "rotation_deg",
    "dx_m",
    "dy_m",
    "regions",
    "striation_correlation",
    "non_match_frequency",
    "interpretation",
    "quality",
    "low_confidence",
    "low_confidence_reasons",
    "flags",
    "light",
)


def message_dict(msg: Message) -> dict[str, Any]:
    """A protobuf message as a dict with proto field names, keeping false / zero / empty
    fields (fields with presence, e.g. ``optional`` ones, appear only when set)."""
    try:
        return MessageToDict(
            msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26 names the option differently
        return MessageToDict(
            msg,
            preserving_proto_field_name=True,
            including_default_value_fields=True,  # type: ignore[call-arg, unused-ignore]
        )


def _int_or_none(v: Any) -> int | None:
    return None if v is None else round(float(v))


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


def _frequency(v: Any) -> float | None:
    """A non-match frequency from the wire: a calibrated one is never below 1/(n+1) > 0, so 0
    (a plain proto3 field's default) means "unknown"; an absent optional field too."""
    return float(v) if v else None


def _quality(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """A quality record (``ballistics.quality``) from its proto dict; None when absent."""
    if not d:
        return None
    try:
        return dict(json.loads(d["detail_json"]))
    except (KeyError, ValueError, TypeError):
        return {k: v for k, v in d.items() if k != "detail_json"}


def _candidate(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: d.get(k) for k in CANDIDATE_KEYS}
    out["low_confidence"] = bool(out["low_confidence"])
    out["low_confidence_reasons"] = list(out["low_confidence_reasons"] or [])
    out["flags"] = list(out["flags"] or [])
    out["rescored"] = bool(out["rescored"])
    out["identical_file"] = bool(out["identical_file"])
    if not out["rescored"]:  # not fully compared: no score, whatever a field's default says
        out["score"] = out["cmc"] = out["non_match_frequency"] = None
    out["cmc"] = _int_or_none(out["cmc"])
    for k in ("score", "non_match_frequency", "coarse_score", "screen_score"):
        out[k] = _float_or_none(out[k])
    if out["identical_file"]:
        out["rank"] = None
    out["server"] = out["server"] or None  # the proto's "" (this server) as null
    out["agreement_id"] = out["agreement_id"] or None
    return out


def candidate_from_local(c: Any) -> dict[str, Any]:
    """An ``index.search.Candidate`` in the common vocabulary."""
    d = dict(c.as_dict())
    d["incident_id"] = d.pop("incident", None)
    return _candidate(d)


def candidate_from_proto(c: Message) -> dict[str, Any]:
    """A ``ballistics.v1.Candidate`` in the common vocabulary."""
    d = message_dict(c)
    d["incident_id"] = d.get("incident_id") or None
    d["non_match_frequency"] = _frequency(d.get("non_match_frequency"))
    if not d.get("screen_score"):  # the proto says "0 when not screened"
        d["screen_score"] = None
    d["quality"] = _quality(d.get("quality"))
    return _candidate(d)


def compare_from_proto(resp: Message) -> dict[str, Any]:
    """A ``ballistics.v1.CompareResponse`` in the common vocabulary (without the picture)."""
    from ballistics.calibration import describe_frequency

    d = message_dict(resp)
    detail: dict[str, Any] = {}
    if d.get("detail_json"):
        try:
            detail = dict(json.loads(d["detail_json"]))
        except (ValueError, TypeError):
            detail = {}
    out: dict[str, Any] = {k: detail.get(k) for k in COMPARE_KEYS}
    out.update(a=d.get("casing_a"), b=d.get("casing_b"), regions=d.get("region_scores") or {})
    for k in ("score", "rotation_deg", "dx_m", "dy_m"):
        if k in d:
            out[k] = _float_or_none(d[k])
    out["cmc"] = _int_or_none(d.get("cmc"))
    freq = out["non_match_frequency"] = _frequency(d.get("non_match_frequency"))
    out["interpretation"] = (
        describe_frequency(freq) if freq else "no non-match frequency for this comparison"
    )
    out["quality"] = {"a": _quality(d.get("quality_a")), "b": _quality(d.get("quality_b"))}
    out["low_confidence"] = bool(d.get("low_confidence"))
    out["low_confidence_reasons"] = list(d.get("low_confidence_reasons") or [])
    out["flags"] = list(d.get("flags") or detail.get("flags") or [])
    if d.get("light_json"):
        try:
            out["light"] = dict(json.loads(d["light_json"]))
        except (ValueError, TypeError):
            pass
    out["cells"] = d.get("cells", [])
    return out


def print_lines(records: list[dict[str, Any]]) -> None:
    """One JSON object per line."""
    for r in records:
        print(json.dumps(r, sort_keys=False), flush=False)


#: Keys of one lead (``ballistics leads --json``: ``{"jobs": {...}, "leads": [...]}``, the same
#: locally and remotely). ``casing_a`` is the older casing; ``state`` is new, reviewed,
#: confirmed or excluded (the pair's latest decision); ``decision_id`` / ``decided_at`` are
#: null when the pair has no decision (or, remotely, when the deciding agency is not visible).
LEAD_KEYS = (
    "lead_id",
    "casing_a",
    "casing_b",
    "agency_a",
    "agency_b",
    "incident_a",
    "incident_b",
    "score",
    "cmc",
    "non_match_frequency",
    "screen_score",
    "quality_a",
    "quality_b",
    "low_confidence",
    "low_confidence_reasons",
    "flags",
    "created_at",
    "state",
    "decision_id",
    "decided_at",
)

#: Keys of the correlation queue's progress (``jobs``): jobs by state.
JOB_KEYS = ("pending", "running", "done", "failed")


def _lead(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: d.get(k) for k in LEAD_KEYS}
    for k in ("lead_id", "decision_id", "decided_at", "incident_a", "incident_b"):
        out[k] = None if out[k] in (None, "") else str(out[k])
    out["cmc"] = _int_or_none(out["cmc"])
    for k in ("score", "non_match_frequency", "screen_score"):
        out[k] = _float_or_none(out[k])
    out["low_confidence"] = bool(out["low_confidence"])
    out["low_confidence_reasons"] = list(out["low_confidence_reasons"] or [])
    out["flags"] = list(out["flags"] or [])
    return out


def lead_from_local(ld: Any) -> dict[str, Any]:
    """An ``index.store.Lead`` in the common vocabulary."""
    return _lead(dict(ld.as_dict()))


def lead_from_proto(ld: Message) -> dict[str, Any]:
    """A ``ballistics.v1.Lead`` in the common vocabulary."""
    d = message_dict(ld)
    d["quality_a"] = _quality(d.get("quality_a"))
    d["quality_b"] = _quality(d.get("quality_b"))
    return _lead(d)


def jobs_dict(counts: Any) -> dict[str, int]:
    """Job counts (a dict, or a ``CorrelationProgress``) as ``{state: n}``."""
    get = counts.get if isinstance(counts, dict) else (lambda k, d=0: getattr(counts, k, d))
    return {k: int(get(k, 0) or 0) for k in JOB_KEYS}
