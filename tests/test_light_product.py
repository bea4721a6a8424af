"""2-D images that know their light, through the product: the CLI (inspect, describe,
compare, ingest, search), the store and the service.

Seeded synthetic casings rendered with ``lighting.render_side_light`` / ``render_ring``. The
pair of a side-lit same-gun casing at a large relative rotation (164 degrees) with the lights
opposite on the casing was scored a non-match (0.24, no flag) by ``ballistics compare`` before
the light-aware comparison was wired in (test_cli_compare_side_lit_pair_scores_a_match).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ballistics import BallisticsError, lighting
from ballistics.compare import compare
from ballistics.io import read_scan, sniff_format
from ballistics.pipeline import PreparedCasing, prepare
from ballistics.scan import Scan
from ballistics.synth import Truth, fire, make_firearms, png16_with_phys
from ballistics.x3p import write_x3p
from index.engine import BallisticsEngine, Processed
from index.service import Catalog
from index.store import Store
from server.cli import main

DECISIVE = lighting.DECISIVE_SCORE
# Matches are asserted a margin above DECISIVE. With the 40-400 um image conditioning (chosen
# for ring lights; on the side-light tune set it also raised the light-aware AUC, 0.999/0.928
# -> 0.996/0.989) these pairs score ~0.8 rather than ~1.05.
LIGHT_A = 40.0


def _gun(pattern: str, seed: int = 5) -> Any:
    return next(g for g in make_firearms(12, seed=seed) if g.breech_pattern == pattern)


def _png(path: Path, img: Scan) -> Path:
    """A 0..1 image as a 16-bit PNG with its pixel size (as a lab's camera would write it)."""
    q = np.round(np.clip(np.where(img.mask, img.data, 0.0), 0.0, 1.0) * 65535).astype(np.uint16)
    path.write_bytes(png16_with_phys(q, img.spacing_m))
    return path


def _tif(path: Path, img: Scan) -> Path:
    """A float TIFF with NaN where the scan is invalid and its resolution in pixels per cm
    (a 16-bit PNG has no "invalid": its black dropouts enter the comparison as shading)."""
    import tifffile

    ppcm = 0.01 / img.spacing_m[0]
    data = np.where(img.mask, img.data, np.nan).astype(np.float32)
    tifffile.imwrite(path, data, resolution=(ppcm, ppcm), resolutionunit="CENTIMETER")
    return path


def _opposite(ta: Truth, tb: Truth, light_a: float, relative_deg: float = 180.0) -> float:
    """Image-frame azimuth of b's light putting it ``relative_deg`` from a's on the casing."""
    return (light_a + relative_deg + (tb.rotation_deg - ta.rotation_deg)) % 360.0


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Side-lit PNGs: a, b (one crosshatch gun, lights opposite on the casing), c and d (two
    other guns); pa, pb (a parallel-marks gun lit across and along its marks); a 3-D X3P."""
    out = tmp_path_factory.mktemp("lit")
    g = _gun("crosshatch")
    (sa, ta), (sb, tb) = fire(g, shot_seed=1), fire(g, shot_seed=2)
    lb = _opposite(ta, tb, LIGHT_A)
    paths: dict[str, Any] = {
        "a": _png(out / "a.png", lighting.render_side_light(sa, LIGHT_A)),
        "b": _png(out / "b.png", lighting.render_side_light(sb, lb)),
        "light_b": lb,
        "rotation": (tb.rotation_deg - ta.rotation_deg) % 360.0,
    }
    for name, pattern, seed, az in (("c", "granular", 7, 200.0), ("d", "parallel", 9, 310.0)):
        sc, _ = fire(_gun(pattern, seed), shot_seed=4)
        paths[name] = _png(out / f"{name}.png", lighting.render_side_light(sc, az))
    gp = _gun("parallel")
    (spa, tpa), (spb, tpb) = fire(gp, shot_seed=1), fire(gp, shot_seed=2)
    d = lighting.texture_directions(prepare(spa))
    along = (float(np.argmax(d)) + 0.5) * 5.0  # lit along the marks' wavevector
    paths["pa"] = _tif(out / "pa.tif", lighting.render_side_light(spa, along))
    paths["pb"] = _tif(
        out / "pb.tif", lighting.render_side_light(spb, _opposite(tpa, tpb, along, 90.0))
    )
    write_x3p(out / "t.x3p", sa)
    paths["x3p"] = out / "t.x3p"
    return paths


def _json(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def _light_flags(flags: list[str]) -> set[str]:
    return set(flags) & set(lighting.LIGHT_FLAGS)


# --- compare -----------------------------------------------------------------------------


def test_cli_compare_side_lit_pair_scores_a_match(files, capsys) -> None:
    a, b = str(files["a"]), str(files["b"])
    assert 120.0 < files["rotation"] < 240.0  # a large relative rotation
    # The plain comparison (what `ballistics compare` did before): a silent non-match.
    plain = compare(prepare(read_scan(a)), prepare(read_scan(b)))
    assert plain.score < DECISIVE and not plain.flags
    assert main(["compare", a, b, "--json"]) == 0
    (rec,) = _json(capsys)
    assert rec["score"] >= DECISIVE + 0.1
    assert rec["light"]["method"] == "pseudo_height"
    assert rec["light"]["a"]["source"] == "detected"
    assert rec["light"]["relative_light_deg"] == pytest.approx(180.0, abs=15.0)
    assert not _light_flags(rec["flags"])
    assert rec["non_match_frequency"] is not None and rec["non_match_frequency"] < 0.01


def test_light_azimuth_metadata_changes_the_result(files, capsys) -> None:
    a, b = str(files["a"]), str(files["b"])
    lb = f"{files['light_b']:.3f}"
    assert (
        main(["compare", a, b, "--json", "--light-azimuth-deg", "40", "--light-azimuth-deg", lb])
        == 0
    )
    (given,) = _json(capsys)
    assert given["score"] >= DECISIVE + 0.1
    assert given["light"]["a"] == {
        "kind": "side",
        "azimuth_deg": 40.0,
        "source": "metadata",
        "azimuth_source": "metadata",
        "strength": None,
    }
    # A's light given from the wrong side: its recovered height is inverted.
    assert (
        main(["compare", a, b, "--json", "--light-azimuth-deg", "220", "--light-azimuth-deg", lb])
        == 0
    )
    (wrong,) = _json(capsys)
    assert wrong["score"] < given["score"] - 0.5
    assert wrong["score"] < DECISIVE
    # Said to be ring-lit (once: both): the plain comparison, a non-match again.
    assert main(["compare", a, b, "--json", "--light", "ring"]) == 0
    (ring,) = _json(capsys)
    assert ring["light"]["method"] == "plain"
    assert ring["light"]["b"]["kind"] == "ring" and ring["light"]["b"]["source"] == "metadata"
    assert ring["score"] < DECISIVE


def test_flagged_side_lit_pair_never_reads_as_a_plain_non_match(files, capsys) -> None:
    """Parallel marks, one image lit across them and the other (on the casing) along them."""
    assert main(["compare", str(files["pa"]), str(files["pb"]), "--json"]) == 0
    (rec,) = _json(capsys)
    assert rec["score"] < DECISIVE
    assert lighting.FLAG_INCOMPATIBLE in rec["flags"]
    assert rec["low_confidence"] is True
    assert f"comparison: {lighting.FLAG_INCOMPATIBLE}" in rec["low_confidence_reasons"]
    assert rec["light"]["comparable_fraction"] < lighting.MIN_COMPARABLE_FRACTION


# --- inspect, describe, options -----------------------------------------------------------


def test_inspect_shows_the_light_detected_or_given(files, capsys) -> None:
    a = str(files["a"])
    assert main(["inspect", a, "--json"]) == 0
    (det,) = _json(capsys)
    assert det["light"]["kind"] == "side" and det["light"]["source"] == "detected"
    assert abs((det["light"]["azimuth_deg"] - LIGHT_A + 180.0) % 360.0 - 180.0) < 10.0
    assert det["light"]["strength"] > lighting.DIRECTIONAL_THRESHOLD
    assert main(["inspect", a, "--json", "--light-azimuth-deg", "-30"]) == 0
    (given,) = _json(capsys)
    assert given["light"]["azimuth_deg"] == 330.0 and given["light"]["source"] == "metadata"
    assert main(["inspect", a, "--json", "--light", "side"]) == 0
    (side,) = _json(capsys)
    assert (side["light"]["source"], side["light"]["azimuth_source"]) == ("metadata", "detected")
    assert side["light"]["azimuth_deg"] == pytest.approx(det["light"]["azimuth_deg"], abs=1e-3)
    assert main(["inspect", a, "--json", "--light", "coaxial"]) == 0
    (coax,) = _json(capsys)
    assert coax["light"] == {
        "kind": "coaxial",
        "azimuth_deg": None,
        "source": "metadata",
        "azimuth_source": None,
        "strength": None,
    }
    assert main(["inspect", a]) == 0
    assert "light: side light from" in capsys.readouterr().out


def test_ring_lit_image_is_detected_as_ring(files, tmp_path, capsys) -> None:
    scan, _ = fire(_gun("crosshatch"), shot_seed=1)
    p = _png(tmp_path / "ring.png", lighting.render_ring(scan, 35.0, azimuths=8, noise=0.01))
    assert main(["inspect", str(p), "--json"]) == 0
    (rec,) = _json(capsys)
    assert rec["light"]["kind"] == "ring" and rec["light"]["source"] == "detected"


def test_describe_reports_the_light_and_the_option_changes_it(files, capsys) -> None:
    a = str(files["a"])
    assert main(["describe", a, "--json"]) == 0
    (det,) = _json(capsys)
    assert main(["describe", a, "--json", "--light", "ring"]) == 0
    (ring,) = _json(capsys)
    assert det["light"]["kind"] == "side" and ring["light"]["kind"] == "ring"
    assert ring["descriptors"] == det["descriptors"]  # descriptors see the flattened image


def test_light_given_for_a_3d_scan_is_ignored_with_a_warning(files, capsys) -> None:
    x3p = str(files["x3p"])
    assert main(["inspect", x3p, "--json"]) == 0
    (plain,) = _json(capsys)
    assert main(["inspect", x3p, "--json", "--light", "side", "--light-azimuth-deg", "10"]) == 0
    out = capsys.readouterr()
    (rec,) = [json.loads(line) for line in out.out.splitlines()]
    assert "applies to 2-D images" in out.err and "ignored" in out.err
    assert rec["light"] is None and plain["light"] is None
    assert rec["quality"] == plain["quality"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "{a}", "--light", "ring", "--light-azimuth-deg", "10"], "no azimuth"),
        (["describe", "{a}", "--light", "coaxial", "--light-azimuth-deg", "10"], "no azimuth"),
        (
            ["compare", "{a}", "{a}", "--light", "side", "--light", "side", "--light", "ring"],
            "3 times",
        ),
        (["compare", "--pairs", "{a}", "--light", "side", "--light", "ring"], "2 times"),
        (["search", "--casing-id", "x", "--data-dir", "{dir}", "--light", "side"], "--file"),
        (
            ["ingest", "{a}", "--data-dir", "{dir}", "--light", "ring", "--light-azimuth-deg", "1"],
            "no azimuth",
        ),
        # Remote: refused before any connection (nothing listens on port 9).
        (
            ["compare", "A", "B", "--server", "127.0.0.1:9", "--token=t", "--light", "side"],
            "casing ids",
        ),
        (
            [
                "search",
                "--casing-id",
                "A",
                "--server",
                "127.0.0.1:9",
                "--token=t",
                "--light",
                "side",
            ],
            "--file",
        ),
        (
            [
                "submit",
                "{a}",
                "--server",
                "127.0.0.1:9",
                "--light",
                "ring",
                "--light-azimuth-deg",
                "3",
            ],
            "no azimuth",
        ),
    ],
)
def test_contradictory_light_options_are_refused(files, tmp_path, capsys, argv, message) -> None:
    if argv[0] == "search" and "--data-dir" in argv:  # a store to search in
        assert main(["ingest", str(files["c"]), "--data-dir", str(tmp_path), "--json"]) == 0
        capsys.readouterr()
    args = [x.format(a=files["a"], dir=tmp_path) for x in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- the store and the search ---------------------------------------------------------------


def test_stored_side_lit_casing_is_found_by_a_side_lit_query(
    files, tmp_path, capsys, monkeypatch
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for k in ("a", "c", "d"):
        (folder / files[k].name).write_bytes(files[k].read_bytes())
    manifest = folder / "manifest.csv"
    manifest.write_text(
        "file,casing_id,light,light_azimuth_deg\na.png,A,,40\nc.png,C,,\nd.png,D,side,\n"
    )
    data = tmp_path / "store"
    assert (
        main(
            ["ingest", str(folder), "--data-dir", str(data), "--manifest", str(manifest), "--json"]
        )
        == 0
    )
    assert "not casing fields" not in capsys.readouterr().err  # light columns are known
    # The light is stored with the surface: given (A), detected (C), kind given (D).
    store = Store(data)
    try:
        lit = {
            r.casing_id: lighting.load_prepared(store.load_surface(r.id) or b"")
            for r in store.list_casings(None)
        }
    finally:
        store.close()
    assert all(isinstance(p, lighting.LitCasing) for p in lit.values())
    la, lc, ld = (lighting.light_of(lit[k]) for k in "ACD")
    assert la is not None and (la.kind, la.azimuth_deg, la.source) == ("side", 40.0, "metadata")
    assert lc is not None and (lc.kind, lc.source) == ("side", "detected")
    assert ld is not None and (ld.source, ld.azimuth_source) == ("metadata", "detected")
    assert lit["A"].height is not None and lit["A"].directions is not None

    assert (
        main(
            [
                "search",
                "--file",
                str(files["b"]),
                "--data-dir",
                str(data),
                "--compare",
                "0",
                "--json",
            ]
        )
        == 0
    )
    cands = _json(capsys)
    assert cands[0]["casing_id"] == "A"
    assert cands[0]["score"] >= DECISIVE + 0.1
    assert not _light_flags(cands[0]["flags"])
    assert all(c["score"] < DECISIVE for c in cands[1:])

    # A stored query is compared with its stored light: nothing is detected again.
    def no_detection(*a: Any, **k: Any) -> None:
        raise AssertionError("detect_light called for a stored casing")

    monkeypatch.setattr(lighting, "detect_light", no_detection)
    assert (
        main(["search", "--casing-id", "D", "--data-dir", str(data), "--compare", "0", "--json"])
        == 0
    )
    assert {c["casing_id"] for c in _json(capsys)} == {"A", "C"}


class PlainEngine(BallisticsEngine):
    """The engine as it was before lights were recorded: the plain preparation, stored
    without a light."""

    def process(
        self, data: bytes, filename: str | None, spacing_m: float | None, **kw: Any
    ) -> Processed:
        scan = read_scan(data, name=filename, spacing_m=spacing_m)
        prep = prepare(scan)
        return Processed(
            descriptors=self.describe(prep),
            surface=prep.to_bytes(),
            prepared=prep,
            firing_pin_shape=prep.segmentation.get("firing_pin_shape"),
            format=sniff_format(data) or "unknown",
            spacing_m=float(scan.spacing_m[1]),
            quality=prep.quality,
        )


def test_old_store_without_lights_opens_and_searches(files, tmp_path, capsys) -> None:
    data = tmp_path / "old"
    with Catalog.open(data, engine=PlainEngine()) as cat:
        for k in ("a", "c"):
            cat.ingest_bytes(files[k].read_bytes(), files[k].name, {"casing_id": k.upper()})
    store = Store(data)
    try:
        blob = store.load_surface(store.get_casing("A").id)
    finally:
        store.close()
    old = lighting.load_prepared(blob or b"")
    assert type(old) is PreparedCasing and lighting.light_of(old) is None

    assert (
        main(
            [
                "search",
                "--file",
                str(files["b"]),
                "--data-dir",
                str(data),
                "--compare",
                "0",
                "--json",
            ]
        )
        == 0
    )
    cands = _json(capsys)
    assert {c["casing_id"] for c in cands} == {"A", "C"}
    # A side-lit query against casings whose light was never recorded: compared plainly and
    # said to be untrustworthy, never a plain non-match.
    for c in cands:
        assert lighting.FLAG_NOT_RECORDED in c["flags"]
        assert c["low_confidence"] is True
    # Two casings stored without lights compare as before, without a light flag.
    assert main(["search", "--casing-id", "A", "--data-dir", str(data), "--json"]) == 0
    (c,) = _json(capsys)
    assert c["casing_id"] == "C" and not _light_flags(c["flags"])


# --- the service ------------------------------------------------------------------------------


def test_proto_light_fields_round_trip() -> None:
    from server.proto_gen import matching_pb2 as pb
    from server.service import status_for, submit_meta_from_proto

    md = pb.SubmitMetadata(light="side", light_azimuth_deg=-20.0)
    back = pb.SubmitMetadata.FromString(md.SerializeToString())
    assert back.HasField("light_azimuth_deg") and back.light_azimuth_deg == -20.0
    meta = submit_meta_from_proto(back)
    assert (meta.light, meta.light_azimuth_deg) == ("side", 340.0)
    meta = submit_meta_from_proto(
        pb.SubmitMetadata.FromString(pb.SubmitMetadata().SerializeToString())
    )
    assert (meta.light, meta.light_azimuth_deg) == ("auto", None)
    # An azimuth alone means a side light; a ring with an azimuth or an unknown kind is refused.
    assert submit_meta_from_proto(pb.SubmitMetadata(light_azimuth_deg=0.0)).light == "side"
    for bad in (
        pb.SubmitMetadata(light="ring", light_azimuth_deg=5.0),
        pb.SubmitMetadata(light="north"),
    ):
        with pytest.raises(Exception) as err:  # whichever error type maps to the status
            submit_meta_from_proto(bad)
        assert status_for(err.value)[0].name == "INVALID_ARGUMENT"
    req = pb.SearchRequest.FromString(
        pb.SearchRequest(file=b"x", light="coaxial").SerializeToString()
    )
    assert req.light == "coaxial" and not req.HasField("light_azimuth_deg")


def test_service_submits_with_light_and_flags_travel_to_the_proto(files, tmp_path) -> None:
    from server.app import CatalogBackend
    from server.output import candidate_from_proto, compare_from_proto
    from server.service import SearchQuery, SubmitMeta, comparison_to_proto, search_to_proto

    with Catalog.open(tmp_path / "svc") as cat:
        backend = CatalogBackend(cat)
        recs = {}
        for k, meta in (
            ("a", SubmitMeta(light="side", light_azimuth_deg=LIGHT_A, file_name="a.png")),
            ("pa", SubmitMeta(file_name="pa.tif")),
            ("pb", SubmitMeta(file_name="pb.tif")),
        ):
            raw = files[k].read_bytes()
            recs[k] = backend.submit(
                files[k],
                meta,
                agency="lab",
                user="u",
                size=len(raw),
                sha256=hashlib.sha256(raw).hexdigest(),
            )
        assert lighting.light_of(cat.prepared(recs["a"].casing_id)).source == "metadata"
        res = backend.search(
            SearchQuery(file=files["b"].read_bytes(), file_name="b.png", top=5),
            allowed_agencies={"lab"},
            deadline=None,
        )
        top = candidate_from_proto(search_to_proto(res).combined.candidates[0])
        assert top["casing_id"] == recs["a"].casing_id and top["score"] >= DECISIVE
        c = backend.compare(recs["pa"].casing_id, recs["pb"].casing_id, picture=True, deadline=None)
        assert c.png.startswith(b"\x89PNG")
    out = compare_from_proto(
        pb_round_trip(comparison_to_proto(recs["pa"].casing_id, recs["pb"].casing_id, c))
    )
    assert lighting.FLAG_INCOMPATIBLE in out["flags"]
    assert out["low_confidence"] is True
    assert f"comparison: {lighting.FLAG_INCOMPATIBLE}" in out["low_confidence_reasons"]
    assert out["light"]["method"] == "pseudo_height"
    assert out["light"]["a"]["kind"] == "side"


def pb_round_trip(msg: Any) -> Any:
    return type(msg).FromString(msg.SerializeToString())


# --- storage, pictures, pairs ----------------------------------------------------------------


def test_lit_casing_blob_round_trip_and_old_readers(files) -> None:
    lit = lighting.prepare_scan(
        read_scan(str(files["a"])), light=lighting.LightRequest("side", 40.0)
    )
    assert isinstance(lit, lighting.LitCasing) and lit.height is not None
    blob = lit.to_bytes()
    back = lighting.load_prepared(blob)
    assert isinstance(back, lighting.LitCasing) and back.height is not None
    assert back.light == lit.light
    np.testing.assert_allclose(back.directions, lit.directions)
    h0, h1 = lit.height.surface, back.height.surface
    np.testing.assert_array_equal(h0.mask, h1.mask)
    np.testing.assert_allclose(h1.data[h1.mask], h0.data[h0.mask], rtol=1e-6, atol=1e-6)
    assert [s.name for s in h1.provenance] == [s.name for s in h0.provenance]
    # A reader that knows nothing of lights reads the flattened image as before.
    plain = PreparedCasing.from_bytes(blob)
    assert type(plain) is PreparedCasing
    np.testing.assert_array_equal(plain.surface.mask, lit.surface.mask)
    assert plain.quality == lit.quality
    # A ring-lit image stores its light and no height.
    ring = lighting.load_prepared(
        lighting.prepare_scan(read_scan(str(files["a"])), light="ring").to_bytes()
    )
    assert isinstance(ring, lighting.LitCasing) and ring.height is None
    assert ring.light is not None and ring.light.kind == "ring"
    with pytest.raises(BallisticsError, match="unreadable"):
        lighting.load_prepared(b"not a blob")


def test_picture_shows_the_heights_of_a_side_lit_pair(files) -> None:
    a = lighting.prepare_scan(read_scan(str(files["a"])))
    b = lighting.prepare_scan(read_scan(str(files["c"])), light="ring")
    assert isinstance(a, lighting.LitCasing)
    heights = lighting.picture_surfaces(a, a, type("C", (), {"light": {"method": "pseudo_height"}}))
    assert heights == (a.height, a.height)
    assert lighting.picture_surfaces(a, b, type("C", (), {"light": {"method": "plain"}})) == (a, b)


def test_compare_pairs_takes_the_light_for_every_file(files, tmp_path, capsys) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"a,b\n{files['a']},{files['b']}\n")
    assert (
        main(["compare", "--pairs", str(pairs), "--workers", "1", "--json", "--light", "ring"]) == 0
    )
    (rec,) = _json(capsys)
    assert rec["light"]["method"] == "plain"
    assert rec["light"]["a"]["kind"] == rec["light"]["b"]["kind"] == "ring"
    assert main(["compare", "--pairs", str(pairs), "--workers", "1", "--json"]) == 0
    (auto,) = _json(capsys)
    assert auto["light"]["method"] == "pseudo_height" and auto["score"] > rec["score"] + 0.5


def test_light_fields_over_the_wire(tmp_path) -> None:
    """The service reads SubmitMetadata / SearchRequest light fields and refuses bad ones
    with INVALID_ARGUMENT (a fake backend records what reached it)."""
    import grpc

    from tests.test_server_machinery import FakeBackend
    from tests.test_server_support import running_server

    class Recording(FakeBackend):
        def __init__(self) -> None:
            super().__init__()
            self.metas: list[Any] = []
            self.queries: list[Any] = []

        def submit(self, upload, meta, **kw):  # type: ignore[no-untyped-def]
            self.metas.append(meta)
            return super().submit(upload, meta, **kw)

        def search(self, query, **kw):  # type: ignore[no-untyped-def]
            self.queries.append(query)
            return super().search(query, **kw)

    backend = Recording()
    with running_server(backend, tmp_path / "data") as srv, srv.client("north_sub") as c:
        c.submit(b"SCAN1", search=False, light="side", light_azimuth_deg=-45.0)
        c.submit(b"SCAN2", search=False)
        c.search(file=b"SCAN3", light="coaxial")
        with pytest.raises(grpc.RpcError) as err:
            c.submit(b"SCAN4", search=False, light="ring", light_azimuth_deg=10.0)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "no azimuth" in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            c.search(file=b"SCAN5", light="sideways")
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [(m.light, m.light_azimuth_deg) for m in backend.metas] == [
        ("side", 315.0),
        ("auto", None),
    ]
    assert (backend.queries[0].light, backend.queries[0].light_azimuth_deg) == ("coaxial", None)
