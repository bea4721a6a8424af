"""Explicit length units: an X3P written in micrometres is refused unless the caller says so,
and with ``--length-unit um`` / ``length_unit="um"`` it scores exactly as its metre twin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ballistics.errors import BallisticsError
from ballistics.io import read_scan
from ballistics.synth import fire, make_firearms
from ballistics.x3p import LengthUnitError, read_x3p, write_x3p
from server.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two casings of one gun (a, c), each written in metres and as a micrometre twin."""
    out = tmp_path_factory.mktemp("units")
    gun = make_firearms(1, seed=3)[0]
    paths: dict[str, Path] = {}
    for name, shot in (("a", 11), ("c", 12)):
        scan, _ = fire(gun, shot_seed=shot)
        paths[f"{name}_m"] = out / f"{name}_m.x3p"
        paths[f"{name}_um"] = out / f"{name}_um.x3p"
        write_x3p(paths[f"{name}_m"], scan)
        write_x3p(paths[f"{name}_um"], scan, length_unit="um")
    return paths


def _increment(path: Path) -> float:
    with zipfile.ZipFile(path) as zf:
        xml = zf.read("main.xml").decode()
    start = xml.index("<Increment>") + len("<Increment>")
    return float(xml[start : xml.index("</Increment>", start)])


def test_the_twin_is_written_in_micrometres(twins: dict[str, Path]) -> None:
    assert _increment(twins["a_m"]) == pytest.approx(6.25e-6)
    assert _increment(twins["a_um"]) == pytest.approx(6.25)


def test_default_read_refuses_micrometres_and_names_the_override(twins: dict[str, Path]) -> None:
    with pytest.raises(LengthUnitError) as err:
        read_x3p(twins["a_um"])
    msg = str(err.value)
    assert "--length-unit um" in msg and 'length_unit="um"' in msg
    assert "pixel of 6.25 m;" in msg  # what was seen, in the unit it was read in
    with pytest.raises(LengthUnitError, match="--length-unit um"):
        read_scan(twins["a_um"])


def test_micrometre_read_converts_lengths_and_heights(twins: dict[str, Path]) -> None:
    metre = read_x3p(twins["a_m"])
    micro = read_x3p(twins["a_um"], length_unit="um")
    assert micro.spacing_m == pytest.approx(metre.spacing_m, rel=1e-12)
    np.testing.assert_array_equal(micro.mask, metre.mask)
    np.testing.assert_allclose(micro.data[micro.mask], metre.data[metre.mask], rtol=1e-12)
    step = micro.provenance[0]
    assert step.name == "read_x3p" and step.params["length_unit"] == "um"
    assert step.stats["file_increment_xy"] == pytest.approx([6.25, 6.25])
    assert metre.provenance[0].params["length_unit"] == "m"
    # the format-sniffing reader passes it through
    assert read_scan(twins["a_um"], length_unit="um").spacing_m == pytest.approx(metre.spacing_m)


def test_integer_micrometre_file_scales_its_cz_increment(tmp_path: Path) -> None:
    scan, _ = fire(make_firearms(1, seed=4)[0], shot_seed=1, spacing_m=12.5e-6)
    write_x3p(tmp_path / "m.x3p", scan, dtype="L")
    write_x3p(tmp_path / "um.x3p", scan, dtype="L", length_unit="um")
    a, b = read_x3p(tmp_path / "m.x3p"), read_x3p(tmp_path / "um.x3p", length_unit="um")
    np.testing.assert_allclose(b.data[b.mask], a.data[a.mask], rtol=1e-9)


def test_metre_file_read_as_micrometres_is_refused(twins: dict[str, Path]) -> None:
    with pytest.raises(LengthUnitError, match="without --length-unit um"):
        read_x3p(twins["a_m"], length_unit="um")


@pytest.mark.parametrize("unit", ["mm", "µm", "metres", "UM"])
def test_unknown_unit_is_a_clear_error(twins: dict[str, Path], unit: str) -> None:
    with pytest.raises(BallisticsError, match="unknown length unit"):
        read_x3p(twins["a_m"], length_unit=unit)
    with pytest.raises(BallisticsError, match="unknown length unit"):
        read_scan(twins["a_m"], length_unit=unit)


def test_empty_unit_means_metres(twins: dict[str, Path]) -> None:
    assert read_x3p(twins["a_m"], length_unit="").provenance[0].params["length_unit"] == "m"


def test_cli_inspect_refuses_then_reads_with_the_override(twins: dict[str, Path], capsys) -> None:
    assert main(["inspect", "--json", str(twins["a_um"])]) == 2
    assert "--length-unit um" in capsys.readouterr().err
    assert main(["inspect", "--json", "--length-unit", "um", str(twins["a_um"])]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["spacing_m"] == pytest.approx([6.25e-6, 6.25e-6])
    assert rec["length_unit"] == "um"


def test_cli_describe_with_the_override_equals_the_metre_twin(
    twins: dict[str, Path], capsys
) -> None:
    assert main(["describe", "--json", str(twins["a_m"])]) == 0
    metre = json.loads(capsys.readouterr().out)["descriptors"]
    assert main(["describe", "--json", str(twins["a_um"])]) == 2
    assert "--length-unit um" in capsys.readouterr().err
    assert main(["describe", "--json", "--length-unit", "um", str(twins["a_um"])]) == 0
    micro = json.loads(capsys.readouterr().out)["descriptors"]
    for region, vec in metre.items():
        np.testing.assert_allclose(micro[region], vec, atol=1e-6)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )


