"""Bulk ingest of scan files into a :class:`~index.service.Catalog`.

* Resumable: every file whose casing is committed is appended (and fsync'ed) to
  ``<data_dir>/ingest-done.tsv`` keyed by absolute path, size, mtime and the run's agency
  (``agency``, default the catalog's); a rerun for the same agency skips those files without
  reading them, and another agency ingesting the same folder gets its own casings. (Ingest is
  also idempotent on content + agency, so a file committed just before a crash but not yet in
  the done-list is not duplicated.)
* A bad file is reported on one line and skipped; it never aborts the batch, and because each
  casing is one SQLite transaction it cannot leave a half-written record.
* Metadata manifest (:func:`read_manifest`): CSV or TSV (or ``;``-separated) with a header
  row naming a ``file`` column; ``file`` is resolved relative to the manifest's folder and
  matched by path, else by name. Columns that name casing fields (``casing_id, exhibit_id,
  incident_id, case_number, place, caliber, agency, date, spacing_um`` or ``spacing_m``,
  ``light`` (auto, ring, side, coaxial) and ``light_azimuth_deg`` of a 2-D image, and the
  spellings in ``MANIFEST_ALIASES``) fill them; every other non-empty cell is kept as
  free-form metadata of the casing (``Store.metadata_of``), e.g. ``firearm_id``, the ground
  truth of a validation run. Columns other than those and ``firearm_id`` get one warning.
* Ctrl-C: :class:`IngestInterrupted` (a ``KeyboardInterrupt``) carries the report of what was
  stored; everything committed stays, and a re-run resumes.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from .service import Catalog

SCAN_SUFFIXES = {".x3p", ".png", ".tif", ".tiff", ".jpg", ".jpeg"}
#: Manifest columns that fill casing fields (the ``ingest_bytes`` metadata keys).
MANIFEST_COLUMNS = (
    "file",
    "casing_id",
    "exhibit_id",
    "incident_id",
    "case_number",
    "place",
    "caliber",
    "agency",
    "date",
    "spacing_um",
    "spacing_m",
    "light",
    "light_azimuth_deg",
)
#: Other spellings of those columns (header names are matched case-insensitively, with spaces
#: and dashes read as underscores).
MANIFEST_ALIASES = {
    "incident": "incident_id",
    "agency_case_number": "case_number",
    "calibre": "caliber",
    "acquisition_date": "date",
    "filename": "file",
    "path": "file",
}
#: Extra columns kept as metadata without a warning: ground truth for validation runs.
GROUND_TRUTH_COLUMNS = ("firearm_id",)
DONE_LIST = "ingest-done.tsv"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped_done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "existing": list(self.existing),
            "skipped_done": self.skipped_done,
            "failed": [{"file": f, "error": e} for f, e in self.failed],
        }


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`ingest_paths`; ``report`` says what was stored before it."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__("ingest interrupted")
        self.report = report


class Progress:
    """A one-line progress bar on a stream (redrawn with \\r on a terminal; on a pipe, a line
    every 10 %)."""

    def __init__(self, total: int, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.done = 0
        self._last_decile = -1

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        frac = self.done / self.total
        el = time.monotonic() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else 0.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = f"[{bar}] {self.done}/{self.total} {el:5.1f}s eta {eta:5.1f}s {note}"[:100]
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            dec = int(frac * 10)
            if dec != self._last_decile or self.done >= self.total:
                self._last_decile = dec
                self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line that must not be overwritten by the bar (e.g. an error)."""
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, plus scan files (by suffix) found recursively in given folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SCAN_SUFFIXES)
            )
        else:
            out.append(p)
    seen: set[Path] = set()
    uniq = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            uniq.append(f)
    return uniq


def _column(name: str) -> str:
    key = "_".join(name.strip().lower().replace("-", " ").split())
    return MANIFEST_ALIASES.get(key, key)


