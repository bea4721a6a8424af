"""`make demo` end to end, small: ``scripts/demo.py --quick`` (synthetic casings only) against
the real server (``ballistics serve`` in a subprocess) on a loopback port.

Checks what the demo promises a newcomer: a non-empty ranked list with the query's own firearm
on top, the two incidents linked by the examiner's hit across jurisdictions, a PNG comparison
picture, the sharing policy holding both ways, and an intact audit log. About a minute on two
busy cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ballistics_demo", DEMO)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = _load_demo()
    out = tmp_path / "demo"
    opts = argparse.Namespace(out=str(out), synthetic=True, quick=True, start_timeout=90.0)
    result = demo.run(opts)
    demo.summary(result)
    text = capsys.readouterr().out
    # the review page was opened as Lakeside's examiner and showed the search; the summary
    # says how to open it and with which (demo-only) token
    assert "candidate rows" in text, text
    assert f"search?casing_id={result.query_casing}" in text, text
    assert result.examiner_token and result.examiner_token in text

    # the ranked list: printed, non-empty, the query's own firearm first, from Riverside PD
    assert result.candidates, text
    rows = re.findall(r"^\s+1\s+([0-9a-f]{16})\s", text, flags=re.M)
    assert rows and rows[0] == result.candidates[0]["casing_id"], text
    assert result.top_same_source is True, text
    assert result.candidates[0]["agency"] == demo.RIVERSIDE
    assert not result.failures, result.failures

    # the link graph: the query's incident and the candidate's, in two jurisdictions, one hit
    nodes = result.links["nodes"]
    assert {n["incident_id"] for n in nodes} == {
        result.query_incident,
        result.candidates[0]["incident_id"],
    }
    assert {n["jurisdiction"] for n in nodes} == {"state-north", "state-south"}
    assert len(result.links["edges"]) == 1
    assert "2 incident(s), 1 confirmed hit(s)" in text

    # the comparison picture
    assert result.png is not None and result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # sharing holds both ways
    assert result.federal_sees in ([], [demo.FEDERAL])
    assert demo.FEDERAL not in result.riverside_sees
    assert "NOT_FOUND: no casing with id" in text  # as for an unknown id: no existence oracle

    # audit verify ok, server stopped cleanly
    assert result.audit["ok"] is True
    assert "server exited with status 0" in text
    assert (out / "auth.json").is_file() and (out / "policy.json").is_file()
    assert "token_sha256" in (out / "auth.json").read_text()


def test_demo_refuses_to_wipe_a_foreign_folder(tmp_path: Path) -> None:
    demo = _load_demo()
    (tmp_path / "precious.txt").write_text("keep me")
    assert demo.main(["--quick", "--out", str(tmp_path)]) == 1
    assert (tmp_path / "precious.txt").read_text() == "keep me"
