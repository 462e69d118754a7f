"""Multimodal fusion blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class ConcatProjection(nn.Module):
    """Early fusion: concatenate modalities (sorted by name) and project to ``hidden_size``.

    Input: modality -> ``(B, L, D_m)``; output ``(B, L, hidden_size)``.
    """

    def __init__(self, input_dims: Mapping[str, int], hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.modalities = sorted(input_dims)
        self.proj = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(sum(input_dims[m] for m in self.modalities), hidden_size),
            nn.ReLU(),
        )

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise KeyError(f"batch lacks modalities {missing} the model was built for")
        return self.proj(torch.cat([features[m] for m in self.modalities], dim=-1))


# --------------------------------------------------------------------------------------------
# Late fusion of per-modality utterance representations (Broad Mamba, paper §4.2 and Fig. 5)
# --------------------------------------------------------------------------------------------
#
# All blocks below take ``reps``: modality -> ``(B, L, k)`` (every modality already mapped to the
# same width ``k``) and return a :class:`FusionOutput`. They work for any non-empty subset of
# modalities; the order of modalities is their sorted names, so results never depend on dict
# order.


class FusionOutput(NamedTuple):
    fused: torch.Tensor
    """``(B, L, out_dim)`` fused representation ``h^f``."""
    weights: dict[str, torch.Tensor] | None = None
    """Modality -> ``(B, L)`` per-utterance weight (probability-guided fusion only)."""
    modality_logits: dict[str, torch.Tensor] | None = None
    """Modality -> ``(B, L, C)`` per-modality classifier logits (probability-guided only)."""


class ProbabilityGuidedFusion(nn.Module):
    """Probability-guided fusion model (PFM), Eq. 16-17.

    Eq. 16 runs an emotion classifier per modality and squashes it with a sigmoid::

        omega^m = Sigmoid(MLP^m(Y^m))                      (B, L, C), one probability per class

    Eq. 17 then needs one weight per modality and utterance (``omega^m Y^m`` multiplies a
    ``C``-vector with a ``k``-vector, defined only if the weight is a scalar). Reading "the
    predicted probability of the label as the weight of the modal features" (§4.2) literally,
    the weight is the probability the modality's classifier gives to *its predicted* class::

        w^m = max_c omega^m_c = Sigmoid(max_c MLP^m(Y^m)_c)      in (0, 1)
        h^f = sum_m w^m Y^m                                     (Eq. 17, no normalisation)

    so a modality that is confident about some emotion contributes more. Weights are
    independent per modality, each in ``(0, 1)``, and do not sum to 1 (as in Eq. 17);
    ``normalize=True`` divides them by their sum over modalities instead (then they sum to 1).

    ``mode="gate"`` is the cheaper alternative reading of "weight vectors": ``MLP^m`` outputs
    ``k`` values, ``omega^m`` gates ``Y^m`` channel-wise (``h^f = sum_m omega^m * Y^m``) and the
    reported per-utterance weight is the mean gate, in ``(0, 1)``. It has no class semantics, so
    ``modality_logits`` is ``None`` and no auxiliary loss applies.

    The per-modality logits are returned (``modality_logits``) so the model can train each
    classifier on the emotion labels -- what makes its probabilities "label guided".

    Args:
        modalities: Modality names.
        dim: Width ``k`` of each ``Y^m``.
        num_classes: ``C``.
        hidden: Hidden width of each ``MLP^m`` (one ReLU layer).
        mode: ``"max"`` or ``"gate"``.
        normalize: Divide the weights by their sum over modalities.
        dropout: Dropout inside the MLPs.
    """

    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int, hidden: int = 64,
                 mode: str = "max", normalize: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if mode not in ("max", "gate"):
            raise ValueError(f"PFM mode must be 'max' or 'gate', got {mode!r}")
        self.modalities = sorted(modalities)
        self.mode, self.normalize = mode, normalize
        out = num_classes if mode == "max" else dim
        self.mlps = nn.ModuleDict({m: nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden),
                                                    nn.ReLU(), nn.Linear(hidden, out))
                                   for m in self.modalities})
        self.out_dim = dim

    def forward(self, reps: Mapping[str, torch.Tensor]) -> FusionOutput:
        logits = {m: self.mlps[m](reps[m]) for m in self.modalities}            # Eq. 16 inside
        if self.mode == "max":
            # sigmoid is monotone: max_c sigmoid(z_c) = sigmoid(max_c z_c).
            gates = {m: torch.sigmoid(logits[m].amax(-1, keepdim=True)) for m in self.modalities}
        else:
            gates = {m: torch.sigmoid(logits[m]) for m in self.modalities}
        if self.normalize:
            total = sum(gates.values())
            gates = {m: g / total for m, g in gates.items()}
        fused = sum(gates[m] * reps[m] for m in self.modalities)                # Eq. 17
        weights = {m: g.mean(-1) for m, g in gates.items()}
        return FusionOutput(fused, weights, logits if self.mode == "max" else None)


class AdditiveFusion(nn.Module):
    """``h^f = sum_m Y^m`` (Fig. 5 "add")."""

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__()
        self.modalities, self.out_dim = sorted(modalities), dim

    def forward(self, reps: Mapping[str, torch.Tensor]) -> FusionOutput:
        return FusionOutput(sum(reps[m] for m in self.modalities))


class ConcatFusion(nn.Module):
    """``h^f = [Y^m1 | Y^m2 | ...]`` in sorted modality order (Fig. 5 "concat")."""

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__()
        self.modalities = sorted(modalities)
        self.out_dim = dim * len(self.modalities)

    def forward(self, reps: Mapping[str, torch.Tensor]) -> FusionOutput:
        return FusionOutput(torch.cat([reps[m] for m in self.modalities], dim=-1))


class LowRankFusion(nn.Module):
    """Low-rank multimodal fusion (LMF, Liu et al., ACL 2018; Fig. 5 "LMF").

    The tensor-fusion product of the ``1``-augmented modality vectors ``z_m = [Y^m, 1]`` followed
    by a linear map is computed through rank-``r`` modality-specific factors
    ``W_m^(i) in R^{(k+1) x out}``::

        h^f = sum_{i=1..r} lambda_i * prod_m (z_m W_m^(i)) + b

    (elementwise product over modalities), never forming the ``prod_m (k+1)`` tensor. The
    appended ``1`` keeps the unimodal and lower-order interaction terms.

    Args:
        modalities: Modality names.
        dim: Width ``k`` of each ``Y^m``.
        out_dim: Width of ``h^f``.
        rank: ``r``.
    """

    def __init__(self, modalities: Sequence[str], dim: int, out_dim: int, rank: int = 4) -> None:
        super().__init__()
        self.modalities, self.out_dim, self.rank = sorted(modalities), out_dim, rank
        self.factors = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, dim + 1, out_dim)))
            for m in self.modalities})
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)).squeeze(0))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, reps: Mapping[str, torch.Tensor]) -> FusionOutput:
        prod = None
        for m in self.modalities:
            z = F.pad(reps[m], (0, 1), value=1.0)                               # (B, L, k+1)
            f = torch.einsum("blk,rko->blro", z, self.factors[m])               # (B, L, r, out)
            prod = f if prod is None else prod * f
        fused = torch.einsum("blro,r->blo", prod, self.rank_weights) + self.bias
        return FusionOutput(fused)


FUSIONS = ("pfm", "add", "concat", "lmf")
"""Names accepted by :func:`build_fusion`."""


def build_fusion(kind: str, modalities: Sequence[str], dim: int, num_classes: int, *,
                 pfm_hidden: int = 64, pfm_mode: str = "max", pfm_normalize: bool = False,
                 lmf_rank: int = 4, lmf_dim: int | None = None,
                 dropout: float = 0.0) -> nn.Module:
    """One of :data:`FUSIONS` over ``modalities``, each ``(B, L, dim)``; ``.out_dim`` is its width."""
    if kind == "pfm":
        return ProbabilityGuidedFusion(modalities, dim, num_classes, pfm_hidden, pfm_mode,
                                       pfm_normalize, dropout)
    if kind == "add":
        return AdditiveFusion(modalities, dim)
    if kind == "concat":
        return ConcatFusion(modalities, dim)
    if kind == "lmf":
        return LowRankFusion(modalities, dim, lmf_dim or dim, lmf_rank)
    raise ValueError(f"unknown fusion {kind!r}; choose one of {FUSIONS}")
