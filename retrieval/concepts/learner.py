"""The concept learner: a ridge head against the library, the name's text vector as a prior where the model knows
the word, and a small Tip-Adapter-style cache of the labelled examples.

Chosen by ``benchmarks/concepts.py`` (docs/concepts.md has the table):

* **ridge head** ``w``: least squares of +1 (examples, weighted up to balance) against -1 (non-examples and a
  random sample of the library, which is almost all non-members), closed form in ``dim`` x ``dim``: about a
  millisecond. Against the library it whitens the space, which ``--like`` (the mean of the examples) cannot.
* **text prior**: where the name's text vector ranks the examples high among the library (:func:`knows_word`),
  the model knows the word: the head is regularised strongly towards that vector instead of towards zero, so a
  concept named ``sneaker`` starts where the zero-shot prompt is and examples only move it. A name the model
  cannot read (``rex``) gets a weak, prior-free fit.
* **cache**: ``alpha * mean(exp(-beta (1 - x.p)))`` over the examples minus the same over the non-examples, a
  local, non-linear correction that grows with feedback (Tip-Adapter's affinity).

Scores are not cosines: the head is fitted to +1 for members and -1 for the rest, so 0 is its calibrated
membership threshold (:func:`threshold`); examples are members and non-examples are not, whatever they score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAME_TEMPLATES = ("a photo of a {}.", "a {}.", "the {}.")
KNOWS_AT = 0.85
"""Mean percentile of the examples under the name's text vector (among the library sample) from which the model
is taken to know the word."""
LAMBDA_KNOWN, LAMBDA_UNKNOWN = 10.0, 0.03
ALPHA, BETA = 0.1, 20.0


def name_prompts(name: str) -> list[str]:
    """The prompts whose mean text vector is a concept name's prior."""
    return [t.format(name) for t in NAME_TEMPLATES]


@dataclass(frozen=True)
class Head:
    """A fitted concept: score(x) = x.w + cache(x)."""

    w: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    knows: float
    alpha: float = ALPHA
    beta: float = BETA

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of rows of unit vectors (higher: more likely a member)."""
        x = np.asarray(vectors, np.float32)
        s = x @ self.w
        if self.alpha and len(self.positives):
            s = s + self.alpha * np.exp(-self.beta * (1 - x @ self.positives.T)).mean(1)
        if self.alpha and len(self.negatives):
            s = s - self.alpha * np.exp(-self.beta * (1 - x @ self.negatives.T)).mean(1)
        return s.astype(np.float32)

    @property
    def direction(self) -> np.ndarray:
        """The unit vector of the linear part (what a vector index can search by)."""
        return (self.w / max(float(np.linalg.norm(self.w)), 1e-12)).astype(np.float32)


def knows_word(positives: np.ndarray, library: np.ndarray, text: np.ndarray | None) -> float:
    """How well the name's text vector ranks the examples among the library: the mean percentile (0.5: chance)."""
    if text is None or not len(positives) or not len(library):
        return 0.5
    lib = np.sort(library @ text)
    return float(np.mean(np.searchsorted(lib, positives @ text) / len(lib)))


def ridge(positives: np.ndarray, negatives: np.ndarray, library: np.ndarray, lam: float,
          prior: np.ndarray | None = None) -> np.ndarray:
    """Weighted least squares of +1 (examples, up-weighted to the library's size) against -1, ridge towards
    ``prior`` (or zero)."""
    dim = positives.shape[1]
    x = np.vstack([positives, negatives, library]).astype(np.float64)
    y = np.r_[np.ones(len(positives)), -np.ones(len(negatives) + len(library))]
    weight = np.r_[np.full(len(positives), max(len(library), 1) / max(len(positives), 1)),
                   np.ones(len(negatives) + len(library))]
    xw = x * weight[:, None]
    a = xw.T @ x + lam * np.eye(dim)
    b = xw.T @ y + (lam * prior if prior is not None else 0.0)
    return np.linalg.solve(a, b).astype(np.float32)


def fit(positives: np.ndarray, negatives: np.ndarray, library: np.ndarray, text: np.ndarray | None = None, *,
        alpha: float = ALPHA, beta: float = BETA) -> Head:
    """The concept's head from example and non-example vectors, a library sample and the name's text vector."""
    pos = np.asarray(positives, np.float32)
    neg = np.asarray(negatives, np.float32).reshape(-1, pos.shape[1])
    lib = np.asarray(library, np.float32).reshape(-1, pos.shape[1])
    knows = knows_word(pos, lib, text)
    if text is not None and knows >= KNOWS_AT:
        w = ridge(pos, neg, lib, LAMBDA_KNOWN, prior=np.asarray(text, np.float64))
    else:
        w = ridge(pos, neg, lib, LAMBDA_UNKNOWN)
    return Head(w, pos, neg, knows, alpha, beta)


def threshold(head: Head, library: np.ndarray) -> float:
    """The membership threshold: 0, the head's decision boundary (it is fitted to +1 for members and -1 for the
    rest, examples weighted as much as the library), which ``benchmarks/concepts.py`` measured as good a cut as
    the adaptive cutoff of ``--relevant`` over the library's scores, at a hundredth of the time. ``library`` is
    kept for a cut that needs the score distribution."""
    return 0.0


def uncertain(scores: np.ndarray, cut: float, labelled: np.ndarray, n: int, top: int = 2) -> np.ndarray:
    """Active learning: which unlabelled rows to ask about next: ``top`` of the best (members to confirm) and the
    rest nearest the threshold, where an answer moves the boundary most."""
    s = np.asarray(scores, np.float64).copy()
    s[labelled] = np.nan
    valid = np.flatnonzero(~np.isnan(s))
    if not len(valid):
        return valid
    top = min(top, len(valid))
    best = valid[np.argpartition(-s[valid], top - 1)[:top]] if top else valid[:0]
    best = best[np.argsort(-s[best])]
    s[best] = np.nan
    rest = np.flatnonzero(~np.isnan(s))
    want = min(max(0, n - len(best)), len(rest))
    if not want:
        return best.astype(np.int64)
    gap = np.abs(s[rest] - cut)
    near = rest[np.argpartition(gap, want - 1)[:want]]
    near = near[np.argsort(np.abs(s[near] - cut))]
    return np.r_[best, near].astype(np.int64)
