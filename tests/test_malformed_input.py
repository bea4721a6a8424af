"""Hostile and broken files: each is refused with a specific error, fast, in little memory.

Every input is built in memory before measuring; each refusal must take under 1 s and grow
memory by under 100 MB, measured two ways (tracemalloc peak of Python/numpy allocations and
the process's peak resident set, which also sees C allocations by zlib, cv2 and libpng).
"""

from __future__ import annotations

import gc
import hashlib
import io
import resource
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from ballistics.errors import (
    BallisticsError,
    ScanFormatError,
    ScanTooLargeError,
    UnsafeInputError,
)
from ballistics.image_io import read_image
from ballistics.io import read_scan
from ballistics.limits import Limits, MiB
from ballistics.x3p import X3PChecksumWarning, read_x3p, write_x3p

from .test_image_io import png_bytes, png_chunk, tiff_bytes
from .test_x3p import main_xml, synthetic_scan, x3p_bytes

MAX_SECONDS = 1.0
MAX_BYTES = 100 * MiB


def assert_refused(
    call: Callable[[], object], error: type[BaseException], match: str | None = None
) -> BaseException:
    """Run ``call``; it must raise ``error`` within the time and memory budget."""
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as info:
            call()
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert elapsed < MAX_SECONDS, f"refusal took {elapsed:.2f} s"
    assert peak < MAX_BYTES, f"refusal allocated {peak / MiB:.0f} MiB (tracemalloc)"
    assert rss_growth < MAX_BYTES, f"refusal grew peak RSS by {rss_growth / MiB:.0f} MiB"
    return info.value


def data_md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def small_x3p() -> bytes:
    """A valid 40 x 56 float64 X3P, as bytes."""
    scan = synthetic_scan(seed=11)
    buf = io.BytesIO()
    values = scan.masked().astype("<f8").tobytes()
    xml = main_xml(size_x=56, size_y=40, data_md5=data_md5(values))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("main.xml", xml)
        zf.writestr("bindata/data.bin", values)
        zf.writestr("md5checksum.hex", data_md5(xml) + " *main.xml\n")
    return buf.getvalue()


def zeros_member_zip(xml: bytes, n_bytes: int) -> bytes:
    """X3P whose data.bin is ``n_bytes`` of zeros, deflated by streaming (small memory)."""
    buf = io.BytesIO()
    chunk = bytes(4 * MiB)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("main.xml", xml)
        with zf.open("bindata/data.bin", "w", force_zip64=n_bytes > 2**31) as fh:
            left = n_bytes
            while left:
                fh.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb_200mb() -> bytes:
    """data.bin inflating to 200 MB of zeros (about 200 kB compressed), header 5000 x 5000 D."""
    return zeros_member_zip(main_xml(size_x=5000, size_y=5000), 200_000_000)


@pytest.fixture(scope="module")
def bomb_mismatch() -> bytes:
    """The same 200 MB data.bin behind a header of 10 x 10 points (800 bytes)."""
    return zeros_member_zip(main_xml(size_x=10, size_y=10), 200_000_000)


def patch_declared_size(raw: bytes, member: str, new_size: int) -> bytes:
    """Rewrite a member's uncompressed size in the central directory and local header."""
    out = bytearray(raw)
    name = member.encode()
    pos = 0
    while (pos := out.find(b"PK\x01\x02", pos)) >= 0:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if bytes(out[pos + 46 : pos + 46 + name_len]) == name:
            struct.pack_into("<I", out, pos + 24, new_size)
            local = struct.unpack_from("<I", out, pos + 42)[0]
            struct.pack_into("<I", out, local + 22, new_size)
            return bytes(out)
        pos += 4
    raise AssertionError(f"{member} not found")


# ---- empty, garbage, truncated ----------------------------------------------------------


@pytest.mark.parametrize("reader", [read_x3p, read_image, read_scan])
def test_empty_file(reader: Callable[[bytes], object], tmp_path: Path) -> None:
    assert_refused(lambda: reader(b""), ScanFormatError, "empty file")
    path = tmp_path / "empty.x3p"
    path.write_bytes(b"")
    assert_refused(lambda: reader(path), ScanFormatError, "empty file")  # type: ignore[arg-type]


