"""Representation probes on frozen image vectors (the standard self-supervised evaluation protocols).

Pure functions of vectors and integer labels: :func:`knn_accuracy` (cosine-weighted k-nearest-neighbour
vote over the training split's vectors) and :func:`linear_probe_accuracy` (multinomial logistic
regression on the training split, its L2 penalty chosen on a held-out validation part of it, then
refitted on the whole training split and scored on the test split). :func:`holdout_split` defines a
train/test split for a labelled set that has none.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

KNN_K = 20
PENALTIES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
"""L2 penalties tried by the linear probe (on the mean cross-entropy)."""
VALIDATION_FRACTION = 0.1


def knn_accuracy(train_vecs: np.ndarray, train_labels: np.ndarray, test_vecs: np.ndarray, test_labels: np.ndarray,
                 k: int = KNN_K, chunk: int = 1024) -> float:
    """Fraction of test vectors whose label wins the vote of their ``k`` most similar training vectors.

    Each neighbour votes for its label with its cosine similarity (vectors are unit length). A test
    vector counts as correct only if its own label's total is strictly the largest: ties count
    against it, as in the retrieval metrics.
    """
    train_vecs = np.asarray(train_vecs, dtype=np.float64)
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    n_classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    k = min(k, len(train_vecs))
    correct = 0
    for start in range(0, len(test_vecs), chunk):
        sims = np.asarray(test_vecs[start:start + chunk], dtype=np.float64) @ train_vecs.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(sims), n_classes))
        rows = np.repeat(np.arange(len(sims)), k)
        np.add.at(votes, (rows, train_labels[top].ravel()), np.take_along_axis(sims, top, axis=1).ravel())
        own = votes[np.arange(len(sims)), test_labels[start:start + chunk]]
        votes[np.arange(len(sims)), test_labels[start:start + chunk]] = -np.inf
        correct += int((own > votes.max(axis=1)).sum())
    return correct / max(len(test_vecs), 1)


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, penalty: float,
                 max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (weights, biases) minimising mean cross-entropy + ``penalty``·|W|²/2."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    w = torch.zeros(xt.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt) + penalty * (w * w).sum() / 2
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: thread hand-offs cost more than they save (15x on a busy CPU)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return w.detach().numpy(), b.detach().numpy()


def _accuracy(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Ties count against the vector: correct only if its own class scores strictly highest."""
    scores = np.asarray(x, dtype=np.float64) @ w + b
    own = scores[np.arange(len(y)), y].copy()
    scores[np.arange(len(y)), y] = -np.inf
    return float((own > scores.max(axis=1)).mean()) if len(y) else 0.0


def linear_probe_accuracy(train_vecs: np.ndarray, train_labels: np.ndarray, test_vecs: np.ndarray,
                          test_labels: np.ndarray, penalties: tuple[float, ...] = PENALTIES,
                          validation_fraction: float = VALIDATION_FRACTION, seed: int = 0) -> float:
    """Test accuracy of a logistic regression on frozen vectors.

    The penalty is the one of ``penalties`` with the best accuracy on a validation part of the
    training split (``validation_fraction`` of it, drawn with ``seed``; the smallest penalty wins a
    tie); the probe is then refitted on the whole training split with it.
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    n_classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    penalty = penalties[0]
    if len(penalties) > 1:
        order = np.random.default_rng(seed).permutation(len(train_labels))
        n_val = max(1, int(round(len(order) * validation_fraction)))
        val, fit = order[:n_val], order[n_val:]
        scores = [_accuracy(*fit_logistic(train_vecs[fit], train_labels[fit], n_classes, p), train_vecs[val],
                            train_labels[val]) for p in penalties]
        penalty = penalties[int(np.argmax(scores))]
    w, b = fit_logistic(train_vecs, train_labels, n_classes, penalty)
    return _accuracy(w, b, test_vecs, test_labels)


def holdout_split(labels: np.ndarray, every: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices for a labelled set without a split: within each class, in order, every
    ``every``-th item (the 1st, 6th, ...) is a test item, the rest train (20 % test for ``every = 5``)."""
    labels = np.asarray(labels)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.nonzero(labels == label)[0]
        test[members[::every]] = True
    return np.nonzero(~test)[0], np.nonzero(test)[0]
