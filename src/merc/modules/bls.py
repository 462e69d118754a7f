"""Broad Learning System head (paper §3.3 Eq. 6-8 and §4.1 Eq. 12-15).

Feature nodes (Eq. 12, no activation -- unlike Eq. 6, Eq. 12 has none)::

    Z_i = X W_zi + beta_zi,               i = 1..n,   Z^n = [Z_1 | ... | Z_n]    (N, n*d_z)

enhancement nodes (Eq. 13)::

    H_j = ReLU(Z^n W_hj + beta_hj),      j = 1..m,   H^m = [H_1 | ... | H_m]    (N, m*d_h)

and the broad representation ``A = [Z^n | H^m]`` of width ``k = n*d_z + m*d_h``, which is what
the fusion stage receives as ``Y^{t/a/v}`` (Eq. 16-17). ``n`` groups of ``X W_zi + beta_zi`` are
exactly one linear map to ``n*d_z`` columns (the groups are blocks of its weight), and the same
holds for the ``m`` enhancement groups, so each is implemented as a single ``nn.Linear``.
Unlike classical BLS, whose node weights are random and frozen, the paper trains them ("W are
learnable parameters").

The ``L_norm`` regulariser (Eq. 14) with the closed-form ridge solution of Eq. 15 is
:func:`ridge_norm_loss`; see its docstring for how the target ``Y`` is read.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BroadLearningSystem(nn.Module):
    """Feature + enhancement nodes (Eq. 12-13): ``(..., in_dim) -> (..., n*d_z + m*d_h)``.

    Args:
        in_dim: Width of the input (the BiSSM output, ``d_model``).
        n_feature: ``n`` feature-node groups (paper: 10).
        feature_dim: ``d_z``, width of each feature group.
        m_enhance: ``m`` enhancement-node groups (paper: 30).
        enhance_dim: ``d_h``, width of each enhancement group.
    """

    def __init__(self, in_dim: int, n_feature: int = 10, feature_dim: int = 8,
                 m_enhance: int = 30, enhance_dim: int = 4) -> None:
        super().__init__()
        self.feature = nn.Linear(in_dim, n_feature * feature_dim)      # [W_z1 | ... | W_zn]
        self.enhance = nn.Linear(n_feature * feature_dim, m_enhance * enhance_dim)  # W_h1..W_hm
        self.out_dim = n_feature * feature_dim + m_enhance * enhance_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.feature(x)                                               # Z^n   (Eq. 12)
        h = F.relu(self.enhance(z))                                       # H^m   (Eq. 13)
        return torch.cat([z, h], dim=-1)                                  # [Z^n | H^m]


def ridge_solution(a: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 15: ``W_b = (A^T A + lam I)^{-1} A^T Y`` for ``a (N, k)``, ``y (N, c)`` -> ``(k, c)``.

    Solved with a Cholesky factorisation of the ``(k, k)`` system (symmetric positive definite
    for ``lam > 0``); ``O(N k^2 + k^3)``, cheap for the small ``k`` used here.
    """
    k = a.shape[1]
    gram = a.T @ a + lam * torch.eye(k, dtype=a.dtype, device=a.device)
    chol = torch.linalg.cholesky(gram)
    return torch.cholesky_solve(a.T @ y, chol)


def ridge_norm_loss(a: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """``L_norm`` of Eq. 14 at the closed-form ``W_b`` of Eq. 15, per utterance.

    ``L_norm = (||A W_b - Y||_F^2 + lam ||W_b||_F^2) / N`` with ``W_b`` from :func:`ridge_solution`
    on the ``N`` rows given (the caller passes only valid, unpadded utterances).

    * Division by ``N``: Eq. 14 is a sum over utterances; dividing by the constant ``N`` keeps the
      minimiser (so Eq. 15 holds unchanged with the same ``lam``) and makes the value
      independent of the batch size, comparable with the mean cross-entropy ``L_emo`` of Eq. 18.
    * Gradient: ``W_b`` minimises Eq. 14, so by the envelope theorem ``dL/dA`` is the partial
      derivative at fixed ``W_b``. We therefore solve Eq. 15 without autograd (``W_b`` detached):
      identical gradients, no backward pass through the factorisation.

    Args:
        a: ``(N, k)`` broad representation ``[Z^n | H^m]`` of one modality.
        y: ``(N, c)`` target ``Y`` of Eq. 14.
        lam: Ridge coefficient ``lambda`` (> 0).
    """
    with torch.no_grad():
        w = ridge_solution(a.detach().double(), y.detach().double(), lam).to(a.dtype)
    resid = a @ w - y
    return (resid.pow(2).sum() + lam * w.pow(2).sum()) / a.shape[0]