def _delimiter(path: Path, header: str) -> str:
    """The delimiter under which the header names a ``file`` column: the extension's first
    (``.tsv``/``.tab``: tab, ``.csv``: comma), then tab, comma, semicolon."""
    first = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(path.suffix.lower())
    for d in dict.fromkeys(x for x in (first, "\t", ",", ";") if x):
        if "file" in {_column(c) for c in next(csv.reader([header], delimiter=d))}:
            return d
    raise ValueError(
        f"manifest {path}: the header row needs a 'file' column (comma- or tab-separated),"
        f" e.g. {','.join(MANIFEST_COLUMNS[:6])}; found {header.strip()[:120]!r}"
    )


@dataclass
class Manifest:
    """A parsed manifest: rows keyed by resolved path and by file name (values stripped,
    column names normalised); ``unknown``: extra columns that are neither casing fields nor
    known ground truth (kept as metadata all the same)."""

    path: Path
    delimiter: str
    columns: list[str]
    unknown: list[str]
    rows: dict[str, dict[str, str]]
    n_rows: int = 0

    def row_for(self, f: Path) -> dict[str, str] | None:
        return self.rows.get(str(f.resolve())) or self.rows.get(f.name)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a CSV or TSV manifest (see the module doc). ValueError on a bad header."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = f.readline()
        delimiter = _delimiter(path, header)
        f.seek(0)
        reader = csv.reader(f, delimiter=delimiter)
        columns = [_column(c) for c in next(reader)]
        dup = sorted({c for c in columns if columns.count(c) > 1 and c})
        if dup:
            raise ValueError(f"manifest {path}: column(s) {dup} appear more than once")
        unknown = [
            c for c in columns if c and c not in MANIFEST_COLUMNS and c not in GROUND_TRUTH_COLUMNS
        ]
        rows: dict[str, dict[str, str]] = {}
        n = 0
        for lineno, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):
                raise ValueError(
                    f"manifest {path}: line {lineno} has {len(cells)} cells, the header"
                    f" {len(columns)} (a {'tab' if delimiter == chr(9) else repr(delimiter)}"
                    " inside a value?)"
                )
            r = {c: v.strip() for c, v in zip(columns, cells, strict=False) if c}
            if not r.get("file"):
                continue
            n += 1
            rows[str((path.parent / r["file"]).resolve())] = r
            rows.setdefault(Path(r["file"]).name, r)
    return Manifest(path, delimiter, columns, unknown, rows, n)


