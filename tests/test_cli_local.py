"""The local command line: inspect, synth, describe, compare (one pair and a CSV of pairs)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import pytest

from ballistics.descriptors import DESCRIPTOR_DIMS, EXTRACTOR_VERSION
from ballistics.synth import fire, make_firearms
from ballistics.x3p import write_x3p
from server.cli import main


@pytest.fixture(scope="module")
def casings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three raw synthetic scans: g0a and g0b from one firearm, g1 from another."""
    out = tmp_path_factory.mktemp("casings")
    fa = make_firearms(2, seed=1)
    paths = {}
    for name, gun, shot in (("g0a", fa[0], 1), ("g0b", fa[0], 2), ("g1", fa[1], 3)):
        scan, _ = fire(gun, shot_seed=shot)
        paths[name] = out / f"{name}.x3p"
        write_x3p(paths[name], scan)
    (out / "junk.x3p").write_bytes(b"this is not a scan\n")
    paths["junk"] = out / "junk.x3p"
    return paths


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


_INSPECT_KEYS = {
    "file",
    "kind",
    "spacing_m",
    "shape",
    "valid_fraction",
    "primer_center",
    "primer_radius",
    "firing_pin_center",
    "firing_pin_shape",
    "precropped",
}


def test_inspect_json_synthetic_in_order(casings: dict[str, Path], capsys) -> None:
    files = [str(casings["g1"]), str(casings["g0a"])]
    assert main(["inspect", "--json", *files]) == 0
    out = capsys.readouterr()
    recs = _json_lines(out.out)
    assert [r["file"] for r in recs] == files
    for r in recs:
        assert _INSPECT_KEYS <= r.keys()
        assert r["kind"] == "topography"
        assert r["spacing_m"] == pytest.approx([6.25e-6, 6.25e-6])
        assert len(r["primer_center"]) == 2 and len(r["firing_pin_center"]) == 2
        assert r["firing_pin_shape"] in ("round", "elongated")
        assert r["precropped"] is False
        assert 0 < r["valid_fraction"] <= 1
        assert r["primer_radius"] > 100


def test_inspect_json_fadul(fadul_paths: list[Path], capsys) -> None:
    files = [str(p) for p in fadul_paths[:2]]
    assert main(["inspect", "--json", *files]) == 0
    recs = _json_lines(capsys.readouterr().out)
    assert [r["file"] for r in recs] == files
    for r in recs:
        assert _INSPECT_KEYS <= r.keys()
        assert r["precropped"] is True
        assert r["spacing_m"][0] == pytest.approx(6.25e-6, rel=0.01)


def test_inspect_bad_files_among_good(casings: dict[str, Path], tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "nothere.x3p")
    files = [str(casings["g0a"]), str(casings["junk"]), missing, str(casings["g1"])]
    assert main(["inspect", "--json", *files]) == 2
    out = capsys.readouterr()
    assert [r["file"] for r in _json_lines(out.out)] == [files[0], files[3]]
    err = out.err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"ballistics: {files[1]}: ")
    assert err[1].startswith(f"ballistics: {missing}: ")
    assert "Traceback" not in out.err


def test_inspect_human(casings: dict[str, Path], capsys) -> None:
    assert main(["inspect", str(casings["g0a"])]) == 0
    text = capsys.readouterr().out
    assert str(casings["g0a"]) in text
    assert "primer: centre" in text and "firing pin:" in text and "pre-cropped: no" in text


def test_describe_json(casings: dict[str, Path], capsys) -> None:
    assert main(["describe", "--json", str(casings["g0a"])]) == 0
    (rec,) = _json_lines(capsys.readouterr().out)
    assert rec["file"] == str(casings["g0a"])
    assert rec["extractor_version"] == EXTRACTOR_VERSION
    assert "breech_face" in rec["descriptors"]
    for region, vec in rec["descriptors"].items():
        assert rec["dims"][region] == DESCRIPTOR_DIMS[region] == len(vec)
        assert math.sqrt(sum(x * x for x in vec)) == pytest.approx(1.0, abs=1e-4)


