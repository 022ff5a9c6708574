"""`relevance_tables`, the one place every command computes local and global relevance, against a hand computation."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from viscoin_cli.interpret.encode import Encoded
from viscoin_cli.interpret.relevance import relevance_tables


def _model(weight: torch.Tensor) -> SimpleNamespace:
    """Just what relevance reads of a concept model: its head's weight W [C, K]."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return SimpleNamespace(linear=linear, head_weight=lambda: linear.weight)


def _encoded(pooled: torch.Tensor, predicted: list[int], labels: list[int], num_classes: int) -> Encoded:
    logits = torch.nn.functional.one_hot(torch.tensor(predicted), num_classes).float()
    n, k = pooled.shape
    return Encoded(
        concept_maps=torch.zeros(n, k, 3, 3),
        support=torch.zeros(n, k * 9),
        pooled=pooled,
        logits=logits,
        f_logits=torch.zeros(n, num_classes),
        labels=torch.tensor(labels),
    )


def test_relevance_tables_by_hand():
    weight = torch.tensor([[1.0, -3.0], [0.5, 0.5], [2.0, 2.0]])  # [C=3, K=2]; class 2 is never predicted
    pooled = torch.tensor([[2.0, 1.0], [1.0, 4.0], [1.0, 1.0]])
    # labels differ from the predictions: relevance follows what g predicts, not the truth
    encoded = _encoded(pooled, predicted=[0, 1, 0], labels=[1, 2, 2], num_classes=3)
    local, global_ = relevance_tables(_model(weight), encoded)
    # sample 0, class 0: φ̄·W = (2, -3), / 3;  sample 1, class 1: (0.5, 2), / 2;  sample 2, class 0: (1, -3), / 3
    expected_local = torch.tensor([[2 / 3, -1.0], [0.25, 1.0], [1 / 3, -1.0]])
    # class 0: mean of samples 0 and 2; class 1: sample 1; class 2: no sample, zeros (C comes from W)
    expected_global = torch.tensor([[0.5, -1.0], [0.25, 1.0], [0.0, 0.0]])
    assert torch.allclose(local, expected_local)
    assert torch.allclose(global_, expected_global)
    assert not local.requires_grad and not global_.requires_grad


def test_relevance_tables_read_a_half_precision_head_in_fp32():
    weight = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    model = _model(weight)
    model.linear.to(torch.bfloat16)
    local, global_ = relevance_tables(model, _encoded(torch.tensor([[2.0, 1.0]]), [0], [0], 2))
    assert local.dtype == global_.dtype == torch.float32
    assert torch.allclose(local, torch.tensor([[2 / 3, -1.0]]))
