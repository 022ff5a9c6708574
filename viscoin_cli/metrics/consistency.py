"""Consistency (paper §4.1, App. B.3): does turning one concept up change different images the same way?

For concept k: rank classes by k's global relevance and take the samples of the top classes (in that
order, until there are enough; choice: the paper says "the classes k is most relevant for" without a
count), keep the `samples` where φ̄_k is largest, and note their maximum activation a_max. Render each
twice, with the whole map Φ_k set to the constant λ·a_max and with Φ_k = 0, everything else unchanged.
Done on training samples this gives the SVM's training set (2 × samples images), on test samples its test
set. Features: f's `layer2` output, average-pooled. A linear SVM on those features as they are (C by
5-fold cross-validation over {0.001, 0.01, 0.1, 1, 10}, App. B.3) separates high from zero; its test
accuracy is the concept's consistency. ~1 means the concept's effect is visible and the same across
images. `standardize=True` (option, not the paper's protocol) scales each feature to zero mean and unit
variance, fitted on the training renders, before the SVM.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from viscoin_cli.interpret.encode import Encoded

SVM_C = (0.001, 0.01, 0.1, 1.0, 10.0)


def select_samples(encoded: Encoded, class_order: torch.Tensor, concept: int, count: int) -> torch.Tensor:
    """Indices of the `count` samples, from the classes in `class_order` (most relevant first), where the
    concept activates most."""
    predicted = encoded.predicted
    chosen: list[torch.Tensor] = []
    total = 0
    for cls in class_order.tolist():
        members = (predicted == cls).nonzero().flatten()
        chosen.append(members)
        total += len(members)
        if total >= count:
            break
    pool = torch.cat(chosen) if chosen else torch.arange(len(encoded))
    activations = encoded.pooled[pool, concept]
    return pool[activations.argsort(descending=True)[:count]]


@torch.no_grad()
def _features(
    model,
    encoded: Encoded,
    indices: torch.Tensor,
    concept: int,
    level: float,
    batch_size: int,
    device: torch.device | str,
) -> np.ndarray:
    """f's pooled layer2 features of the renders with Φ_concept set to the constant `level`."""
    features = []
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        maps = encoded.concept_maps[batch].to(device).clone()
        maps[:, concept] = level
        rendered = model.render(maps, encoded.support[batch].to(device))
        features.append(model.f.forward_taps(rendered)["layer2"].float().mean(dim=(2, 3)).cpu())
    return torch.cat(features).numpy()


SVM_MAX_ITER = 5000


def svm_search(seed: int, folds: int = 5, standardize: bool = False):
    """The unfitted classifier: a linear SVM (squared hinge, liblinear; a scaler first if `standardize`)
    with C picked from SVM_C by stratified, shuffled `folds`-fold cross-validation, seeded; refit on all
    the training data."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    svm = LinearSVC(dual="auto", max_iter=SVM_MAX_ITER, random_state=seed)
    estimator, grid = (make_pipeline(StandardScaler(), svm), "linearsvc__C") if standardize else (svm, "C")
    return GridSearchCV(estimator, {grid: list(SVM_C)}, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))


def fit_svm(train_x: np.ndarray, train_y: np.ndarray, seed: int, standardize: bool = False):
    """`svm_search` fitted on the training renders (fewer folds when a class has fewer than 5 samples);
    liblinear's convergence warnings are silenced."""
    from sklearn.exceptions import ConvergenceWarning

    search = svm_search(seed, min(5, int(np.bincount(train_y).min())), standardize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(train_x, train_y)
    return search


def _svm_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int, standardize: bool
) -> float:
    search = fit_svm(train_x, train_y, seed, standardize)
    return float((search.predict(test_x) == test_y).mean())


def consistency(
    model,
    train: Encoded,
    test: Encoded,
    global_relevance: torch.Tensor,
    concepts: Sequence[int] | None = None,
    lam: float = 2.0,
    samples: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    on_concept: Callable[[int, float], None] | None = None,
    standardize: bool = False,
) -> dict[str, object]:
    """Consistency of each concept (default: all K): mean, std and the per-concept accuracies."""
    concepts = list(range(train.pooled.shape[1])) if concepts is None else list(concepts)
    per_concept: dict[int, float] = {}
    for concept in concepts:
        class_order = global_relevance[:, concept].argsort(descending=True)
        sets = []
        for split in (train, test):
            indices = select_samples(split, class_order, concept, samples)
            a_max = split.pooled[indices, concept].max().item()
            high = _features(model, split, indices, concept, lam * a_max, batch_size, device)
            zero = _features(model, split, indices, concept, 0.0, batch_size, device)
            sets.append((np.concatenate([high, zero]), np.array([1] * len(high) + [0] * len(zero))))
        (train_x, train_y), (test_x, test_y) = sets
        per_concept[concept] = _svm_accuracy(train_x, train_y, test_x, test_y, seed, standardize)
        if on_concept is not None:
            on_concept(concept, per_concept[concept])
    accuracies = np.array(list(per_concept.values()))
    return {
        "lambda": lam,
        "mean": float(accuracies.mean()),
        "std": float(accuracies.std()),
        "per_concept": {str(k): v for k, v in per_concept.items()},
    }
