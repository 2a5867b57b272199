"""Where relevance ends for one query: a score threshold read off the query's own score distribution.

A fixed cosine cutoff fails because every query has its own scale (a relevant 0.91 beside an irrelevant
0.93 for another query). Instead, the query is scored against a random sample of the collection; that
sample's scores are mostly irrelevant images with a tail of relevant ones, and the threshold separates
the tail. :data:`METHODS` holds the candidates ``benchmarks/cutoff.py`` measures; :data:`DEFAULT` is
the one it chose (docs/benchmarks.md, "OCR and the relevance cutoff").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

SAMPLE = 2048
"""Stored vectors scored per query (a random sample, drawn once per open collection and size)."""


def zscore(k: float) -> Callable[[np.ndarray], float]:
    """Mean + ``k`` standard deviations of the sample's scores."""
    def cut(scores: np.ndarray) -> float:
        return float(scores.mean() + k * scores.std())
    return cut


def otsu(scores: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold: the split of the histogram that maximises the between-class variance."""
    hist, edges = np.histogram(scores, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centers)
    mu0 = np.divide(m, w0, out=np.zeros_like(m), where=w0 > 0)
    mu1 = np.divide(m[-1] - m, w1, out=np.zeros_like(m), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _mixture(x: np.ndarray, k: int, iters: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and deviations of ``k`` 1-D Gaussians fitted to ``x`` by EM (the top one starts at
    the 97th percentile, where the relevant tail is)."""
    mu = np.percentile(x, np.linspace(100 / (k + 1), 100 * k / (k + 1), k))
    mu[-1] = np.percentile(x, 97)
    sd = np.full(k, x.std() / k + 1e-4)
    w = np.full(k, 1 / k)
    for _ in range(iters):
        last = mu
        like = w / sd * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2) + 1e-300
        resp = like / like.sum(axis=1, keepdims=True)
        n = resp.sum(axis=0) + 1e-12
        w, mu = n / len(x), (resp * x[:, None]).sum(axis=0) / n
        sd = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / n) + 1e-4
        if np.max(np.abs(mu - last)) < 1e-6 * (x.std() + 1e-12):
            break  # converged: the means moved by under a millionth of the spread
    return w, mu, sd


def gmm(k: int) -> Callable[[np.ndarray], float]:
    """``k`` Gaussians; the lowest score at which the top one is the likeliest component."""
    def cut(scores: np.ndarray) -> float:
        x = scores.astype(np.float64)
        w, mu, sd = _mixture(x, k)
        top = int(np.argmax(mu))
        grid = np.linspace(x.min(), x.max(), 2000)
        dens = w / sd * np.exp(-0.5 * ((grid[:, None] - mu) / sd) ** 2)
        above = np.nonzero((dens[:, top] >= dens.max(axis=1)) & (grid >= mu[np.argmax(w)]))[0]
        return float(grid[above[0]]) if len(above) else float(mu[top])
    return cut


def log_distance(scores: np.ndarray) -> np.ndarray:
    """``-log(1 - cosine)``: stretches the top of the scale, where a relevant cluster's scores pile up
    against 1 with a long lower tail, so a Gaussian fits it better (monotone: a cut here is a cut there)."""
    return -np.log(np.maximum(1 - scores.astype(np.float64), 1e-6))


def from_log_distance(z: float) -> float:
    """The cosine whose :func:`log_distance` is ``z``."""
    return float(1 - math.exp(-z))


def _max_expected_f1(x: np.ndarray, k: int) -> float:
    """Fit ``k`` Gaussians to ``x``; the top one taken as the relevant images, the threshold that maximises
    the F1 the fitted mixture expects (true positives = top weight × its tail; returned = the mixture's tail)."""
    w, mu, sd = _mixture(x, k)
    top = int(np.argmax(mu))
    grid = np.linspace(x.min(), x.max(), 2000)
    from scipy import special  # only --relevant needs it: kept out of every other search's start-up

    tail = 0.5 * special.erfc((grid[:, None] - mu) / (sd * math.sqrt(2)))
    expected = 2 * w[top] * tail[:, top] / ((w * tail).sum(axis=1) + w[top])
    return float(grid[int(np.argmax(expected))])


def mixture_f1(k: int, log: bool = False) -> Callable[[np.ndarray], float]:
    """``k`` Gaussians over the scores (``log``: over their :func:`log_distance`), max expected F1."""
    def cut(scores: np.ndarray) -> float:
        if log:
            return from_log_distance(_max_expected_f1(log_distance(scores), k))
        return _max_expected_f1(scores.astype(np.float64), k)
    return cut


def tail_f1(quantile: float, log: bool = False) -> Callable[[np.ndarray], float]:
    """Two Gaussians fitted only to the scores above ``quantile`` (the relevant images assumed a minority
    of the collection, so the bulk is dropped instead of modelled), max expected F1 on that upper part."""
    def cut(scores: np.ndarray) -> float:
        x = log_distance(scores) if log else scores.astype(np.float64)
        t = _max_expected_f1(x[x >= np.quantile(x, quantile)], 2)
        return from_log_distance(t) if log else t
    return cut


def knee(scores: np.ndarray) -> float:
    """The knee of the sorted scores (largest distance below the chord from best to median)."""
    s = np.sort(scores)[::-1]
    s = s[: max(2, len(s) // 2)]
    x = np.linspace(0, 1, len(s))
    y = (s - s[-1]) / max(s[0] - s[-1], 1e-12)
    return float(s[int(np.argmax((1 - x) - y))])


METHODS: dict[str, Callable[[np.ndarray], float]] = {
    "z2": zscore(2.0), "z2.5": zscore(2.5), "z3": zscore(3.0), "otsu": otsu, "knee": knee, "gmm2": gmm(2),
    "gmm3": gmm(3), "mixture_f1_2": mixture_f1(2), "mixture_f1_3": mixture_f1(3), "mixture_f1_4": mixture_f1(4),
    "mixture_f1_3_log": mixture_f1(3, log=True), "mixture_f1_4_log": mixture_f1(4, log=True),
    "tail_f1_75": tail_f1(0.75), "tail_f1_75_log": tail_f1(0.75, log=True), "tail_f1_80_log": tail_f1(0.80, log=True)}
DEFAULT = "mixture_f1_3"


def threshold(query: np.ndarray, sample: np.ndarray, method: str = DEFAULT) -> float | None:
    """The cosine a hit must reach for ``query`` (a unit vector) given ``sample`` (stored unit vectors, rows).

    None when the sample is too small to say (fewer than 20 points): then nothing is cut.
    """
    if sample.ndim != 2 or len(sample) < 20:
        return None
    return METHODS[method](sample @ query.astype(np.float32))
