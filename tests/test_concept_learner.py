"""The concept learner's whitening (a name the model cannot read) and review's choice of questions, on vectors
drawn here: a domain whose pictures all share a few strong directions, the concept in a weak one."""

from __future__ import annotations

import numpy as np

from retrieval.concepts import learner


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _domain(n: int = 4000, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors: a shared offset, 3 strong nuisance directions, noise; members (10 %) step along a weak one."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * 0.05
    x[:, 0] += 1.0
    x[:, 1:4] += rng.normal(size=(n, 3)) * 0.6
    member = rng.random(n) < 0.1
    x[member, 5] += 0.12
    return _unit(x), member


def _ap(scores: np.ndarray, member: np.ndarray, labelled: np.ndarray) -> float:
    s = scores.astype(np.float64).copy()
    s[labelled] = -np.inf
    hits = member[np.argsort(-s)[:100]].astype(float)
    return float((np.cumsum(hits) / np.arange(1, 101) * hits).sum() / 100)


def test_whitening_is_unit_and_decorrelates_the_library() -> None:
    vectors, _ = _domain()
    shift, whiten = learner.whitening(vectors[:2000], eps=0.0)
    x = learner.whitened(vectors[2000:], shift, whiten)
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert np.allclose(x[:, -1], 1 / np.sqrt(2))  # the intercept feature
    z = (vectors[2000:] - shift) @ whiten
    cov = np.cov(z.T)
    assert np.abs(cov - np.eye(len(cov))).max() < 0.25  # near identity on rows it was not fitted on


def test_unknown_word_is_fitted_whitened_and_finds_a_weak_direction() -> None:
    vectors, member = _domain()
    rng = np.random.default_rng(1)
    library = vectors[rng.choice(len(vectors), 1024, replace=False)]
    pos = rng.choice(np.flatnonzero(member), 8, replace=False)
    neg = rng.choice(np.flatnonzero(~member), 8, replace=False)
    head = learner.fit(vectors[pos], vectors[neg], library, None)
    assert head.whiten is not None and head.w.shape == (vectors.shape[1] + 1,)
    raw = learner.Head(learner.ridge(vectors[pos], vectors[neg], library, learner.LAMBDA_UNKNOWN),
                       vectors[pos], vectors[neg], head.knows)
    labelled = np.r_[pos, neg]
    assert _ap(head.score(vectors), member, labelled) > _ap(raw.score(vectors), member, labelled)
    # the direction a vector index searches by lives in the stored vectors' space and points at the members
    d = head.direction
    assert d.shape == (vectors.shape[1],) and abs(float(np.linalg.norm(d)) - 1) < 1e-5
    assert (vectors[member] @ d).mean() > (vectors[~member] @ d).mean()


def test_known_word_keeps_the_raw_space_and_its_prior() -> None:
    vectors, member = _domain()
    text = np.eye(vectors.shape[1], dtype=np.float32)[5]  # a name whose text vector points at the members
    pos = np.argsort(-vectors[:, 5])[:4]  # members the name's vector ranks first: the model knows the word
    head = learner.fit(vectors[pos], vectors[:0], vectors[:1024], text)
    assert member[pos].all() and head.knows >= learner.KNOWS_AT and head.whiten is None
    assert float(head.direction @ text) > 0.5  # the prior holds
    x = vectors[:500]
    want = x @ head.w + head.alpha * np.exp(-head.beta * (1 - x @ head.positives.T)).mean(1)
    assert np.allclose(head.score(x), want, atol=1e-4)  # the folded score is the formula


def test_review_asks_nearest_the_threshold() -> None:
    scores = np.array([3.0, 2.0, 0.05, -0.01, 1.0, -2.0, 0.2], np.float32)
    asked = learner.uncertain(scores, 0.0, np.array([3], np.int64), 3)
    assert list(asked) == [2, 6, 4]  # the labelled row 3 is never asked; nor the best (0, 1) by default
    assert list(learner.uncertain(scores, 0.0, np.zeros(0, np.int64), 3, top=1)) == [0, 3, 2]


def test_whitened_scores_fold_the_whitening_and_match_the_whitened_rows() -> None:
    vectors, member = _domain()
    rng = np.random.default_rng(2)
    pos, neg = np.flatnonzero(member)[:5], np.flatnonzero(~member)[:7]
    head = learner.fit(vectors[pos], vectors[neg], vectors[rng.choice(len(vectors), 1024, replace=False)], None)
    assert head.shift is not None and head.whiten is not None
    e = learner.whitened(vectors, head.shift, head.whiten)  # every row whitened: what the fold stands for
    want = (e @ head.w + head.alpha * np.exp(-head.beta * (1 - e @ head.positives.T)).mean(1)
            - head.alpha * np.exp(-head.beta * (1 - e @ head.negatives.T)).mean(1))
    first = head.score(vectors)
    assert np.allclose(first, want, atol=1e-4)
    assert np.array_equal(head.score(vectors), first)  # the second call reads the kept row norms
    assert np.allclose(head.score(vectors[:100].copy()), want[:100], atol=1e-4)  # another array: computed anew


def test_scores_in_row_chunks_equal_one_pass(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    vectors, member = _domain(n=1000)
    pos, neg = np.flatnonzero(member)[:4], np.flatnonzero(~member)[:4]
    head = learner.fit(vectors[pos], vectors[neg], vectors[:600], None)
    whole = head.score(vectors)
    monkeypatch.setattr(learner, "NORMS_CHUNK", 7)  # bounded memory: rows x labelled a chunk at a time
    assert np.allclose(head.score(vectors.copy()), whole, atol=1e-5)