def test_non_image_bytes() -> None:
    junk = np.random.default_rng(0).bytes(10_000)
    assert_refused(lambda: read_scan(junk), ScanFormatError, "supported formats")
    assert_refused(lambda: read_image(junk), ScanFormatError, "not a PNG, TIFF or JPEG")
    assert_refused(lambda: read_x3p(junk), ScanFormatError, "not a zip")
    assert_refused(lambda: read_scan(b"%PDF-1.4\n" + junk), ScanFormatError, "PNG, TIFF, JPEG")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_zip(small_x3p: bytes, keep: float) -> None:
    cut = small_x3p[: int(len(small_x3p) * keep)]
    err = assert_refused(lambda: read_x3p(cut), ScanFormatError)
    assert "truncated" in str(err) or "corrupt" in str(err)


def test_truncated_real_file(fadul_paths: list[Path]) -> None:
    raw = fadul_paths[0].read_bytes()
    assert_refused(lambda: read_scan(raw[: len(raw) // 2]), ScanFormatError, "truncated")


def test_corrupt_compressed_data(small_x3p: bytes) -> None:
    """Flipped bytes inside data.bin's deflate stream: zlib or CRC error, not a crash."""
    with zipfile.ZipFile(io.BytesIO(small_x3p)) as zf:
        info = zf.getinfo("bindata/data.bin")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    bad = bytearray(small_x3p)
    for k in range(start + 20, start + 60):
        bad[k] ^= 0xFF
    assert_refused(lambda: read_x3p(bytes(bad)), ScanFormatError, "corrupt")


@pytest.mark.parametrize("fmt", ["png", "tiff", "jpeg"])
def test_truncated_images(fmt: str) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (64, 80), dtype=np.uint8)
    if fmt == "png":
        raw = png_bytes(pixels, px_per_m=(400_000, 400_000))
    elif fmt == "tiff":
        raw = tiff_bytes(pixels, resolution=(4000, 4000), resolutionunit="CENTIMETER")
    else:
        raw = cv2.imencode(".jpg", pixels)[1].tobytes()
    cut = raw[: len(raw) // 2]
    assert_refused(lambda: read_image(cut, spacing_m=2e-6), ScanFormatError)


def test_png_chunk_length_beyond_the_file() -> None:
    """Regression: cv2 spent 7-13 s on one IDAT length corrupted to ~3 GB (found by fuzzing)."""
    raw = bytearray(png_bytes(np.zeros((32, 40), np.uint8), px_per_m=(400_000, 400_000)))
    idat = raw.find(b"IDAT") - 4
    struct.pack_into(">I", raw, idat, 2_986_345_771)
    assert_refused(lambda: read_image(bytes(raw)), ScanFormatError, "claims 2,986,345,771 bytes")


@pytest.mark.parametrize("magic", [b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"\xff\xd8\xff"])
def test_image_magic_followed_by_garbage(magic: bytes) -> None:
    raw = magic + np.random.default_rng(2).bytes(5000)
    assert_refused(lambda: read_image(raw, spacing_m=1e-6), ScanFormatError)


# ---- zip bombs and container abuse ------------------------------------------------------


def test_bomb_with_header_mismatch_is_refused_before_inflating(bomb_mismatch: bytes) -> None:
    # Header says 10 x 10 points (800 bytes); the member declares 200 MB.
    expected = r"200,000,000 bytes.*800 bytes expected"
    assert_refused(lambda: read_x3p(bomb_mismatch), ScanFormatError, expected)


def test_bomb_over_the_uncompressed_cap(bomb_200mb: bytes) -> None:
    limits = Limits(max_uncompressed_bytes=64 * MiB)
    assert_refused(
        lambda: read_x3p(bomb_200mb, limits=limits), ScanTooLargeError, "max_uncompressed_bytes"
    )


def test_bomb_over_the_compression_ratio(bomb_200mb: bytes) -> None:
    limits = Limits(max_compression_ratio=100)
    assert_refused(lambda: read_x3p(bomb_200mb, limits=limits), UnsafeInputError, "zip bomb")


def test_member_declaring_a_huge_size(small_x3p: bytes) -> None:
    raw = patch_declared_size(small_x3p, "bindata/data.bin", 0xFFFF_FFF0)
    assert_refused(lambda: read_x3p(raw), ScanTooLargeError, "declares 4,294,967,280 bytes")


def test_member_lying_about_a_small_size(bomb_mismatch: bytes) -> None:
    """Declares 800 bytes but inflates to 200 MB: the bounded read stops, the CRC fails."""
    raw = patch_declared_size(bomb_mismatch, "bindata/data.bin", 800)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", X3PChecksumWarning)
        assert_refused(lambda: read_x3p(raw), ScanFormatError, "corrupt")


def test_too_many_members() -> None:
    members = {f"junk/{i}.txt": b"x" for i in range(70)}
    raw = x3p_bytes({"main.xml": main_xml(size_x=1, size_y=1), **members})
    assert_refused(lambda: read_x3p(raw), ScanTooLargeError, "max_members")


def test_end_record_claiming_a_million_members(small_x3p: bytes) -> None:
    raw = bytearray(small_x3p)
    eocd = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", raw, eocd + 8, 0xFFFE, 0xFFFE)
    assert_refused(lambda: read_x3p(bytes(raw)), ScanTooLargeError, "members")


def test_file_over_the_size_cap(small_x3p: bytes, tmp_path: Path) -> None:
    path = tmp_path / "big.x3p"
    path.write_bytes(small_x3p)
    limits = Limits(max_file_bytes=1000)
    assert_refused(lambda: read_scan(path, limits=limits), ScanTooLargeError, "max_file_bytes")


@pytest.mark.parametrize("link", ["../outside.bin", "/etc/passwd", "C:\\data.bin", "a/../../b"])
def test_data_link_leaving_the_archive(link: str) -> None:
    raw = x3p_bytes({"main.xml": main_xml(size_x=1, size_y=1, data_link=link)})
    assert_refused(lambda: read_x3p(raw), UnsafeInputError, "outside the archive")


# ---- XML attacks ------------------------------------------------------------------------


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<ISO5436_2><Record1><Revision>&lol9;</Revision></Record1></ISO5436_2>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ISO5436_2><Record1><Revision>&xxe;</Revision></Record1></ISO5436_2>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ISO5436_2 SYSTEM "http://example.invalid/x3p.dtd">
<ISO5436_2/>
"""


@pytest.mark.parametrize(
    "xml",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD],
    ids=["billion-laughs", "external-entity", "external-dtd"],
)
def test_xml_with_entities_or_dtd(xml: bytes) -> None:
    raw = x3p_bytes({"main.xml": xml, "bindata/data.bin": bytes(8)})
    assert_refused(lambda: read_x3p(raw), UnsafeInputError, "DTD, entities or external")


def test_malformed_xml_is_a_format_error_not_unsafe() -> None:
    raw = x3p_bytes({"main.xml": b"<ISO5436_2><Record1>", "bindata/data.bin": bytes(8)})
    err = assert_refused(lambda: read_x3p(raw), ScanFormatError, "not well-formed")
    assert not isinstance(err, UnsafeInputError)


# ---- header lies ------------------------------------------------------------------------


def test_x3p_header_claiming_100k_by_100k() -> None:
    raw = x3p_bytes(
        {"main.xml": main_xml(size_x=100_000, size_y=100_000), "bindata/data.bin": bytes(800)}
    )
    assert_refused(lambda: read_scan(raw), ScanTooLargeError, "10,000,000,000 pixels")


def test_png_header_claiming_100k_by_100k() -> None:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(bytes(1000)))
    raw = b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")
    assert_refused(lambda: read_scan(raw, spacing_m=1e-6), ScanTooLargeError, "max_pixels")
    assert_refused(lambda: read_image(raw), ScanTooLargeError, "PNG header")


def tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian TIFF whose IFD claims ``width x height`` with a 16-byte strip."""
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(16)


def test_tiff_header_claiming_100k_by_100k() -> None:
    raw = tiff_header_only(100_000, 100_000)
    assert_refused(lambda: read_scan(raw, spacing_m=1e-6), ScanTooLargeError, "TIFF header")


def test_tiff_with_strips_shorter_than_the_image() -> None:
    raw = tiff_header_only(10, 10)
    assert_refused(lambda: read_image(raw, spacing_m=1e-6), ScanFormatError, "strips hold")


def test_jpeg_header_claiming_65k_by_65k() -> None:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65535, 65535, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    raw = b"\xff\xd8" + sof + sos + bytes(100) + b"\xff\xd9"
    assert_refused(lambda: read_scan(raw, spacing_m=1e-6), ScanTooLargeError, "JPEG header")


def test_wrong_data_size() -> None:
    values = np.zeros((99, 100), "<f8").tobytes()
    raw = x3p_bytes({"main.xml": main_xml(size_x=100, size_y=100), "bindata/data.bin": values})
    assert_refused(
        lambda: read_x3p(raw),
        ScanFormatError,
        r"holds 79,200 bytes but SizeX x SizeY x 8 .* = 80,000 bytes expected",
    )


@pytest.mark.parametrize(
    ("size_x", "message"),
    [
        ("abc", "SizeX is 'abc'; expected a positive integer"),
        ("-5", "SizeX is -5"),
        ("", "lacks Record3/MatrixDimension/SizeX"),
        ("1" * 5000, "expected a positive integer"),
    ],
)
def test_non_numeric_or_missing_sizes(size_x: str, message: str) -> None:
    xml = main_xml(size_x=1, size_y=1).replace(
        b"<SizeX>1</SizeX>", f"<SizeX>{size_x}</SizeX>".encode()
    )
    raw = x3p_bytes({"main.xml": xml, "bindata/data.bin": bytes(8)})
    assert_refused(lambda: read_x3p(raw), ScanFormatError, message)


def test_bad_increment_and_data_type() -> None:
    bad_dx = main_xml(size_x=1, size_y=1, dx="six")
    raw = x3p_bytes({"main.xml": bad_dx, "bindata/data.bin": bytes(8)})
    assert_refused(lambda: read_x3p(raw), ScanFormatError, "CX/Increment is 'six'")
    bad_type = main_xml(size_x=1, size_y=1, dtype="Q")
    raw = x3p_bytes({"main.xml": bad_type, "bindata/data.bin": bytes(8)})
    assert_refused(lambda: read_x3p(raw), ScanFormatError, "not one of I, L, F, D")


def test_missing_members() -> None:
    no_data = x3p_bytes({"main.xml": main_xml(size_x=1, size_y=1)})
    assert_refused(lambda: read_x3p(no_data), ScanFormatError, "missing from the zip")
    no_main = x3p_bytes({"bindata/data.bin": bytes(8)})
    assert_refused(lambda: read_x3p(no_main), ScanFormatError, "no main.xml")
    empty_zip = x3p_bytes({})
    assert_refused(lambda: read_scan(empty_zip), ScanFormatError, "no main.xml")


# ---- fuzzing --------------------------------------------------------------------------------


def test_random_corruption_never_escapes_the_error_hierarchy(small_x3p: bytes) -> None:
    """Seeded byte flips of valid files: a scan or a BallisticsError, never anything else."""
    rng = np.random.default_rng(1234)
    pixels = rng.integers(0, 255, (32, 40), dtype=np.uint8)
    samples = [
        small_x3p,
        png_bytes(pixels, px_per_m=(400_000, 400_000)),
        tiff_bytes(pixels, resolution=(4000, 4000), resolutionunit="CENTIMETER"),
        cv2.imencode(".jpg", pixels)[1].tobytes(),
    ]
    outcomes = {"ok": 0, "refused": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", X3PChecksumWarning)
        for sample in samples:
            for _ in range(60):
                bad = bytearray(sample)
                for pos in rng.integers(0, len(bad), size=rng.integers(1, 8)):
                    bad[pos] = rng.integers(0, 256)
                try:
                    read_scan(bytes(bad), spacing_m=2e-6)
                    outcomes["ok"] += 1
                except BallisticsError:
                    outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_written_files_survive_the_same_checks(tmp_path: Path) -> None:
    """Our own writer's output passes every cap with default limits (no false refusals)."""
    path = tmp_path / "ok.x3p"
    write_x3p(path, synthetic_scan(shape=(300, 300), seed=3))
    assert read_scan(path).shape == (300, 300)


# ---- memory amplification (issue 10 item 5) ---------------------------------------------


@pytest.fixture(scope="module")
def amplifier_8000() -> bytes:
    """8000 x 8000 float32 declared, data.bin all zeros, deflated: ~250 kB on the wire."""
    return zeros_member_zip(main_xml(size_x=8000, size_y=8000, dtype="F"), 8000 * 8000 * 4)


def test_service_limits_refuse_the_8000_square_amplifier(amplifier_8000: bytes) -> None:
    from server.app import limited_engine
    from server.service import ServiceLimits

    assert len(amplifier_8000) < 400_000
    engine = limited_engine(ServiceLimits())
    err = assert_refused(
        lambda: engine.process(amplifier_8000, "amp.x3p", None), ScanTooLargeError, "pixels"
    )
    assert "64,000,000" in str(err) and "--max-pixels" in str(err)


def test_memory_budget_reserves_before_decoding(small_x3p: bytes) -> None:
    import threading

    from ballistics.limits import MemoryBudget, MemoryBudgetExceeded

    limits = Limits()
    need = 40 * 56 * limits.working_bytes_per_pixel
    budget = MemoryBudget(int(need * 1.5))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with budget.request():
            read_x3p(small_x3p, limits=limits)
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10)
        assert budget.used == need
        with budget.request():
            err = assert_refused(lambda: read_x3p(small_x3p, limits=limits), MemoryBudgetExceeded)
        assert "memory budget" in str(err)
        assert budget.used == need  # the refused request released what it had
    finally:
        release.set()
        t.join(10)
    assert budget.used == 0
    with budget.request():
        read_x3p(small_x3p, limits=limits)  # fits again once released
    read_x3p(small_x3p, limits=limits)  # outside any request: no budget applies
    assert budget.used == 0


def test_file_spacing_outside_the_plausible_range_is_refused(small_x3p: bytes) -> None:
    raw = x3p_bytes(
        {
            "main.xml": main_xml(size_x=56, size_y=40, dx="1e-300", dy="1e-300"),
            "bindata/data.bin": synthetic_scan(seed=3).masked().astype("<f8").tobytes(),
        }
    )
    with pytest.warns(X3PChecksumWarning):
        with pytest.raises(ScanFormatError, match="spacing"):
            read_scan(raw)


def test_amplifier_by_submit_and_search_is_resource_exhausted(
    amplifier_8000: bytes, tmp_path: Path
) -> None:
    """The same file through the real service (real catalog and engine): refused at the header
    with RESOURCE_EXHAUSTED by SubmitCasing and by Search-by-file, nothing stored."""
    import grpc

    from server.app import open_backend
    from server.service import ServiceLimits
    from tests.test_server_support import running_server

    limits = ServiceLimits(spool_dir=str(tmp_path))
    backend, close = open_backend(tmp_path / "data", limits)
    try:
        with running_server(backend, tmp_path / "data", limits=limits) as srv:
            with srv.client("north_sub") as c:
                for call in (
                    lambda: c.submit(amplifier_8000, file_name="amp.x3p"),
                    lambda: c.search(file=amplifier_8000, file_name="amp.x3p"),
                ):
                    with pytest.raises(grpc.RpcError) as e:
                        call()
                    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "--max-pixels" in e.value.details()
                assert list(c.list().casings) == []
            assert srv.server.budget is not None and srv.server.budget.used == 0
    finally:
        close()
