"""X3P reading and writing: real Fadul scans, round trips of every data type, real-file quirks."""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ballistics.errors import BallisticsError, ScanFormatError
from ballistics.io import read_scan
from ballistics.scan import Scan
from ballistics.x3p import NAMESPACE, X3PChecksumWarning, read_x3p, write_x3p

from .conftest import FADUL_DIR

MANIFEST = FADUL_DIR.parent / "MANIFEST.tsv"


# ---- helpers --------------------------------------------------------------------------------


def synthetic_scan(shape: tuple[int, int] = (40, 56), seed: int = 0) -> Scan:
    """Seeded surface: heights ~10 um with a quarter of the points invalid (NaN)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1e-5, size=shape)
    mask = rng.random(shape) > 0.25
    data[~mask] = np.nan
    return Scan(data=data, mask=mask, spacing_m=(3.125e-6, 6.25e-6), kind="topography")


def main_xml(
    *,
    size_x: int,
    size_y: int,
    dtype: str = "D",
    dx: str = "6.25e-06",
    dy: str = "6.25e-06",
    z_increment: str = "1",
    data_md5: str | None = None,
    valid_link: str | None = None,
    data_link: str = "bindata/data.bin",
    namespaced: bool = True,
    extra_record3: str = "",
) -> bytes:
    """A main.xml shaped like real files; every field is a string so tests can break it."""
    root = "p:ISO5436_2" if namespaced else "ISO5436_2"
    ns = f' xmlns:p="{NAMESPACE}"' if namespaced else ""
    md5 = f"<MD5ChecksumPointData>{data_md5}</MD5ChecksumPointData>" if data_md5 else ""
    valid = f"<ValidPointsLink>{valid_link}</ValidPointsLink>" if valid_link else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<{root}{ns}>
  <Record1><Revision>ISO5436 - 2000</Revision><FeatureType>SUR</FeatureType>
    <Axes>
      <CX><AxisType>I</AxisType><DataType>D</DataType><Increment>{dx}</Increment></CX>
      <CY><AxisType>I</AxisType><DataType>D</DataType><Increment>{dy}</Increment></CY>
      <CZ><AxisType>A</AxisType><DataType>{dtype}</DataType>
          <Increment>{z_increment}</Increment><Offset>0</Offset></CZ>
    </Axes>
  </Record1>
  <Record3>
    <MatrixDimension><SizeX>{size_x}</SizeX><SizeY>{size_y}</SizeY><SizeZ>1</SizeZ>
    </MatrixDimension>
    <DataLink><PointDataLink>{data_link}</PointDataLink>{md5}{valid}</DataLink>
    {extra_record3}
  </Record3>
  <Record4><ChecksumFile>md5checksum.hex</ChecksumFile></Record4>
</{root}>
""".encode()


def x3p_bytes(members: dict[str, bytes], *, prefix: str = "", checksum: bool = True) -> bytes:
    """Zip ``members`` (main.xml first) under ``prefix``, adding a correct md5checksum.hex."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(prefix + name, content)
        if checksum and "main.xml" in members:
            digest = hashlib.md5(members["main.xml"]).hexdigest()
            zf.writestr(prefix + "md5checksum.hex", f"{digest} *main.xml\n")
    return buf.getvalue()


def zip_members(path_or_bytes: Path | bytes) -> dict[str, bytes]:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with zipfile.ZipFile(src) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def manifest_sizes() -> dict[str, tuple[int, int]]:
    """File name -> (SizeX, SizeY) from the manifest's size_xy column ("547x546")."""
    with MANIFEST.open(newline="") as fh:
        rows = csv.DictReader(fh, delimiter="\t")
        out = {}
        for row in rows:
            sx, sy = row["size_xy"].split("x")
            out[Path(row["file"]).name] = (int(sx), int(sy))
    return out


def assert_same_surface(a: Scan, b: Scan) -> None:
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.data[a.mask], b.data[b.mask])
    assert np.isnan(b.data[~b.mask]).all()
    assert a.spacing_m == b.spacing_m


# ---- real files -----------------------------------------------------------------------------


def test_every_fadul_scan_reads(fadul_paths: list[Path]) -> None:
    sizes = manifest_sizes()
    for path in fadul_paths:
        scan = read_x3p(path)  # a checksum warning would fail here: all 40 are consistent
        size_x, size_y = sizes[path.name]
        assert scan.shape == (size_y, size_x), path.name
        assert scan.spacing_m == (6.25e-6, 6.25e-6)
        assert scan.kind == "topography"
        assert 0.2 < scan.valid_fraction < 0.5, path.name
        assert np.all(np.abs(scan.data[scan.mask]) < 1e-3)
        assert np.isnan(scan.data[~scan.mask]).all()
        step = scan.provenance[-1]
        assert step.name == "read_x3p"
        assert step.params["file"] == path.name
        assert step.params["data_type"] == "D"
        assert step.stats["checksum"] == {"main_xml": "ok", "data": "ok"}
        assert step.stats["instrument"]["manufacturer"] == "NanoFocus"


