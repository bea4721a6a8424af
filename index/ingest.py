"""Bulk ingest of scan files into a :class:`~index.service.Catalog`, and re-extraction.

* Resumable: every file whose casing is committed is appended (and fsync'ed) to
  ``<data_dir>/ingest-done.tsv`` keyed by absolute path, size and mtime; a rerun skips those
  files without reading them. (Ingest is also idempotent on content + agency, so a file
  committed just before a crash but not yet in the done-list is not duplicated.)
* A bad file is reported on one line and skipped; it never aborts the batch, and because each
  casing is one SQLite transaction it cannot leave a half-written record.
* Metadata manifest (CSV with columns ``file,casing_id,incident_id,caliber,agency,date``):
  ``file`` is resolved relative to the manifest's folder and matched by path, else by name.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Catalog

SCAN_SUFFIXES = {".x3p", ".png", ".tif", ".tiff", ".jpg", ".jpeg"}
MANIFEST_COLUMNS = ("file", "casing_id", "incident_id", "caliber", "agency", "date")
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


def read_manifest(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Manifest rows keyed by resolved path and by file name. ValueError on a bad header."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "file" not in cols:
            raise ValueError(
                f"manifest {path}: needs a header with columns {','.join(MANIFEST_COLUMNS)}"
            )
        unknown = set(cols) - set(MANIFEST_COLUMNS)
        if unknown:
            raise ValueError(f"manifest {path}: unknown columns {sorted(unknown)}")
        rows: dict[str, dict[str, str]] = {}
        for row in reader:
            r = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not r.get("file"):
                continue
            rows[str((path.parent / r["file"]).resolve())] = r
            rows.setdefault(Path(r["file"]).name, r)
    return rows


def _done_key(p: Path) -> str:
    st = p.stat()
    return f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"


def _load_done(path: Path) -> set[str]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 4:  # path, size, mtime, casing id (a torn last line is ignored)
            keys.add("\t".join(parts[:3]))
    return keys


def ingest_paths(
    catalog: Catalog,
    paths: Sequence[str | os.PathLike[str]],
    *,
    manifest: str | os.PathLike[str] | None = None,
    agency: str | None = None,
    caliber: str | None = None,
    progress: bool = True,
    stream: IO[str] | None = None,
    length_unit: str = "m",
) -> IngestReport:
    """Ingest files and folders; see the module doc. Returns what happened per file.
    ``length_unit``: of the X3P files' lengths ("m", the standard, or "um")."""
    stream = stream or sys.stderr
    meta = read_manifest(manifest) if manifest else {}
    files = expand_paths(paths)
    done_path = catalog.data_dir / DONE_LIST
    done = _load_done(done_path)
    report = IngestReport()
    bar = Progress(len(files), stream, progress)
    with open(done_path, "a", encoding="utf-8") as done_f:
        for f in files:
            try:
                key = _done_key(f)
            except OSError as e:
                report.failed.append((str(f), e.strerror or str(e)))
                bar.message(f"ingest: skipped {f}: {e.strerror or e}")
                bar.update()
                continue
            if key in done:
                report.skipped_done += 1
                bar.update()
                continue
            row = meta.get(str(f.resolve())) or meta.get(f.name) or {}
            md = {
                "casing_id": row.get("casing_id") or None,
                "incident": row.get("incident_id") or None,
                "caliber": row.get("caliber") or caliber,
                "agency": row.get("agency") or agency,
                "date": row.get("date") or None,
                "length_unit": length_unit,
            }
            try:
                data = f.read_bytes()
                rec = catalog.ingest_bytes(data, f.name, md)
            except (ValueError, OSError, LookupError, MemoryError) as e:
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                report.failed.append((str(f), msg))
                bar.message(f"ingest: skipped {f}: {msg}")
                bar.update()
                continue
            (report.added if rec.created else report.existing).append(rec.casing_id)
            done_f.write(f"{key}\t{rec.casing_id}\n")
            done_f.flush()
            os.fsync(done_f.fileno())
            done.add(key)
            bar.update()
    catalog.snapshot()
    return report


def reextract(catalog: Catalog, *, rebuild: bool = True, batch: int = 64) -> int:
    """Recompute descriptors of every live casing lacking ``catalog.extractor_version`` (after
    the descriptor code changed), from the stored prepared surface - or, when none is stored,
    from the original file. Old-version descriptors are dropped when all are done; then the
    indexes are rebuilt. Returns how many casings were re-described."""
    store = catalog.store
    eng = catalog.engine
    version = catalog.extractor_version
    todo = store.casings_missing_version(version)
    pending: dict[int, dict[str, Any]] = {}
    n = 0
    for rowid in todo:
        surface = store.load_surface(rowid)
        if surface is not None:
            descs = eng.describe(eng.load(surface))
        else:
            rec = store.get_casing(rowid)
            proc = eng.process(store.read_object(rec.sha256), rec.filename, rec.spacing_m)
            store.put_surface(rowid, proc.surface)
            if getattr(proc, "quality", None) is not None:
                store.put_quality(rowid, proc.quality)
            descs = proc.descriptors
        pending[rowid] = descs
        n += 1
        if len(pending) >= batch:
            store.replace_descriptors(pending, version)
            pending = {}
    if pending:
        store.replace_descriptors(pending, version)
    if n:
        store.drop_other_versions(version)
    if rebuild:
        catalog.rebuild()
    return n
