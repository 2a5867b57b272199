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
* **whitening** (a name the model cannot read only): the head and the cache work on the vectors centred on the
  library sample's mean and whitened by its covariance (shrunk by ``WHITEN_EPS``), re-normalised, with a constant
  feature for the intercept (:func:`whitening`): a cheap self-supervised adapter from the stored vectors alone.
  On a domain the model never saw, cosines in the raw space are dominated by the few directions every picture
  shares; in the whitened space the cache's neighbours are the ones that tell the concept apart.

Scores are not cosines: the head is fitted to +1 for members and -1 for the rest, so 0 is its calibrated
membership threshold (:func:`threshold`); examples are members and non-examples are not, whatever they score.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

NAME_TEMPLATES = ("a photo of a {}.", "a {}.", "the {}.")
KNOWS_AT = 0.85
"""Mean percentile of the examples under the name's text vector (among the library sample) from which the model
is taken to know the word."""
LAMBDA_KNOWN, LAMBDA_UNKNOWN = 10.0, 0.03
LAMBDA_WHITENED = 10.0
"""Ridge towards zero in the whitened space (a name the model cannot read)."""
ALPHA, BETA = 0.1, 20.0
WHITEN_EPS = 0.01
"""Shrinkage of the library covariance towards its mean eigenvalue before whitening."""
BETA_WHITENED = 40.0
"""The cache's sharpness in the whitened space (cosines there are spread wider than in the raw space)."""


def name_prompts(name: str) -> list[str]:
    """The prompts whose mean text vector is a concept name's prior."""
    return [t.format(name) for t in NAME_TEMPLATES]


