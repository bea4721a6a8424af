"""The screening stage between descriptor search and full comparison (index.search.Screen,
ballistics.screen)."""

from __future__ import annotations

import numpy as np
import pytest

from ballistics.errors import BallisticsError
from index.search import SCREEN_KEY
from index.service import Catalog, CatalogConfig
from index.testing import FakeEngine


def _fill(cat: Catalog, guns: int = 12, shots: int = 3) -> list:
    return [
        cat.ingest_bytes(f"FAKE:{g}:{s}".encode(), f"g{g}s{s}.x3p", {"caliber": "9mm"})
        for g in range(guns)
        for s in range(shots)
    ]


def test_screen_keeps_the_best_for_full_comparison(tmp_path):
    eng = FakeEngine(with_screen=True)
    with Catalog.open(tmp_path, CatalogConfig(compare_k=6), engine=eng) as cat:
        recs = _fill(cat)
        q = recs[0]
        eng.calls = 0
        res = cat.search(q.casing_id, top=4, rerank_k=30)
        assert res.n_candidates == 30 and res.n_screened_out == 24 and res.n_rescored == 6
        assert eng.calls == 6
        assert all(c.rescored and c.score is not None for c in res.combined)
        # the six compared are exactly the six best screen scores of the thirty
        every = cat.search(q.casing_id, top=30, rerank_k=30, compare_k=30).combined
        best6 = sorted(every, key=lambda c: -c.screen_score)[:6]
        shown = {c.casing_id for c in res.combined}
        assert shown <= {c.casing_id for c in best6}
        # the siblings (same gun) survive the screen and come first
        assert {c.casing_id for c in res.combined[:2]} == {recs[1].casing_id, recs[2].casing_id}
        # asking for a longer list than compare_k compares at least the list shown
        eng.calls = 0
        res = cat.search(q.casing_id, top=10, rerank_k=30)
        assert res.n_rescored == 10 == eng.calls and all(c.rescored for c in res.combined)


def test_compare_k_zero_compares_every_candidate(tmp_path):
    eng = FakeEngine(with_screen=True)
    with Catalog.open(tmp_path, CatalogConfig(compare_k=6), engine=eng) as cat:
        recs = _fill(cat)
        eng.calls = 0
        res = cat.search(recs[0].casing_id, top=10, rerank_k=30, compare_k=0)
        assert res.n_rescored == res.n_candidates == 30 and res.n_screened_out == 0
        assert eng.calls == 30
        with pytest.raises(ValueError, match="compare_k"):
            cat.search(recs[0].casing_id, compare_k=-1)


def test_candidate_without_signature_is_always_compared(tmp_path):
    eng = FakeEngine(with_screen=True)
    with Catalog.open(tmp_path, CatalogConfig(compare_k=3), engine=eng) as cat:
        recs = _fill(cat)
        q = recs[0]
        first = cat.search(q.casing_id, top=30, rerank_k=30, compare_k=30)
        worst = min(first.combined, key=lambda c: c.screen_score)
        rowid = cat.get(worst.casing_id).id
        with cat.store._tx() as con:
            con.execute(
                "DELETE FROM descriptors WHERE casing = ? AND region = ?", (rowid, SCREEN_KEY)
            )
        res = cat.search(q.casing_id, top=3, rerank_k=30)
        assert res.n_rescored == 3 and worst.casing_id in {c.casing_id for c in res.combined}
        again = {c.casing_id: c for c in res.combined}[worst.casing_id]
        assert again.rescored and again.screen_score is None


def test_signature_is_stored_but_never_indexed(tmp_path):
    eng = FakeEngine(with_screen=True)
    with Catalog.open(tmp_path, engine=eng) as cat:
        recs = _fill(cat, guns=4)
        assert set(cat.indexes) == {"breech_face"}
        assert SCREEN_KEY in cat.store.descriptors_of(recs[0].id, eng.extractor_version)
    with Catalog.open(tmp_path, engine=eng) as cat:  # start-up path
        assert set(cat.indexes) == {"breech_face"} and cat.check()
        cat.rebuild()
        assert set(cat.indexes) == {"breech_face"}
        assert not (tmp_path / "index" / f"{SCREEN_KEY}.faiss").exists()


def test_no_screen_without_engine_support(tmp_path):
    eng = FakeEngine()  # no signatures: every candidate is compared, as before
    with Catalog.open(tmp_path, CatalogConfig(compare_k=3), engine=eng) as cat:
        recs = _fill(cat, guns=5)
        res = cat.search(recs[0].casing_id, top=5, rerank_k=14)
        assert res.n_rescored == 14 and res.n_screened_out == 0


# -- ballistics.screen on synthetic casings ------------------------------------------------


@pytest.fixture(scope="module")
def shots():
    from ballistics.pipeline import prepare
    from ballistics.synth import fire, make_firearms

    guns = make_firearms(2, seed=5, group_fraction=0.0)
    return [
        [prepare(fire(g, shot_seed=10 * i + k)[0]) for k in range(2)] for i, g in enumerate(guns)
    ]


