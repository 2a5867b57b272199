"""Each metric on toy cases small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import metrics
from retrieval.evaluate import label_metrics, recall_metrics
from retrieval.probes import holdout_split, knn_accuracy, linear_probe_accuracy


def test_hits_at_k_single_positive():
    # 2 text queries over 3 images; text 0 -> image 2, text 1 -> image 0
    scores = np.array([[0.9, 0.1, 0.5],    # image 2 ranks 2nd
                       [0.2, 0.8, 0.7]])   # image 0 ranks 3rd
    pos = metrics.t2i_positives(np.array([2, 0]), 3)
    assert metrics.hits_at_k(scores, pos, 1).tolist() == [0.0, 0.0]
    assert metrics.hits_at_k(scores, pos, 2).tolist() == [1.0, 0.0]
    assert metrics.hits_at_k(scores, pos, 3).tolist() == [1.0, 1.0]


def test_hits_at_k_any_caption_counts():
    # image 0 has captions 0 and 1, image 1 has caption 2; image queries over 3 texts
    text_image = np.array([0, 0, 1])
    pos = metrics.i2t_positives(text_image, 2)
    assert pos.tolist() == [[True, True, False], [False, False, True]]
    scores = np.array([[0.1, 0.6, 0.9],    # best own caption (0.6) is 2nd
                       [0.3, 0.2, 0.1]])   # own caption is last
    assert metrics.hits_at_k(scores, pos, 1).tolist() == [0.0, 0.0]
    assert metrics.hits_at_k(scores, pos, 2).tolist() == [1.0, 0.0]


def test_hits_at_k_ties_count_against_the_query():
    scores = np.array([[0.5, 0.5, 0.5]])
    pos = metrics.t2i_positives(np.array([1]), 3)
    assert metrics.hits_at_k(scores, pos, 2).tolist() == [0.0]
    assert metrics.hits_at_k(scores, pos, 3).tolist() == [1.0]


def test_precision_at_k_excludes_the_query_itself():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([[1.0, 0.9, 0.8, 0.1],
                       [0.9, 1.0, 0.1, 0.2],
                       [0.8, 0.1, 1.0, 0.3],
                       [0.1, 0.2, 0.3, 1.0]])
    p1 = metrics.precision_at_k(scores, labels, labels, 1, exclude=np.arange(4))
    assert p1.tolist() == [1.0, 1.0, 0.0, 1.0]  # query 2's best other is image 0 (0.8): label 0
    p2 = metrics.precision_at_k(scores, labels, labels, 2, exclude=np.arange(4))
    assert p2.tolist() == [0.5, 0.5, 0.5, 0.5]


def test_precision_at_k_text_queries_keep_every_image():
    scores = np.array([[0.9, 0.1, 0.8]])
    assert metrics.precision_at_k(scores, np.array([1]), np.array([1, 0, 1]), 2).tolist() == [1.0]


def test_average_precision_by_hand():
    # query 0 (label 0); ranking of the others: 2 (label 1), 1 (label 0), 3 (label 0)
    scores = np.array([[1.0, 0.5, 0.7, 0.2]])
    labels = np.array([0, 0, 1, 0])
    ap = metrics.average_precision(scores, labels[:1], labels, exclude=np.array([0]))
    # relevant at ranks 2 and 3: (1/2 + 2/3) / 2
    assert ap[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    perfect = metrics.average_precision(np.array([[1.0, 0.9, 0.1, 0.8]]), labels[:1], labels,
                                        exclude=np.array([0]))
    assert perfect[0] == pytest.approx(1.0)


def test_average_precision_without_relevant_items_is_zero():
    ap = metrics.average_precision(np.array([[1.0, 0.5]]), np.array([0]), np.array([0, 1]), exclude=np.array([0]))
    assert ap.tolist() == [0.0]


def test_zero_shot_with_prompt_ensembling():
    # two classes, two templates each; class 1's templates average to the y axis
    prompts = np.array([[[1.0, 0.0], [1.0, 0.0]],
                        [[0.6, 0.8], [-0.6, 0.8]]])
    vecs = metrics.class_vectors(prompts)
    np.testing.assert_allclose(vecs, [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    images = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.6]])
    correct = metrics.zero_shot_correct(images, vecs, np.array([0, 1, 1]))
    assert correct.tolist() == [1.0, 1.0, 0.0]


def test_recall_metrics_keys_and_values():
    # 2 images; image 0 has captions 0,1; image 1 has caption 2; axes-aligned toy vectors
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # caption 1 is misleading
    out = recall_metrics(images, texts, np.array([0, 0, 1]))
    assert set(out) == {f"{d}_recall@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)}
    assert out["t2i_recall@1"] == pytest.approx(2 / 3)
    assert out["t2i_recall@5"] == 1.0
    # image 1's caption 2 ties with the misleading caption 1, which counts against it
    assert out["i2t_recall@1"] == pytest.approx(1 / 2)
    assert out["i2t_recall@10"] == 1.0


def test_label_metrics_keys_and_values():
    images = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    labels = np.array([0, 0, 1, 1])
    prompts = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = label_metrics(images, labels, prompts)
    assert set(out) == {"zero_shot_accuracy", "t2i_precision@10", "i2i_precision@10", "i2i_map"}
    assert out["zero_shot_accuracy"] == 1.0
    # top 10 of 4 images = all 4, two per label
    assert out["t2i_precision@10"] == 0.5
    # with only 3 other images, each query's "top 10" is those 3, one of which shares its label
    assert out["i2i_precision@10"] == pytest.approx(1 / 3)
    # query 1 (0.8,0.6) ranks: 3 (0.96), 0 (0.8), 2 (0.6) -> own label at rank 2: AP 1/2
    assert out["i2i_map"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)


# --- representation probes (retrieval.probes) ----------------------------------------------------

def test_knn_accuracy_cosine_weighted_vote():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    train_labels = np.array([0, 1, 1])
    # query [0.8, 0.6]: top 2 = [0.6, 0.8] (0.96, label 1) and [1, 0] (0.8, label 0): votes 1 -> 0.96, 0 -> 0.8
    # query [1, 0]:     top 2 = [1, 0] (1.0, label 0) and [0.6, 0.8] (0.6, label 1): label 0 wins
    test = np.array([[0.8, 0.6], [1.0, 0.0]])
    assert knn_accuracy(train, train_labels, test, np.array([0, 0]), k=2) == 0.5
    assert knn_accuracy(train, train_labels, test, np.array([1, 0]), k=2) == 1.0
    # k = 1 only asks for the nearest neighbour
    assert knn_accuracy(train, train_labels, test, np.array([1, 0]), k=1) == 1.0
    # k = 3: [0.8, 0.6] gets 0.8 for label 0 and 0.6 + 0.96 = 1.56 for label 1
    assert knn_accuracy(train, train_labels, test[:1], np.array([1]), k=3) == 1.0


def test_knn_accuracy_tie_counts_against_the_query():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    query = np.array([[0.5 ** 0.5, 0.5 ** 0.5]])  # equally similar to both, one vote each
    assert knn_accuracy(train, np.array([0, 1]), query, np.array([0]), k=2) == 0.0
    assert knn_accuracy(train, np.array([0, 1]), query, np.array([1]), k=2) == 0.0


def test_linear_probe_on_a_line():
    # two classes on either side of 0 (symmetric, so the boundary is at 0)
    train = np.array([[-1.0], [-2.0], [1.0], [2.0]])
    labels = np.array([0, 0, 1, 1])
    test = np.array([[-0.5], [3.0], [0.2]])
    assert linear_probe_accuracy(train, labels, test, np.array([0, 1, 0]), penalties=(1e-3,)) == pytest.approx(2 / 3)
    assert linear_probe_accuracy(train, labels, test, np.array([0, 1, 1]), penalties=(1e-3,)) == 1.0


def test_linear_probe_chooses_its_penalty_on_validation():
    # 3 classes, unbalanced: an absurd penalty flattens the weights and predicts the majority class
    # everywhere, which the validation part exposes; the small penalty separates them.
    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    labels = np.repeat([0, 1, 2], [120, 40, 40])
    train = centres[labels] + rng.normal(0, 0.3, (200, 2))
    test_labels = np.array([0, 1, 2] * 5)
    test = centres[test_labels] + rng.normal(0, 0.3, (15, 2))
    assert linear_probe_accuracy(train, labels, test, test_labels, penalties=(1e4,)) == pytest.approx(1 / 3)
    assert linear_probe_accuracy(train, labels, test, test_labels, penalties=(1e4, 1e-4)) == 1.0


def test_holdout_split_every_fifth_of_each_class():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    fit, test = holdout_split(labels)
    assert test.tolist() == [0, 5, 6] and fit.tolist() == [1, 2, 3, 4, 7, 8]
