"""Sharing policy: unit cases and a property test over random policies through the service."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.policy import PolicyError, SharingPolicy

POLICY = {
    "agencies": {"PD-North": "north", "PD-South": "south", "SO-East": "east", "PD-N2": "north"},
    "jurisdictions": {"north": ["south"], "south": ["north"], "east": []},
}


def test_allowed_agencies() -> None:
    p = SharingPolicy.from_dict(POLICY)
    assert p.allowed_agencies("PD-North") == {"PD-North", "PD-N2", "PD-South"}
    assert p.allowed_agencies("SO-East") == {"SO-East"}
    assert p.allowed_agencies("Unknown-PD") == {"Unknown-PD"}  # unlisted: only itself
    assert p.allowed_agencies("PD-North", jurisdictions=["south", "east"]) == {"PD-South"}
    assert SharingPolicy.isolated().allowed_agencies("X") == {"X"}


def test_sharing_is_not_implied_symmetric() -> None:
    p = SharingPolicy.from_dict(
        {"agencies": {"A": "a", "B": "b"}, "jurisdictions": {"a": ["b"], "b": []}}
    )
    assert p.may_see("A", "B") and not p.may_see("B", "A")


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"agencies": {"A": 3}},
        {"agencies": {"A": "a"}, "jurisdictions": {"a": "b"}},
        {"agencies": {"A": "a"}, "jurisdictions": {"a": ["nowhere"]}},
    ],
)
def test_bad_policy(doc: object) -> None:
    with pytest.raises(PolicyError):
        SharingPolicy.from_dict(doc)


def test_bad_policy_file(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{nope")
    with pytest.raises(PolicyError, match="not valid JSON"):
        SharingPolicy.from_file(tmp_path / "p.json")


AGENCIES = [f"AG{i}" for i in range(6)]
JURIS = ["j0", "j1", "j2", "j3"]


@st.composite
def policies(draw: st.DrawFn) -> dict[str, object]:
    agencies = {a: draw(st.sampled_from(JURIS)) for a in AGENCIES}
    jur = {j: draw(st.lists(st.sampled_from(JURIS), unique=True, max_size=4)) for j in JURIS}
    return {"agencies": agencies, "jurisdictions": jur}


@settings(max_examples=200, deadline=None)
@given(policies(), st.sampled_from(AGENCIES))
def test_allowed_matches_definition(doc: dict, requester: str) -> None:
    p = SharingPolicy.from_dict(doc)
    own = doc["agencies"][requester]
    visible = {own, *doc["jurisdictions"].get(own, [])}
    expected = {a for a, j in doc["agencies"].items() if j in visible}
    assert p.allowed_agencies(requester) == expected


# --- end to end: random policies through the real service (fake store) ---------------------


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory):
    """One server, one examiner and one casing per agency; the test swaps the policy's content."""
    from server.app import create_server
    from server.auth import Authenticator, new_token_entry
    from server.client import Client
    from tests.test_server_machinery import FakeBackend
    from tests.test_server_support import scratch_audit

    tmp = tmp_path_factory.mktemp("policy")
    tokens, entries = {}, []
    for a in AGENCIES:
        tokens[a], entry = new_token_entry(f"exam-{a}", a, "examiner")
        entries.append(entry)
    backend = FakeBackend()
    policy = SharingPolicy.isolated()
    audit = scratch_audit(tmp)
    server, port = create_server(
        backend, "127.0.0.1:0", auth=Authenticator.from_dict(entries), policy=policy, audit=audit
    )
    server.start()
    address = f"127.0.0.1:{port}"
    for a in AGENCIES:
        with Client(address, tokens[a]) as c:
            c.submit(b"SCAN " + a.encode(), search=False)
    yield address, policy, tokens, backend
    server.stop(1)
    audit.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(policies(), st.sampled_from(AGENCIES))
def test_search_never_leaks(policy_server, doc: dict, requester: str) -> None:
    from server.client import Client

    address, policy, tokens, backend = policy_server
    new = SharingPolicy.from_dict(doc)
    policy.agencies, policy.jurisdictions = new.agencies, new.jurisdictions
    allowed = policy.allowed_agencies(requester)
    with Client(address, tokens[requester]) as c:
        res = c.search(file=b"SCAN query", max_results=200)
        listed = {x.agency for x in c.list().casings}
    returned = {x.agency for x in res.combined.candidates}
    assert returned <= allowed  # nothing outside the policy
    assert returned == allowed  # and every allowed agency's casing when asking for all
    assert listed == allowed
    assert backend.searched_agencies[-1] == allowed  # the filter went into the store