@dataclass(frozen=True)
class Head:
    """A fitted concept: score(x) = e(x).w + cache(e(x)), ``e`` the whitening (:func:`whitened`) or the identity:
    ``positives``, ``negatives`` and ``w`` live in the space of ``e``."""

    w: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    knows: float
    alpha: float = ALPHA
    beta: float = BETA
    shift: np.ndarray | None = None
    whiten: np.ndarray | None = None

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of rows of unit vectors (higher: more likely a member): one ``x @ F`` product whose columns are the
        linear part and every labelled example (the whitening and the cache's sharpness folded into ``F``), then
        one exp and one product with the cache's weights."""
        x = np.asarray(vectors, np.float32)
        fold, offset, cut, bias, coef = self._fold()
        whitened_rows = self.whiten is not None and self.shift is not None
        inverse = inverse_whitened_norms(x, self.shift, self.whiten) if whitened_rows else None  # type: ignore[arg-type]
        out = np.empty(len(x), np.float32)
        for i in range(0, len(x), NORMS_CHUNK):  # rows x (1 + labelled) at a time: bounded memory
            z = x[i:i + NORMS_CHUNK] @ fold
            z -= offset
            if inverse is not None:
                z *= inverse[i:i + NORMS_CHUNK, None]
            s = z[:, 0] + bias
            if len(coef):
                cache = z[:, 1:]
                cache -= cut
                np.exp(cache, out=cache)
                s += cache @ coef
            out[i:i + NORMS_CHUNK] = s
        return out

    def _fold(self) -> tuple[np.ndarray, np.ndarray, np.float32, np.float32, np.ndarray]:
        """``F``, the offsets to take off ``x @ F`` before the norm, the cache's constant, the intercept, and the
        cache's weights (+alpha / examples, -alpha / non-examples) such that the score is
        ``z[:, 0] + bias + exp(z[:, 1:] - cut) @ coef`` with ``z = (x @ F - offset) / norm``:

        * raw: the cache term is ``exp(-beta (1 - x.p)) = exp(beta x.p - beta)``;
        * whitened (e(x) = [u / sqrt 2, 1 / sqrt 2], u the whitened row at unit length, examples stored as
          e(p)): ``e(x).w = (u.w[:-1] + w[-1]) / sqrt 2`` and ``e(x).e(p) = u.e(p)[:-1] / sqrt 2 + 1 / 2``, u.v
          being ``((x - shift) W v) / ||(x - shift) W||``."""
        labelled = np.vstack([self.positives, self.negatives]) if self.alpha else self.positives[:0]
        coef = np.r_[np.full(len(self.positives), self.alpha / max(len(self.positives), 1)),
                     np.full(len(self.negatives), -self.alpha / max(len(self.negatives), 1))][:len(labelled)]
        if self.whiten is None or self.shift is None:
            fold = np.hstack([self.w[:, None], self.beta * labelled.T])
            return (fold.astype(np.float32), np.zeros(fold.shape[1], np.float32), np.float32(self.beta),
                    np.float32(0.0), coef.astype(np.float32))
        half = 1 / np.sqrt(2)
        inner = np.hstack([half * self.w[:-1, None], self.beta * half * labelled[:, :-1].T])
        fold = (self.whiten.astype(np.float64) @ inner).astype(np.float32)
        return (fold, (self.shift @ fold).astype(np.float32), np.float32(self.beta / 2),
                np.float32(self.w[-1] * half), coef.astype(np.float32))

    @property
    def direction(self) -> np.ndarray:
        """The unit vector of the linear part in the stored vectors' space (what a vector index can search by;
        for a whitened head, the linear part before the re-normalisation)."""
        w = self.w if self.whiten is None else self.whiten @ self.w[:-1]
        return (w / max(float(np.linalg.norm(w)), 1e-12)).astype(np.float32)


_NORMS: OrderedDict[tuple, tuple[weakref.ref, weakref.ref, np.ndarray]] = OrderedDict()
NORMS_KEPT = 4
NORMS_CHUNK = 65_536


def inverse_whitened_norms(x: np.ndarray, shift: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """1 / ||(x - shift) whiten|| per row, the one dim x dim cost of a whitened head (a second at 100,000 x 512),
    kept for the last few (vectors array, whitening) pairs: a review session refits over the same vectors with
    the same library sample after every answer."""
    key = (id(x), x.shape, id(whiten), whiten.shape)
    hit = _NORMS.get(key)
    if hit is not None and hit[0]() is x and hit[1]() is whiten:
        return hit[2]
    out = np.empty(len(x), np.float32)
    for i in range(0, len(x), NORMS_CHUNK):
        z = (x[i:i + NORMS_CHUNK] - shift) @ whiten
        out[i:i + NORMS_CHUNK] = np.sqrt(np.einsum("ij,ij->i", z, z))
    np.maximum(out, 1e-12, out=out)
    np.divide(1, out, out=out)
    try:
        _NORMS[key] = (weakref.ref(x), weakref.ref(whiten), out)
        _NORMS.move_to_end(key)
        while len(_NORMS) > NORMS_KEPT:
            _NORMS.popitem(last=False)
    except TypeError:  # not weak-referenceable: not kept
        pass
    return out


_WHITENINGS: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def whitening(library: np.ndarray, eps: float = WHITEN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """The library sample's mean and the symmetric inverse square root of its covariance, shrunk by ``eps`` times
    the mean eigenvalue; the same sample gives the same (identical) arrays, so the row norms
    :func:`inverse_whitened_norms` keeps stay valid across refits."""
    lib = np.ascontiguousarray(library, np.float32)
    key = hashlib.blake2b(lib.tobytes() + np.float64(eps).tobytes() + str(lib.shape).encode(), digest_size=16).digest()
    if key in _WHITENINGS:
        _WHITENINGS.move_to_end(key)
        return _WHITENINGS[key]
    x = lib.astype(np.float64)
    shift = x.mean(0)
    cov = np.cov((x - shift).T) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    cov = cov + (eps * max(float(np.trace(cov)) / len(cov), 1e-6)) * np.eye(len(cov))
    values, vectors = np.linalg.eigh(cov)
    out = shift.astype(np.float32), ((vectors * values ** -0.5) @ vectors.T).astype(np.float32)
    _WHITENINGS[key] = out
    while len(_WHITENINGS) > NORMS_KEPT:
        _WHITENINGS.popitem(last=False)
    return out


def whitened(vectors: np.ndarray, shift: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """Rows centred, whitened, re-normalised, with a constant feature (the intercept), all over sqrt(2): unit
    rows again, whose dot product is (1 + the whitened cosine) / 2."""
    x = (np.asarray(vectors, np.float32) - shift) @ whiten
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty((len(x), x.shape[1] + 1), np.float32)
    out[:, :-1] = x / np.sqrt(2)
    out[:, -1] = 1 / np.sqrt(2)
    return out


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
        return Head(w, pos, neg, knows, alpha, beta)
    if len(lib) <= pos.shape[1]:  # too few library rows to whiten by
        return Head(ridge(pos, neg, lib, LAMBDA_UNKNOWN), pos, neg, knows, alpha, beta)
    shift, whiten = whitening(lib)
    pos, neg, lib = (whitened(a, shift, whiten) for a in (pos, neg, lib))
    w = ridge(pos, neg, lib, LAMBDA_WHITENED)
    return Head(w, pos, neg, knows, alpha, beta * BETA_WHITENED / BETA, shift, whiten)


def threshold(head: Head, library: np.ndarray) -> float:
    """The membership threshold: 0, the head's decision boundary (it is fitted to +1 for members and -1 for the
    rest, examples weighted as much as the library), which ``benchmarks/concepts.py`` measured as good a cut as
    the adaptive cutoff of ``--relevant`` over the library's scores, at a hundredth of the time. ``library`` is
    kept for a cut that needs the score distribution."""
    return 0.0


CONFIRM_BEST = 0
"""How many of the best unlabelled rows review asks first: 0, measured (``benchmarks/concepts.py``): asking only
near the threshold teaches more than spending two of ten answers on confirming the best."""


def uncertain(scores: np.ndarray, cut: float, labelled: np.ndarray, n: int, top: int = CONFIRM_BEST) -> np.ndarray:
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
