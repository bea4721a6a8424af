"""`make demo-intel` end to end (synthetic casings, the real pipeline and server): a pistol
recovered and test-fired, the hit tying it to shootings in two jurisdictions, the series and
hub reports written, the audit log intact."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from scripts import demo_intel


@pytest.mark.slow
def test_demo_intel_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo-intel"
    result = demo_intel.run(argparse.Namespace(out=str(out)))
    text = capsys.readouterr().out
    assert not result.failures, result.failures
    view = json.loads((out / "series-riverside.json").read_text())
    assert view["incidents"] == 3 and view["firearms"] == 1
    assert view["jurisdictions"] == ["state-north", "state-south"]
    # the national lab's case is linked but not Riverside's to see: counted, never shown
    assert view["hidden_links"] >= 1 and view["hidden_nodes"] == 1
    assert "Federal Lab X" not in json.dumps(view) and "FED-0042" not in json.dumps(view)
    assert "you may not see" in text
    # the test fire's hits tie the firearm to the scenes
    fid = view["firearm_list"][0]["firearm_id"]
    assert any(f"firearm/{fid}" in (h["node_a"], h["node_b"]) for h in view["hits"])
    assert view["firearm_list"][0]["status"] == "traced"
    hub = json.loads((out / "hub.json").read_text())
    assert hub["total"]["hits_firearm_to_scene"] >= 1
    assert hub["total"]["hits_cross_jurisdiction"] >= 1
    assert hub["total"]["firearms_recovered"] == 1 and hub["total"]["test_fires"] == 2
    for name in (
        "series-riverside.html",
        "series-riverside.png",
        "series-lakeside.csv",
        "hub.png",
        "hub.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert result.audit["ok"] is True