def test_screen_scores_same_gun_above_different_gun(shots):
    from ballistics.screen import screen, signature

    (a1, a2), (b1, b2) = shots
    sa1, sa2, sb1, sb2 = (signature(p) for p in (a1, a2, b1, b2))
    s, _ = screen(sa1, np.stack([sa1, sa2, sb1, sb2]))
    assert s[0] == pytest.approx(1.0, abs=1e-5)
    assert s[1] > max(s[2], s[3])
    s2, _ = screen(sb1, np.stack([sb2, sa1, sa2]))
    assert s2[0] > max(s2[1], s2[2])


@pytest.mark.parametrize("angle", [30.0, 117.0])
def test_screen_estimates_rotation_modulo_180(shots, angle):
    from ballistics.pipeline import PreparedCasing
    from ballistics.register import rotate
    from ballistics.screen import screen, signature

    p = shots[0][0]
    s = p.surface
    d, m = rotate(np.where(s.mask, s.data, 0.0), s.mask, -angle)
    turned = PreparedCasing(
        s.evolve("turn", {"deg": -angle}, {}, data=np.where(m, d, np.nan), mask=m),
        p.segmentation,
    )
    _, rot = screen(signature(p), signature(turned)[None])
    err = abs((rot[0] - angle % 180 + 90) % 180 - 90)
    assert err <= 3.0, (rot[0], angle)


def test_screen_refuses_wrong_shapes():
    from ballistics.screen import SIGNATURE_SHAPE, screen

    good = np.zeros(SIGNATURE_SHAPE, np.float32)
    with pytest.raises(BallisticsError, match="screening signature"):
        screen(good, np.zeros((3, 5, 7), np.float32))
    with pytest.raises(BallisticsError, match="query signature"):
        screen(np.zeros(10), good[None])


def test_under_a_deadline_the_best_screened_are_compared_first(tmp_path):
    eng = FakeEngine(with_screen=True)
    eng.score_delay_s = 0.05
    with Catalog.open(tmp_path, CatalogConfig(workers=1, compare_k=30), engine=eng) as cat:
        recs = _fill(cat)
        res = cat.search(recs[0].casing_id, top=30, rerank_k=30, deadline_s=0.2)
        done = [c for c in res.combined if c.rescored]
        rest = [c for c in res.combined if not c.rescored]
        assert res.partial and done and rest
        assert min(c.screen_score for c in done) >= max(c.screen_score for c in rest)


def test_vectorised_screen_equals_a_direct_shift_search():
    """``screen`` / ``screen_spectra`` (batched rfft, einsum, in chunks) against the
    definition: the best of the circular correlations over every angle shift."""
    from ballistics.screen import ANGLES, SIGNATURE_SHAPE, screen, screen_spectra, spectra

    rng = np.random.default_rng(3)
    sigs = rng.standard_normal((7, *SIGNATURE_SHAPE)).astype(np.float32)
    q = sigs[0]
    direct = np.array(
        [
            [float((q * np.roll(c, -k, axis=1)).sum()) for k in range(ANGLES)]
            for c in sigs.astype(np.float64)
        ]
    )
    want, want_k = direct.max(axis=1), direct.argmax(axis=1)
    got, rot = screen_spectra(q, spectra(sigs, chunk=3), chunk=2)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.array_equal(rot, want_k * 180.0 / ANGLES)
    assert np.allclose(screen(q, sigs)[0], got, atol=1e-6)
    with pytest.raises(BallisticsError, match="spectra have shape"):
        screen_spectra(q, np.zeros((2, 3, 4), np.complex64))


class ContraryScreenEngine(FakeEngine):
    """A screen that ranks a casing's siblings last (it scores dissimilarity)."""

    def __init__(self) -> None:
        super().__init__(with_screen=True)

    def _screen(self, query: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        return -super()._screen(query, signatures)


def test_rescue_compares_the_best_set_aside_by_coarse_similarity(tmp_path):
    """The screen sets the siblings aside; the rescue stage's coarse score finds them again
    among the candidates set aside, and they are compared and ranked first. Without a
    rescue they are not compared."""
    eng = ContraryScreenEngine()
    cfg = CatalogConfig(compare_k=3, fusion_weight=None, rescue_k=2)
    with Catalog.open(tmp_path, cfg, engine=eng) as cat:
        recs = _fill(cat)
        q = recs[0]
        sibs = {recs[1].casing_id, recs[2].casing_id}
        plain = cat.search(q.casing_id, top=5, rerank_k=30)
        assert plain.n_rescued == 0 and "rescue" not in plain.stage_s
        assert not any(c.rescored for c in plain.combined if c.casing_id in sibs)
        res = cat.search(q.casing_id, top=5, rerank_k=30, rescue_head=30)
        # stage 2 keeps max(compare_k, top) = 5; the rescue adds 2
        assert res.n_rescued == 2 and res.n_rescored == 5 + 2 and res.stage_s["rescue"] >= 0
        assert {c.casing_id for c in res.combined[:2]} == sibs
        assert all(c.rescored for c in res.combined[:2])
        assert res.as_dict()["n_rescued"] == 2
        # a head within compare_k rescues nothing; a negative one is refused
        assert cat.search(q.casing_id, top=5, rerank_k=30, rescue_head=5).n_rescued == 0
        with pytest.raises(ValueError, match="rescue_head"):
            cat.search(q.casing_id, rescue_head=-1)
