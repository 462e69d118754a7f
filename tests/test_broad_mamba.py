"""Broad Mamba: modality subsets, PFM weights, L_norm. (Every registered variant's forward/backward
and padding invariance: the registry test, test_models.py.)"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from merc.models import count_parameters, create_model
from merc.modules.bls import BroadLearningSystem, ridge_norm_loss, ridge_solution

from helpers import TOY_DIMS as DIMS
from helpers import TOY_LABELS as LABELS
from helpers import toy_pair as _pair


# Tiny widths keep every case well under a second.
SMALL = {"d_model": 16, "state_size": 4, "n_feature": 3, "feature_dim": 4, "m_enhance": 3,
         "enhance_dim": 2, "pfm_hidden": 8}


@pytest.mark.parametrize("modalities", [("text",), ("audio",), ("video",), ("audio", "text"),
                                        ("audio", "text", "video")])
@pytest.mark.parametrize("fusion", ["pfm", "lmf"])
def test_modality_subsets(modalities, fusion):
    torch.manual_seed(0)
    model = create_model("broad-mamba", {m: DIMS[m] for m in modalities}, len(LABELS),
                         fusion=fusion, **SMALL)
    out = model(_pair(modalities))
    assert out.logits.shape == (2, 6, 3)
    if fusion == "pfm":
        assert set(out.modality_weights) == set(modalities)
    else:
        assert out.modality_weights is None


@pytest.mark.parametrize("normalize", [False, True])
def test_modality_weights_shape_range_and_padding(normalize):
    torch.manual_seed(0)
    model = create_model("broad-mamba", DIMS, len(LABELS), pfm_normalize=normalize, **SMALL)
    batch = _pair()
    w = model(batch).modality_weights
    stacked = torch.stack([w[m] for m in sorted(DIMS)])                       # (M, B, L)
    assert stacked.shape == (3, 2, 6)
    real = stacked[:, batch.mask]
    assert (real > 0).all() and (real < 1).all()
    assert (stacked[:, ~batch.mask] == 0).all()
    if normalize:
        torch.testing.assert_close(real.sum(0), torch.ones(real.shape[1]))


def test_pfm_weight_is_the_sigmoid_probability_of_the_predicted_class():
    """Eq. 16-17 as documented: w^m = max_c sigmoid(MLP^m(Y^m))_c and h^f = sum_m w^m Y^m."""
    torch.manual_seed(0)
    model = create_model("broad-mamba", DIMS, len(LABELS), **SMALL).eval()
    batch = _pair()
    reps = model.encode(batch)
    fused = model.fusion(reps)
    for m in DIMS:
        expected = torch.sigmoid(model.fusion.mlps[m](reps[m])).amax(-1)
        torch.testing.assert_close(fused.weights[m], expected)
    torch.testing.assert_close(fused.fused,
                               sum(fused.weights[m][..., None] * reps[m] for m in DIMS))


def test_ridge_solution_matches_lstsq_and_envelope_gradient():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 7, generator=g, dtype=torch.float64)
    y = torch.randn(40, 3, generator=g, dtype=torch.float64)
    lam = 0.7
    w = ridge_solution(a, y, lam)                                             # Eq. 15
    # Ridge == least squares on the augmented system [A; sqrt(lam) I] W = [Y; 0].
    aug_a = torch.cat([a, lam ** 0.5 * torch.eye(7, dtype=a.dtype)])
    aug_y = torch.cat([y, torch.zeros(7, 3, dtype=y.dtype)])
    torch.testing.assert_close(w, torch.linalg.lstsq(aug_a, aug_y).solution, rtol=0, atol=1e-10)
    # L_norm (Eq. 14 / N) at that W_b; detaching W_b gives the exact gradient (envelope theorem).
    a1 = a.clone().requires_grad_(True)
    ridge_norm_loss(a1, y, lam).backward()
    a2 = a.clone().requires_grad_(True)
    w2 = torch.linalg.solve(a2.T @ a2 + lam * torch.eye(7, dtype=a.dtype), a2.T @ y)
    ((a2 @ w2 - y).pow(2).sum() + lam * w2.pow(2).sum()).div(40).backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=0, atol=1e-10)


def test_literal_target_norm_loss_is_lambda_times_degrees_of_freedom():
    """With Y = [Z^n | H^m] itself, Eq. 14 at Eq. 15 equals lam * tr(A (A^T A + lam I)^-1 A^T)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(30, 5, generator=g, dtype=torch.float64)
    lam = 0.8
    hat = a @ torch.linalg.solve(a.T @ a + lam * torch.eye(5, dtype=a.dtype), a.T)
    torch.testing.assert_close(ridge_norm_loss(a, a, lam), lam * torch.trace(hat) / 30)


def test_norm_loss_uses_labelled_utterances_and_one_hot_targets():
    torch.manual_seed(0)
    model = create_model("broad-mamba", DIMS, len(LABELS), **SMALL)
    batch = _pair()
    batch.labels[0, 1] = -100                                 # an unlabelled real utterance
    reps = model.encode(batch)
    valid = (batch.labels != -100)
    expected = sum(ridge_norm_loss(reps[m][valid], F.one_hot(batch.labels[valid], 3).float(),
                                   model.config.norm_lambda) for m in DIMS)
    torch.testing.assert_close(model.norm_loss(reps, batch), expected)


def test_bls_widths():
    bls = BroadLearningSystem(16, n_feature=10, feature_dim=8, m_enhance=30, enhance_dim=4)
    assert bls(torch.randn(2, 5, 16)).shape == (2, 5, 10 * 8 + 30 * 4)


def test_without_bls_there_is_no_norm_loss():
    torch.manual_seed(0)
    batch = _pair()
    bare = create_model("broad-mamba", DIMS, len(LABELS), use_bls=False, pfm_aux_weight=0.0,
                        **SMALL)
    assert bare(batch).aux_loss is None
    # The per-modality PFM label loss is the only auxiliary term left without BLS.
    model = create_model("broad-mamba", DIMS, len(LABELS), use_bls=False, **SMALL)
    reps = model.encode(batch)
    assert model.norm_loss(reps, batch) is None
    assert model(batch).aux_loss is not None


def test_default_size_within_paper_budget():
    model = create_model("broad-mamba", {"text": 384, "audio": 8}, 6)
    assert count_parameters(model) <= 1_730_000


def test_bad_options_are_clear():
    with pytest.raises(ValueError, match="conv_kernel"):
        create_model("broad-mamba", DIMS, 3, conv_kernel=2)
    with pytest.raises(ValueError, match="fusion"):
        create_model("broad-mamba", DIMS, 3, fusion="tensor")
    with pytest.raises(ValueError, match="context"):
        create_model("broad-mamba", DIMS, 3, context="lstm")