def test_cli_compare_micrometre_twins_score_as_the_metre_twins(twins: dict[str, Path]) -> None:
    """The done-when of issue 9 item 3, through ``python -m server.cli compare``."""
    refused = _cli("compare", "--json", str(twins["a_um"]), str(twins["c_um"]))
    assert refused.returncode == 2
    assert "--length-unit um" in refused.stderr and refused.stdout == ""

    metre = _cli("compare", "--json", str(twins["a_m"]), str(twins["c_m"]))
    micro = _cli("compare", "--json", "--length-unit", "um", str(twins["a_um"]), str(twins["c_um"]))
    assert metre.returncode == 0, metre.stderr
    assert micro.returncode == 0, micro.stderr
    m, u = json.loads(metre.stdout), json.loads(micro.stdout)
    for key in ("score", "cmc", "cmc_forward", "cmc_backward", "correlation", "regions"):
        assert u[key] == m[key], key
    assert u["rotation_deg"] == pytest.approx(m["rotation_deg"], abs=1e-9)
    assert m["cmc"] > 0  # a same-gun pair that really matched, so equality means something


def test_ingest_and_search_by_file_pass_the_unit_through(
    twins: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from index.service import Catalog

    data = tmp_path / "store"
    assert main(["ingest", "--data-dir", str(data), "--json", str(twins["a_um"])]) == 2
    rep = json.loads(capsys.readouterr().out)
    assert "--length-unit um" in rep["failed"][0]["error"]
    assert main(["ingest", "--data-dir", str(data), "--json", "--length-unit", "um",
                 str(twins["a_um"]), str(twins["c_m"])]) == 0  # fmt: skip
    rep = json.loads(capsys.readouterr().out)
    assert len(rep["added"]) == 1 and len(rep["failed"]) == 1  # c_m is metres: refused as um
    with Catalog.open(data) as cat:
        stored = cat.prepared(rep["added"][0])
    read = [s for s in stored.surface.provenance if s.name == "read_x3p"]
    assert read[0].params["length_unit"] == "um"  # recorded with the stored surface

    args = ["search", "--data-dir", str(data), "--json", "--file", str(twins["c_um"])]
    assert main(args) == 2
    assert "--length-unit um" in capsys.readouterr().err
    assert main([*args, "--length-unit", "um"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["casing_id"] for c in found] == rep["added"]


def test_grpc_submit_and_search_carry_length_unit(twins: dict[str, Path], tmp_path: Path) -> None:
    from server.app import open_backend
    from server.service import ServiceLimits
    from tests.test_server_support import running_server

    data = tmp_path / "data"
    limits = ServiceLimits(spool_dir=str(tmp_path))
    backend, close = open_backend(data, limits)
    try:
        with running_server(backend, data, limits=limits) as srv:
            _grpc_checks(srv, backend, twins)
    finally:
        close()


def _grpc_checks(srv: Any, backend: Any, twins: dict[str, Path]) -> None:
    import grpc

    with srv.client("north_sub") as c:
        with pytest.raises(grpc.RpcError) as e:
            c.submit(twins["a_um"], search=False)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "length_unit" in (e.value.details() or "")
        with pytest.raises(grpc.RpcError) as e:
            c.submit(twins["a_um"], search=False, length_unit="mm")
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown length unit" in (e.value.details() or "")
        got = c.submit(twins["a_um"], search=False, length_unit="um")
        assert got.casing_id
        assert backend.catalog.get(got.casing_id).spacing_m == pytest.approx(6.25e-6)
        with pytest.raises(grpc.RpcError) as e:
            c.search(file=twins["c_um"], length_unit="nm")
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with srv.client("north_exam") as c:
        res = c.search(file=twins["c_um"], length_unit="um")
        assert [x.casing_id for x in res.combined.candidates] == [got.casing_id]


def test_length_unit_without_a_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    from index.service import Catalog

    Catalog.open(tmp_path / "d").close()
    args = ["search", "--data-dir", str(tmp_path / "d"), "--casing-id", "x"]
    assert main([*args, "--length-unit", "um"]) == 2
    assert "--length-unit applies to --file" in capsys.readouterr().err
    remote = ["--server", "127.0.0.1:1", "--token", "t", "--length-unit", "um"]
    assert main(["search", "--casing-id", "x", *remote]) == 2
    assert "--length-unit applies to --file" in capsys.readouterr().err
    assert main(["compare", "a", "b", *remote]) == 2
    assert "--length-unit applies to files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "--length-unit", "mm", "f.x3p"])
    assert exit_.value.code == 2
    assert "invalid choice: 'mm'" in capsys.readouterr().err