def test_fadul_round_trip_is_exact(fadul_paths: list[Path], tmp_path: Path) -> None:
    original = read_x3p(fadul_paths[0])
    out = tmp_path / "copy.x3p"
    write_x3p(out, original)
    again = read_x3p(out)
    assert_same_surface(original, again)
    # The instrument survives the round trip via Record2.
    assert again.provenance[-1].stats["instrument"]["manufacturer"] == "NanoFocus"


def test_bytes_and_path_give_the_same_scan(fadul_paths: list[Path]) -> None:
    path = fadul_paths[0]
    from_path = read_x3p(path)
    from_bytes = read_x3p(path.read_bytes(), name=path.name)
    assert_same_surface(from_path, from_bytes)
    assert from_bytes.provenance[-1].params["file"] == path.name


# ---- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["D", "F", "I", "L"])
def test_round_trip_every_data_type(dtype: str, tmp_path: Path) -> None:
    scan = synthetic_scan(seed=1)
    path = tmp_path / f"scan_{dtype}.x3p"
    write_x3p(path, scan, dtype=dtype)  # type: ignore[arg-type]
    back = read_x3p(path)
    step = back.provenance[-1]
    assert step.params["data_type"] == dtype
    assert step.stats["checksum"]["main_xml"] == "ok"
    np.testing.assert_array_equal(back.mask, scan.mask)
    assert back.spacing_m == scan.spacing_m
    valid = scan.mask
    if dtype == "D":
        np.testing.assert_array_equal(back.data[valid], scan.data[valid])
    elif dtype == "F":
        np.testing.assert_allclose(back.data[valid], scan.data[valid], rtol=1e-7, atol=0)
    else:
        # Integers are quantised to the chosen CZ increment: at most half a step off.
        increment = step.params["z_increment"]
        assert increment == pytest.approx(
            np.abs(scan.data[valid]).max() / np.iinfo(np.int16 if dtype == "I" else np.int32).max
        )
        assert np.abs(back.data[valid] - scan.data[valid]).max() <= increment / 2 * (1 + 1e-9)
        assert "bindata/valid.bin" in zip_members(path)


def test_written_file_is_standard(tmp_path: Path) -> None:
    path = tmp_path / "std.x3p"
    write_x3p(path, synthetic_scan())
    members = zip_members(path)
    assert set(members) == {"main.xml", "bindata/data.bin", "md5checksum.hex"}
    xml = members["main.xml"]
    assert b"<p:ISO5436_2" in xml and NAMESPACE.encode() in xml
    for record in (b"Record1", b"Record2", b"Record3", b"Record4"):
        assert b"<" + record + b">" in xml
    assert members["md5checksum.hex"].split()[0].decode() == hashlib.md5(xml).hexdigest()
    data_md5 = hashlib.md5(members["bindata/data.bin"]).hexdigest()
    assert f"<MD5ChecksumPointData>{data_md5}</MD5ChecksumPointData>".encode() in xml
    assert len(members["bindata/data.bin"]) == 40 * 56 * 8


@pytest.mark.parametrize("dtype", ["D", "I"])
def test_x3pio_reads_what_we_write(dtype: str, tmp_path: Path) -> None:
    """An independent reader accepts our files, so they are standard, not just self-consistent."""
    x3pio = pytest.importorskip("x3pio")
    scan = synthetic_scan(seed=2)
    path = tmp_path / "ours.x3p"
    write_x3p(path, scan, dtype=dtype)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # x3pio's own deprecations are not ours to test
        layer = x3pio.read(path).layers[0]
    np.testing.assert_array_equal(layer.z, read_x3p(path).masked())  # NaN compare equal


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "scan.x3p"
    write_x3p(path, synthetic_scan(seed=3))
    write_x3p(path, synthetic_scan(seed=4))  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.x3p"]
    assert_same_surface(synthetic_scan(seed=4), read_x3p(path))


def test_write_refuses_images_and_unknown_dtypes(tmp_path: Path) -> None:
    image = Scan(np.zeros((4, 4)), np.ones((4, 4), bool), (1e-6, 1e-6), "image")
    with pytest.raises(BallisticsError, match="topography"):
        write_x3p(tmp_path / "a.x3p", image)
    with pytest.raises(BallisticsError, match="dtype"):
        write_x3p(tmp_path / "b.x3p", synthetic_scan(), dtype="Q")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# ---- real-file deviations -------------------------------------------------------------------


def test_folder_prefix_inside_zip(tmp_path: Path) -> None:
    path = tmp_path / "plain.x3p"
    scan = synthetic_scan(seed=5)
    write_x3p(path, scan)
    prefixed = x3p_bytes(
        {k: v for k, v in zip_members(path).items() if k != "md5checksum.hex"},
        prefix="scan1/",
    )
    back = read_x3p(prefixed)
    assert_same_surface(scan, back)
    assert back.provenance[-1].params["member_prefix"] == "scan1/"


