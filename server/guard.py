"""Cheap checks on every request before anything else runs: id lengths, the caller's address.

Ids are short (casing ids are 16 hex digits; incident ids are agency case numbers). A longer
one is refused with its length only, never echoed back: a 70 KB id must neither reach the
audit log nor overflow the client's message limit in the error.
"""

from __future__ import annotations

from typing import Any

import grpc

MAX_ID_CHARS = 128
ID_FIELDS = ("casing_id", "casing_a", "casing_b", "candidate_id", "incident_id")


def id_problem(message: Any) -> str | None:
    """Why the request's id fields are unacceptable, or None. Non-messages pass (streams)."""
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:
        return None
    for name in ID_FIELDS:
        if name not in descriptor.fields_by_name:
            continue
        value = getattr(message, name)
        if isinstance(value, str) and len(value) > MAX_ID_CHARS:
            return (
                f"{name} is {len(value):,} characters long; ids are at most {MAX_ID_CHARS}"
                " characters"
            )
    return None


def peer_of(context: grpc.ServicerContext) -> str:
    """The client's address as gRPC reports it (``ipv4:127.0.0.1:53412``), or ''."""
    try:
        return str(context.peer() or "")[:200]
    except Exception:  # a test double without peer(): the record just lacks the address
        return ""
