"""Who may search whose data: agencies belong to jurisdictions, jurisdictions share by agreement.

The policy file is JSON::

    {
      "agencies": {"PD-North": "north", "PD-South": "south", "Sheriff-East": "east"},
      "jurisdictions": {"north": ["south"], "south": ["north"], "east": []}
    }

``jurisdictions[J]`` lists the jurisdictions whose data agencies of ``J`` can search (like NIBIN
regions and IBIN cross-border agreements); a jurisdiction always sees itself. Sharing is not
implied to be symmetric: list it on both sides for a two-way agreement. An agency missing from
the policy is its own jurisdiction and sees only its own data; so does everyone when no policy
file is given (nothing is shared unless a policy says so).

:meth:`SharingPolicy.allowed_agencies` is passed *into* the index filter, so casings outside
the policy are never scored or returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .jsonfile import read_json


class PolicyError(ValueError):
    """The policy file is unusable; the message says why."""


class SharingPolicy:
    def __init__(
        self,
        agencies: Mapping[str, str] | None = None,
        jurisdictions: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.agencies: dict[str, str] = dict(agencies or {})
        self.jurisdictions: dict[str, frozenset[str]] = {
            j: frozenset(v) for j, v in (jurisdictions or {}).items()
        }

    @classmethod
    def isolated(cls) -> SharingPolicy:
        """No sharing: every agency sees only its own casings."""
        return cls()

    @classmethod
    def from_file(cls, path: str | Path) -> SharingPolicy:
        return cls.from_dict(read_json(path, PolicyError, "policy file"), source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "policy") -> SharingPolicy:
        if not isinstance(doc, dict):
            raise PolicyError(f"{source}: expected an object with 'agencies' and 'jurisdictions'")
        agencies = doc.get("agencies", {})
        jurisdictions = doc.get("jurisdictions", {})
        if not isinstance(agencies, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in agencies.items()
        ):
            raise PolicyError(f"{source}: 'agencies' must map agency -> jurisdiction (strings)")
        if not isinstance(jurisdictions, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v)
            for v in jurisdictions.values()
        ):
            raise PolicyError(
                f"{source}: 'jurisdictions' must map jurisdiction -> list of jurisdictions"
            )
        known = set(agencies.values()) | set(jurisdictions)
        for j, seen in jurisdictions.items():
            unknown = [x for x in seen if x not in known]
            if unknown:
                raise PolicyError(
                    f"{source}: jurisdiction {j!r} shares with unknown jurisdiction(s) {unknown};"
                    " every jurisdiction must have an agency or an entry of its own"
                )
        return cls(agencies, jurisdictions)

    def jurisdiction_of(self, agency: str) -> str:
        """The agency's jurisdiction; an unlisted agency is a jurisdiction of its own."""
        return self.agencies.get(agency, f"agency:{agency}")

    def visible_jurisdictions(self, agency: str) -> frozenset[str]:
        own = self.jurisdiction_of(agency)
        return frozenset({own}) | self.jurisdictions.get(own, frozenset())

    def allowed_agencies(
        self, requesting_agency: str, *, jurisdictions: Iterable[str] | None = None
    ) -> set[str]:
        """Agencies whose casings ``requesting_agency`` may search, see and compare.

        ``jurisdictions`` (a search filter) can only narrow the set, never widen it.
        """
        visible = self.visible_jurisdictions(requesting_agency)
        if jurisdictions:
            visible = visible & frozenset(jurisdictions)
        allowed = {a for a, j in self.agencies.items() if j in visible}
        if self.jurisdiction_of(requesting_agency) in visible:
            allowed.add(requesting_agency)
        return allowed

    def may_see(self, requesting_agency: str, owner_agency: str) -> bool:
        return owner_agency in self.allowed_agencies(requesting_agency)