def test_unprefixed_root_element_and_csafe_extras() -> None:
    values = np.arange(12, dtype="<f8").reshape(3, 4) * 1e-6
    values[1, 2] = np.nan
    data = values.tobytes()
    xml = main_xml(
        size_x=4,
        size_y=3,
        namespaced=False,
        data_md5=hashlib.md5(data).hexdigest(),
        extra_record3="<Mask><Background>#cd7f32</Background><Annotations/></Mask>",
    )
    raw = x3p_bytes({"main.xml": xml, "bindata/data.bin": data, "bindata/mask.png": b"junk"})
    scan = read_x3p(raw)
    assert scan.shape == (3, 4)
    assert not scan.mask[1, 2] and scan.mask.sum() == 11
    np.testing.assert_array_equal(scan.data[scan.mask], values[np.isfinite(values)])


def test_float_data_with_cz_increment_and_valid_bin() -> None:
    """Float heights stored in micrometres (CZ Increment 1e-6) plus a validity file."""
    heights_um = np.array([[1.5, 2.0, -3.0], [4.0, 5.0, 6.0]], dtype="<f4")
    valid = np.array([[1, 1, 0], [1, 0, 1]], dtype=bool)
    bits = np.packbits(valid.ravel(), bitorder="little").tobytes()
    xml = main_xml(
        size_x=3, size_y=2, dtype="F", z_increment="1e-6", valid_link="bindata/valid.bin"
    )
    with pytest.warns(X3PChecksumWarning, match="data: missing"):
        scan = read_x3p(
            x3p_bytes(
                {
                    "main.xml": xml,
                    "bindata/data.bin": heights_um.tobytes(),
                    "bindata/valid.bin": bits,
                }
            )
        )
    np.testing.assert_array_equal(scan.mask, valid)
    np.testing.assert_allclose(scan.data[valid], heights_um[valid].astype(float) * 1e-6)


def test_stale_main_xml_checksum_warns(tmp_path: Path) -> None:
    path = tmp_path / "scan.x3p"
    scan = synthetic_scan(seed=6)
    write_x3p(path, scan)
    members = zip_members(path)
    # Edit main.xml after writing, as x3ptools-style tools do, without updating the checksum.
    members["main.xml"] = members["main.xml"].replace(b"<Comment>", b"<Comment>edited ")
    stale = x3p_bytes(members, checksum=False)
    with pytest.warns(X3PChecksumWarning, match="main_xml: stale"):
        back = read_x3p(stale)
    assert_same_surface(scan, back)
    assert back.provenance[-1].stats["checksum"]["main_xml"] == "stale"


def test_stale_data_checksum_and_missing_checksum_file_warn(tmp_path: Path) -> None:
    path = tmp_path / "scan.x3p"
    write_x3p(path, synthetic_scan(seed=7))
    members = zip_members(path)
    data = bytearray(members["bindata/data.bin"])
    data[:8] = np.float64(1e-6).tobytes()  # any change makes it stale
    members["bindata/data.bin"] = bytes(data)
    with pytest.warns(X3PChecksumWarning, match="data: stale"):
        read_x3p(x3p_bytes(members, checksum=False))
    del members["md5checksum.hex"]
    with pytest.warns(X3PChecksumWarning, match="main_xml: missing"):
        read_x3p(x3p_bytes(members, checksum=False))


def test_backslash_data_link_is_tolerated() -> None:
    data = np.zeros((2, 2), "<f8").tobytes()
    xml = main_xml(
        size_x=2, size_y=2, data_link="bindata\\data.bin", data_md5=hashlib.md5(data).hexdigest()
    )
    assert read_x3p(x3p_bytes({"main.xml": xml, "bindata/data.bin": data})).shape == (2, 2)


def test_read_scan_dispatches_x3p_and_records_a_spacing_override(tmp_path: Path) -> None:
    path = tmp_path / "scan.x3p"
    scan = synthetic_scan(seed=8)
    write_x3p(path, scan)
    assert_same_surface(scan, read_scan(path))
    overridden = read_scan(path.read_bytes(), name="upload.x3p", spacing_m=5e-6)
    assert overridden.spacing_m == (5e-6, 5e-6)
    step = overridden.provenance[-1]
    assert step.name == "override_spacing"
    assert step.params["file_spacing_m"] == [3.125e-6, 6.25e-6]
    assert overridden.provenance[0].params["file"] == "upload.x3p"


def test_missing_path_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(ScanFormatError, match="no such file"):
        read_x3p(tmp_path / "absent.x3p")
    with pytest.raises(ScanFormatError, match="not a regular file"):
        read_x3p(tmp_path)
