"""Generate the Python gRPC stubs from proto/ into server/proto_gen/ (or check they are current).

    python scripts/gen_proto.py           # regenerate server/proto_gen/
    python scripts/gen_proto.py --check   # exit 1 if the committed stubs differ from the protos

Every ``proto/ballistics/v1/*.proto`` becomes ``server/proto_gen/<name>_pb2.py``, ``.pyi`` and
``<name>_pb2_grpc.py``. protoc writes absolute imports (``from ballistics.v1 import x_pb2``),
which would collide with the ``ballistics`` pipeline package; they are rewritten to
package-relative imports (``from . import x_pb2``).
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = Path("ballistics") / "v1"
OUT_DIR = ROOT / "server" / "proto_gen"

INIT_TEXT = (
    '"""Generated gRPC stubs for ballistics.v1. Do not edit: run `make proto`'
    ' (scripts/gen_proto.py)."""\n'
)

_ABS_IMPORT = re.compile(r"^from ballistics\.v1 import (\w+_pb2)", re.MULTILINE)


def _protos() -> list[Path]:
    protos = sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    if not protos:
        raise SystemExit(f"gen_proto: no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    return protos


def generate(out_dir: Path) -> list[Path]:
    """Run protoc into ``out_dir`` (created), flattening the package path; return the files."""
    import grpc_tools
    from grpc_tools import protoc  # imported here so --help works without grpcio-tools

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in _protos()),
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise SystemExit(f"gen_proto: protoc failed with status {rc} (see messages above)")
        written = []
        for src in sorted((Path(tmp) / PROTO_PACKAGE).iterdir()):
            if src.suffix not in (".py", ".pyi"):
                continue
            text = _ABS_IMPORT.sub(r"from . import \1", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    init = out_dir / "__init__.py"
    init.write_text(INIT_TEXT)
    written.append(init)
    return sorted(written)


def check() -> int:
    """Regenerate into a temporary directory and compare with the committed stubs."""
    with tempfile.TemporaryDirectory(prefix="gen_proto_check_") as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    committed = (
        {p.name: p.read_text() for p in OUT_DIR.iterdir() if p.suffix in (".py", ".pyi")}
        if OUT_DIR.is_dir()
        else {}
    )
    problems = []
    for name in sorted(set(fresh) | set(committed)):
        if name not in committed:
            problems.append(f"missing: server/proto_gen/{name}")
        elif name not in fresh:
            problems.append(f"stale (no proto generates it): server/proto_gen/{name}")
        elif fresh[name] != committed[name]:
            diff = difflib.unified_diff(
                committed[name].splitlines(), fresh[name].splitlines(), lineterm="", n=1
            )
            first = "\n".join(list(diff)[:12])
            problems.append(f"out of date: server/proto_gen/{name}\n{first}")
    if problems:
        print(
            "gen_proto --check: the generated stubs do not match proto/:\n  "
            + "\n  ".join(problems)
            + "\nRun `make proto` (python scripts/gen_proto.py) and commit server/proto_gen/.",
            file=sys.stderr,
        )
        return 1
    print(f"gen_proto --check: server/proto_gen/ is current ({len(fresh)} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="verify the committed stubs are current")
    args = ap.parse_args(argv)
    if args.check:
        return check()
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    files = generate(OUT_DIR)
    print(f"gen_proto: wrote {len(files)} files to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
