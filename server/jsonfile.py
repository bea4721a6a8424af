"""Reading the service's JSON configuration files with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path, error: type[Exception], what: str) -> Any:
    """Parse ``path`` as JSON; raise ``error`` saying which ``what`` file failed and why."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except OSError as e:
        raise error(f"cannot read {what} {p}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise error(f"{what} {p} is not valid JSON: {e}") from e