def _positive_um(value: str | float | None, what: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        um = float(value)
    except ValueError:
        um = float("nan")
    if not (math.isfinite(um) and um > 0):
        raise ValueError(f"{what} must be a positive number; got {value!r}")
    return um


def _row_metadata(
    row: dict[str, str],
    *,
    agency: str | None,
    caliber: str | None,
    spacing_um: float | None,
    length_unit: str = "m",
    light: Any = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(casing fields for ``ingest_bytes``, extra metadata) of one manifest row (or {}).
    A row naming a ``light`` or ``light_azimuth_deg`` replaces the default ``light``."""
    um = _positive_um(row.get("spacing_um"), "manifest spacing_um")
    if um is None:
        m = _positive_um(row.get("spacing_m"), "manifest spacing_m")
        um = None if m is None else m * 1e6
    md = {
        "casing_id": row.get("casing_id") or None,
        "exhibit_id": row.get("exhibit_id") or None,
        "incident": row.get("incident_id") or None,
        "case_number": row.get("case_number") or None,
        "place": row.get("place") or None,
        "caliber": row.get("caliber") or caliber,
        "agency": row.get("agency") or agency,
        "date": row.get("date") or None,
        "spacing_um": um if um is not None else spacing_um,
        "length_unit": length_unit,
        "light": light,
    }
    if row.get("light") or row.get("light_azimuth_deg"):
        from ballistics.light import LightRequest

        md["light"] = LightRequest.parse(row.get("light"), row.get("light_azimuth_deg"))
    extra = {k: v for k, v in row.items() if k not in MANIFEST_COLUMNS and v}
    return md, extra


def _done_key(p: Path, agency: str) -> str:
    """The done-list key of a file for an agency: path, size, mtime and the agency (quoted, so
    a tab in it cannot shift the columns)."""
    st = p.stat()
    return f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\t{quote(agency, safe='')}"


def _load_done(path: Path) -> set[str]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        # path, size, mtime, agency, casing id. A torn last line is ignored, and so are the
        # agency-less lines of older versions: those files are read again, and found stored
        # (ingest is idempotent on content + agency).
        if len(parts) >= 5:
            keys.add("\t".join(parts[:4]))
    return keys


def ingest_paths(
    catalog: Catalog,
    paths: Sequence[str | os.PathLike[str]],
    *,
    manifest: str | os.PathLike[str] | Manifest | None = None,
    agency: str | None = None,
    caliber: str | None = None,
    spacing_um: float | None = None,
    progress: bool = True,
    stream: IO[str] | None = None,
    length_unit: str = "m",
    light: Any = None,
) -> IngestReport:
    """Ingest files and folders; see the module doc. Returns what happened per file.

    ``agency``, ``caliber``, ``spacing_um`` (pixel spacing in micrometres, for images
    without resolution tags) and ``light`` (``ballistics.lighting.LightRequest`` of 2-D
    images; None: detected) apply to every file whose manifest row does not say otherwise.

    Raises
    ------
    IngestInterrupted
        On Ctrl-C, with the report so far (every committed casing stays; a re-run resumes).
    ValueError
        A bad manifest header, before anything is ingested.
    """
    stream = stream or sys.stderr
    spacing_um = _positive_um(spacing_um, "spacing_um")
    man = (
        manifest if isinstance(manifest, Manifest) or manifest is None else read_manifest(manifest)
    )
    files = expand_paths(paths)
    done_path = catalog.data_dir / DONE_LIST
    done = _load_done(done_path)
    report = IngestReport()
    bar = Progress(len(files), stream, progress)
    if man is not None and man.unknown:
        bar.message(
            f"ingest: warning: manifest {man.path}: column(s) {', '.join(man.unknown)} are not"
            " casing fields; kept as metadata of each casing"
        )
    used: set[int] = set()
    try:
        with open(done_path, "a", encoding="utf-8") as done_f:
            for f in files:
                _ingest_one(
                    catalog, f, man, used, done, done_f, report, bar,
                    agency=agency, caliber=caliber, spacing_um=spacing_um,
                    length_unit=length_unit, light=light,
                )  # fmt: skip
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            catalog.snapshot()
        raise IngestInterrupted(report) from None
    if man is not None and man.n_rows > len(used):
        bar.message(
            f"ingest: warning: {man.n_rows - len(used)} of {man.n_rows} rows of manifest"
            f" {man.path} match none of the files ingested (paths are relative to its folder)"
        )
    catalog.snapshot()
    return report


def _ingest_one(
    catalog: Catalog,
    f: Path,
    man: Manifest | None,
    used: set[int],
    done: set[str],
    done_f: IO[str],
    report: IngestReport,
    bar: Progress,
    **defaults: Any,
) -> None:
    """One file: skip it if done, else store it (and its manifest metadata), then record it."""

    def failed(msg: str) -> None:
        report.failed.append((str(f), msg))
        bar.message(f"ingest: skipped {f}: {msg}")
        bar.update()

    row = (man.row_for(f) if man is not None else None) or {}
    if row:
        used.add(id(row))
    try:
        # keyed by the run's agency, not the row's: a re-run of the same command without the
        # manifest still resumes instead of storing the files again under the default agency
        key = _done_key(f, defaults["agency"] or catalog.config.default_agency)
    except OSError as e:
        return failed(e.strerror or str(e))
    if key in done:
        report.skipped_done += 1
        bar.update()
        return None
    try:
        md, extra = _row_metadata(row, **defaults)
        data = f.read_bytes()
        rec = catalog.ingest_bytes(data, f.name, md)
        catalog.store.set_metadata(rec.id, extra)  # before the done-list: a re-run redoes it
    except (ValueError, OSError, LookupError, MemoryError) as e:
        return failed(str(e).splitlines()[0] if str(e) else type(e).__name__)
    (report.added if rec.created else report.existing).append(rec.casing_id)
    done_f.write(f"{key}\t{rec.casing_id}\n")
    done_f.flush()
    os.fsync(done_f.fileno())
    done.add(key)
    bar.update()
    return None
