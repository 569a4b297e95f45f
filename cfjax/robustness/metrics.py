"""Scores of a robustness evaluation, from per-example numpy arrays (exact, no binning)."""

import numpy as np
from scipy import stats


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted == labels))


def f1(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """F1 of the damaged class (1) for binary tasks, as the paper reports; macro-F1 over classes for K > 2."""
    classes = [1] if num_classes == 2 else range(num_classes)
    scores = []
    for c in classes:
        true_pos = np.sum((predicted == c) & (labels == c))
        claimed, actual = np.sum(predicted == c), np.sum(labels == c)
        scores.append(0.0 if true_pos == 0 else 2 * true_pos / (claimed + actual))
    return float(np.mean(scores))


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U); None if a
    side is empty."""
    positive, negative = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    if not len(positive) or not len(negative):
        return None
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    u = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def risk_coverage(uncertainty: np.ndarray, correct: np.ndarray) -> dict:
    """Abstain on the most uncertain first: the error rate among the kept examples at each coverage,
    and its mean over coverages (AURC; lower is better)."""
    order = np.argsort(np.asarray(uncertainty), kind="stable")
    errors = np.cumsum(~np.asarray(correct, bool)[order])
    kept = np.arange(1, len(order) + 1)
    risk = errors / kept
    return {"coverage": (kept / len(order)).tolist(), "risk": risk.tolist(), "aurc": float(risk.mean())}


def max_softmax_uncertainty(class_logits: np.ndarray) -> np.ndarray:
    """1 - max softmax probability: the usual confidence baseline for a plain classifier."""
    z = class_logits - class_logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    return 1.0 - probabilities.max(axis=-1)