def test_describe_bad_file(casings: dict[str, Path], capsys) -> None:
    assert main(["describe", str(casings["junk"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(casings["junk"]) in err[0]


def test_compare_same_gun_beats_different_gun_and_png(
    casings: dict[str, Path], tmp_path: Path, capsys
) -> None:
    png = tmp_path / "cmp.png"
    a, b, c = (str(casings[k]) for k in ("g0a", "g0b", "g1"))
    assert main(["compare", a, b, "--json", "--png", str(png)]) == 0
    (same,) = _json_lines(capsys.readouterr().out)
    assert main(["compare", a, c, "--json"]) == 0
    (diff,) = _json_lines(capsys.readouterr().out)
    for rec in (same, diff):
        for key in ("score", "cmc", "rotation_deg", "dx_m", "dy_m", "regions", "correlation"):
            assert key in rec
        assert {"cmc_forward", "cmc_backward", "non_match_frequency", "interpretation"} <= set(rec)
        assert 0 < rec["non_match_frequency"] <= 1
    assert same["a"] == a and same["b"] == b
    assert same["score"] > diff["score"]
    assert same["cmc"] > diff["cmc"]
    assert same["non_match_frequency"] < diff["non_match_frequency"]
    img = cv2.imread(str(png))
    assert img is not None
    h, w = img.shape[:2]
    assert 2.2 < w / h < 3.3


def test_compare_human(casings: dict[str, Path], capsys) -> None:
    assert main(["compare", str(casings["g0a"]), str(casings["g0b"])]) == 0
    text = capsys.readouterr().out
    assert "score" in text and "CMC" in text and "non-matches" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "A_ONLY"],
        ["compare"],
        ["compare", "A", "B", "--pairs", "p.csv"],
        ["compare", "JUNK", "G0A"],
        ["compare", "G0A", "MISSING"],
    ],
)
def test_compare_bad_input(casings: dict[str, Path], tmp_path: Path, argv, capsys) -> None:
    subst = {
        "A_ONLY": str(casings["g0a"]),
        "JUNK": str(casings["junk"]),
        "G0A": str(casings["g0a"]),
        "MISSING": str(tmp_path / "missing.x3p"),
    }
    assert main([subst.get(x, x) for x in argv]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.strip().splitlines()) == 1 and out.err.startswith("ballistics: ")


def _write_pairs(path: Path, rows: list[tuple[str, str]], header: str = "a,b") -> Path:
    with path.open("w", newline="") as fh:
        fh.write(header + "\n")
        csv.writer(fh).writerows(rows)
    return path


def test_compare_pairs_in_order_over_processes(casings: dict[str, Path], capsys) -> None:
    folder = casings["g0a"].parent
    rows = [("g0a.x3p", "g1.x3p"), ("g0a.x3p", "g0b.x3p"), ("g0b.x3p", "g1.x3p")]
    pairs = _write_pairs(folder / "pairs.csv", rows)  # relative to the CSV's folder
    assert main(["compare", "--pairs", str(pairs), "--json", "--workers", "2"]) == 0
    out = capsys.readouterr()
    recs = _json_lines(out.out)
    assert [(r["a"], r["b"]) for r in recs] == rows
    assert all("score" in r and "cmc" in r and "error" not in r for r in recs)
    assert recs[1]["score"] > recs[0]["score"] and recs[1]["score"] > recs[2]["score"]
    assert "comparing pairs" in out.err and "3/3" in out.err


def test_compare_pairs_bad_file_row(casings: dict[str, Path], tmp_path: Path, capsys) -> None:
    a, junk = str(casings["g0a"]), str(casings["junk"])
    pairs = _write_pairs(tmp_path / "p.csv", [(a, junk), (junk, a)])
    assert main(["compare", "--pairs", str(pairs), "--json", "--workers", "1"]) == 2
    out = capsys.readouterr()
    recs = _json_lines(out.out)
    assert [(r["a"], r["b"]) for r in recs] == [(a, junk), (junk, a)]
    assert all("error" in r and "junk.x3p" in r["error"] for r in recs)
    assert sum(line.startswith("ballistics: ") for line in out.err.splitlines()) == 1


def test_compare_pairs_missing_column(tmp_path: Path, capsys) -> None:
    pairs = _write_pairs(tmp_path / "p.csv", [("x.x3p", "y.x3p")], header="first,b")
    assert main(["compare", "--pairs", str(pairs), "--json"]) == 2
    err = capsys.readouterr().err
    assert "a,b" in err and len(err.strip().splitlines()) == 1


def test_compare_pairs_missing_csv(tmp_path: Path, capsys) -> None:
    assert main(["compare", "--pairs", str(tmp_path / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_synth_writes_manifest(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "corpus"
    assert main(["synth", str(out_dir), "--guns", "1", "--shots", "2", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    manifest = out_dir / "manifest.csv"
    assert manifest.is_file() and str(manifest) in text and len(text.splitlines()) == 1
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all((out_dir / r["file"]).is_file() for r in rows)


@pytest.mark.parametrize("guns,shots", [(0, 1), (1, 0), (-2, 3)])
def test_synth_validates_counts(tmp_path: Path, guns: int, shots: int, capsys) -> None:
    argv = ["synth", str(tmp_path / "c"), "--guns", str(guns), "--shots", str(shots)]
    assert main(argv) == 2
    assert "--guns and --shots must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _subcommands() -> dict[str, object]:
    import argparse

    from server.cli import build_parser

    ap = build_parser()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_help_gives_defaults_and_an_example(name: str, capsys) -> None:
    parser = _subcommands()[name]
    text = parser.format_help()  # type: ignore[attr-defined]
    assert "example:" in text and f"ballistics {name}" in text.split("example:")[1]
    for action in parser._actions:  # type: ignore[attr-defined]
        if action.option_strings and action.default not in (None, False, "", "==SUPPRESS=="):
            assert f"(default: {action.default})" in " ".join(text.split()), action.dest


# --- one JSON vocabulary, local and remote; silent no-ops said out loud ----------------------


@pytest.fixture
def fake_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded store of six fake casings (two per virtual gun), ingested by the CLI."""
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", "index.testing:FakeEngine")
    src = tmp_path / "src"
    src.mkdir()
    for g in range(3):
        for s in range(2):
            (src / f"g{g}s{s}.x3p").write_bytes(f"FAKE:{g}:{s}".encode())
    assert main(["ingest", str(src), "--data-dir", str(tmp_path / "d"), "--json"]) == 0
    return tmp_path


def test_local_search_json_is_one_object_per_candidate(fake_store: Path, capsys) -> None:
    from server.output import CANDIDATE_KEYS

    capsys.readouterr()
    d, q = str(fake_store / "d"), str(fake_store / "src" / "g1s0.x3p")
    assert main(["search", "--file", q, "--data-dir", d, "--json", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and tuple(r) == CANDIDATE_KEYS for r in rows)
    assert [r["rank"] for r in rows if not r["identical_file"]] == [1, 2, 3]


def test_remote_json_uses_the_local_keys_and_keeps_zeros(
    fake_store: Path, casings: dict[str, Path], capsys
) -> None:
    from index.service import Catalog
    from index.testing import FakeEngine
    from server.app import CatalogBackend
    from server.output import CANDIDATE_KEYS, COMPARE_KEYS
    from server.service import ServiceLimits
    from tests.test_server_support import running_server

    png = b"\x89PNG\r\n\x1a\n"
    cat = Catalog.open(fake_store / "remote", engine=FakeEngine())
    limits = ServiceLimits(spool_dir=str(fake_store))
    try:
        with running_server(CatalogBackend(cat), fake_store / "remote", limits=limits) as srv:
            with srv.client("north_exam") as c:
                ids = [c.submit(png + b"casing %d" % i, search=False).casing_id for i in range(3)]
            base = ["--server", srv.address, f"--token={srv.tokens['north_exam']}"]
            capsys.readouterr()
            assert main(["search", "--casing-id", ids[0], "--json", *base]) == 0
            rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
            assert len(rows) == 2 and all(tuple(r) == CANDIDATE_KEYS for r in rows)
            assert {r["casing_id"] for r in rows} == set(ids[1:])
            assert main(["compare", ids[0], ids[1], "--json", *base]) == 0
            remote = json.loads(capsys.readouterr().out)
    finally:
        cat.close()
    # false and zero fields are printed (the fake comparison has no pose: rotation 0)
    assert remote["rotation_deg"] == 0.0 and remote["dx_m"] == 0.0 and "cmc" in remote
    assert (remote["a"], remote["b"]) == (ids[0], ids[1])
    assert set(COMPARE_KEYS) <= set(remote)
    assert main(["compare", str(casings["g0a"]), str(casings["g0b"]), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert set(local) == set(remote)


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("127.0.0.1", "127.0.0.1:50051"),
        ("lab.example", "lab.example:50051"),
        ("lab.example:7000", "lab.example:7000"),
        ("[::1]", "[::1]:50051"),
        ("[::1]:7000", "[::1]:7000"),
        ("::1", "[::1]:50051"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_server_without_a_port_means_50051(
    given: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grpc

    from server.client import Client

    seen: list[str] = []
    real = grpc.insecure_channel

    def record(address: str, *a: object, **kw: object) -> grpc.Channel:
        seen.append(address)
        return real(address, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(grpc, "insecure_channel", record)
    Client(given, "t").close()
    assert seen == [target]


def test_server_with_a_bad_port_is_refused(capsys) -> None:
    assert main(["casings", "--server", "host:http", "--token=t"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_search_on_an_empty_store_says_so(tmp_path: Path, capsys) -> None:
    from index.store import Store

    Store(tmp_path / "d").close()  # a store with no casings
    assert main(["search", "--casing-id", "x", "--data-dir", str(tmp_path / "d")]) == 2
    assert "holds no casings" in capsys.readouterr().err


def test_audit_verify_without_a_log_is_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no audit log" in err and "nothing to verify" in err
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "missing"), "--json"]) == 2
    out = capsys.readouterr()
    assert json.loads(out.out)["ok"] is False and "no such folder" in out.err


def test_local_search_rescue_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """--rescue HEAD compares the best set-aside candidates too, and says so; a negative HEAD
    and a remote search are refused with a reason."""
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", "index.testing:FakeScreenEngine")
    src = tmp_path / "src"
    src.mkdir()
    for g in range(4):
        for s in range(2):
            (src / f"g{g}s{s}.x3p").write_bytes(f"FAKE:{g}:{s}".encode())
    d = str(tmp_path / "d")
    assert main(["ingest", str(src), "--data-dir", d, "--json"]) == 0
    q = str(src / "g1s0.x3p")
    capsys.readouterr()
    assert main(["search", "--file", q, "--data-dir", d, "--top", "1", "--compare", "1"]) == 0
    assert "compared too" not in capsys.readouterr().out
    argv = ["search", "--file", q, "--data-dir", d, "--top", "1", "--compare", "1"]
    assert main([*argv, "--rescue", "8"]) == 0
    assert "2 candidate(s) set aside by the screen were compared too" in capsys.readouterr().out
    assert main([*argv, "--rescue", "-1"]) == 2
    assert "--rescue must be >= 0" in capsys.readouterr().err
    assert main(["search", "--casing-id", "x", "--server", "127.0.0.1:1", "--rescue", "9"]) == 2
    assert "--rescue applies to a local search" in capsys.readouterr().err
