"""MaTAV: Mamba-enhanced Text-Audio-Video alignment network (Li, Fan, Wu, Peng and Li, "Mamba-
Enhanced Text-Audio-Video Alignment Network for Emotion Recognition in Conversations").

Input per modality ``m``: ``x^m (B, L, D_m)``; ``mask (B, L)``, True = real utterance. Modalities
are taken in the paper's order ``text, audio, video`` (any other names follow, sorted); ``M`` is
their number and ``P = proj_dim``.

1. **TAV-encoders, §II-B.** RoBERTa / WavLM / VisExtNet are *not* part of this model: merc feeds
   pre-extracted, frozen utterance features, so whatever encoder produced ``x^m`` plays that role.
2. **TAV-alignment, §II-C, Eq. 1-5** (``use_mec``).

   * Eq. 1: ``s(q, k) = g_q(q)^T g_k(k)`` with projection heads ``g_m(x) = normalize(W_m x +
     b_m)`` (one linear map per modality into ``P = 256`` dimensions, then L2 normalisation,
     so ``s`` is a cosine similarity -- ALBEF's heads).
   * Momentum heads ``g'_m``: exponential moving averages of ``g_m`` (coefficient ``momentum``),
     updated *before* the keys of a training step are computed (MoCo / ALBEF order), under
     ``torch.no_grad``, only in training forward passes. As the encoders of step 1 are frozen,
     ALBEF's "momentum unimodal encoder" reduces to the momentum head: ``t' = t`` and the key is
     ``g'_t(t)``. They are parameters with ``requires_grad=False``: saved in checkpoints, left
     alone by the optimiser, not counted by ``count_parameters``.
   * Eq. 2-4: exactly the directed pairs ``s(T, A')``, ``s(A, V')``, ``s(T, V')`` -- the query
     from the online head of the earlier modality in ``[text, audio, video]``, the key from the
     momentum head of the later one. ``symmetric=True`` adds ``s(A, T')``, ``s(V, A')``,
     ``s(V, T')``.
   * Queues: one FIFO :class:`merc.modules.contrastive.KeyQueue` of the last ``queue_size``
     momentum keys per *key* modality. The paper keeps three (text, audio, video), but under
     Eq. 2-4 text is never a key, so ``g'_t`` and the text queue exist only with ``symmetric``
     (dead state otherwise). Keys are enqueued *after* the loss of the step is computed, so the
     current positive is never among its own negatives; only real utterances whose feature is
     present (``mask & present[m]``) are enqueued or used as queries/positives -- padding and
     zero-filled missing features never enter the alignment. Each key carries a stable
     utterance id (dialogue id + turn), and a queued key with the query's id (a stale copy of
     the same utterance from an earlier epoch, possible once ``queue_size`` exceeds the
     training utterances per epoch) is excluded from the negatives. Never-written slots are not
     negatives, so the loss is exactly 0 on the very first batch (unless
     ``in_batch_negatives``).
   * Eq. 5: ``L_MEC = sum over the pairs of mean_i -log( exp(s_i+/tau) / (exp(s_i+/tau) + sum_j
     exp(s_ij-/tau)) )``. Two deviations from the literal formula, both MoCo's InfoNCE: the
     positive is also counted in the denominator (Eq. 5 sums over the ``M`` queue entries only,
     which makes the loss unbounded below), and the similarities are divided by a temperature
     ``tau`` (Eq. 5 has none, i.e. ``tau = 1``; the paper gives no value, we use MoCo/ALBEF's
     0.07; ``temperature=1.0`` is the literal formula's scale). Each pair's loss is averaged
     over its valid utterances; the pair losses are summed. ``in_batch_negatives=True`` also
     uses the other utterances of the current batch as negatives (ALBEF's variant).
   * ``aux_loss = mec_weight * L_MEC`` with ``mec_weight = 0.3`` (§III-B), in training mode
     only; in eval mode nothing is updated and ``aux_loss`` is ``None``.
3. **Fusion, §II-D, Eq. 6-7.** "[t||a||v]" is read as the *sequence* of the ``M`` aligned modality
   vectors of one utterance, ``(N, M, P)`` over the ``N`` real utterances of the batch: each
   attention layer computes ``Q, K, V = W_{Q,K,V}[t||a||v]`` (Eq. 6) and ``Softmax(Q K^T /
   sqrt(d_k)) V`` (Eq. 7, multi-head), so every modality token attends to the others ("cross"
   attention among modalities; concatenating along the feature axis instead would leave a
   one-element sequence on which attention is a no-op). Reading the dialogue axis as the sequence
   is ruled out too: that is the Mamba's job. The aligned vectors are the head outputs ``g_m(x^m)``
   -- the only trainable per-modality map, and the space in which MEC aligns -- times ``sqrt(P)``
   (a fixed rescale to unit-RMS entries, direction unchanged). ``attn_layers = 6`` layers (§III-B),
   each a post-norm Transformer layer: attention + residual + LayerNorm, then a GELU feed-forward
   of width ``attn_ffn`` + residual + LayerNorm (``attn_ffn=0``: attention-only layers, the literal
   Eq. 6-7). Then ``f = W_F[t||a||v]`` concatenates the ``M`` attended tokens along the feature
   axis (``M*P``) into ``fused_dim``, and ``z_i = FC(f_i)`` maps to the Mamba width ``d_model``
   (Linear + GELU: without the nonlinearity ``W_F`` and ``FC`` would collapse into one matrix).
4. **Context, §II-D/E** (``use_mamba``). ``x = [z_1..z_n]`` runs through ``mamba_layers``
   pre-norm residual Mamba blocks (:class:`MambaBlock`: in-projection to ``expand * d_model``,
   causal depthwise conv of width ``conv_kernel``, SiLU, selective scan, SiLU gate,
   out-projection; Gu & Dao's block) and a final RMSNorm, giving ``F``. Mamba [22] is causal,
   so with ``bidirectional=False`` an utterance sees its past only; ``bidirectional=True`` adds
   a separately parametrised backward conv + scan inside each block (Vision-Mamba style, shared
   in/out projections), the backward pass flipping each dialogue within its real length. The scan is
   :func:`merc.modules.ssm.selective_scan_reference` on CPU and ``mamba_ssm``'s CUDA kernel when
   installed and the input is on a GPU (the ``use_cuda_kernel`` attribute of each block turns it
   off). Without Mamba ("w/o Mamba" ablation), ``F = z``.

   *Default: bidirectional, two blocks* -- a departure from the paper's text, chosen on
   validation (issue 15). The paper (§II-D/E) runs Mamba over the dialogue and names no
   direction or depth; Mamba is causal, so the literal reading is one causal block, and that
   reading is the variant ``"paper (causal x1)"``. ERC labels an utterance with its whole
   dialogue available, and the future matters (what follows "Really?" decides its emotion).
   On IEMOCAP *validation* (text + 8-d audio, 3 seeds, paper training settings, GPU)
   ``bidirectional=True, mamba_layers=2`` scored highest of the seven settings tried: 60.90 +-
   2.35 W-F1 against 59.51 +- 0.60 for the causal single block (bidirectional 59.25,
   bidirectional + dropout 0.3 60.56, dropout 0.3 59.86, bidirectional + lr 3e-4 58.71, merc's
   generic lr 1e-3 / batch 16 56.06), and again over 5 seeds in the bench (60.16 vs 59.31
   valid W-F1; docs/results.md). MOSI's validation split is saturated (97-99 W-F1 for every model) and
   could not choose. The test split played no part.
5. **Classifier, Eq. 8.** ``logits_i = W Dropout(F_i) + b``; the softmax / arg-max of Eq. 8 are
   the engine's cross-entropy and prediction.

Modality subsets (item 5 of the issue): any non-empty set of modalities works. Only the pairs
among the modalities the model was built with are aligned (text+audio, IEMOCAP: ``s(T, A')``
alone; one modality: no MEC at all, ``aux_loss`` is ``None``), and the attention runs over the
``M`` present tokens (with one token it reduces to a per-utterance linear map). A batch that
lacks a modality the model was built for raises ``KeyError``; ``require_tav=True`` makes the
constructor refuse anything but the full ``text, audio, video`` set (the paper's model).

Padding: everything before the Mamba is per utterance, the causal conv and scan only look back
(padding always follows the real utterances), and the backward direction flips within the real
length, so logits of real utterances do not depend on the batch's padding.

Departures from the paper. The variant ``paper`` (:data:`PAPER_READING`) sets every row at
once; a test checks that it differs from the default in exactly these fields. Validation figures:
IEMOCAP text + 8-d audio, W-F1; the test split chose nothing.

============================ ============================== ======= ============================
field                        paper (literal reading)        default what chose the default
============================ ============================== ======= ============================
``bidirectional``            False: Mamba [22] is causal    True    5 seeds: 60.16 (bi x2) vs
                             (§II-D names no direction)             59.31 (causal x1); 3 seeds:
                                                                    60.90 vs 59.51 (issue 15)
``mamba_layers``             1 (one Mamba network)          2       the same runs
``attn_ffn``                 0: Eq. 6-7 is attention alone  512     not measured alone: the
                                                                    usual Transformer layer
``fc_activation``            none: ``z_i = FC(f_i)``        gelu    not measured alone: keeps
                                                                    W_F and FC from collapsing
``temperature``              1: Eq. 5 divides by nothing    0.07    not measured alone: MoCo,
                                                                    ALBEF
``positive_in_denominator``  False: Eq. 5 sums over the     True    not measured alone: MoCo's
                             ``M`` negatives only                   InfoNCE, bounded
============================ ============================== ======= ============================

The four rows not measured alone enter the ``paper`` row of docs/results.md ("The papers'
literal models"), which measures all six together against the default: IEMOCAP validation
58.15 +- 1.22 vs 59.43 +- 1.94, test 60.97 +- 1.30 vs 61.98 +- 1.08 (5 seeds, paired p 0.12 on
test); MELD (text alone, so no MEC term) validation 53.69 +- 0.46 vs 53.63 +- 0.64, test 56.42
+- 0.65 vs 56.48 +- 0.61 (p 0.87); 2-core CPU. Where the paper is silent (``queue_size``,
``momentum``, ``attn_heads``, ``fused_dim``, ``d_model``, the Mamba sizes, ``dropout``, the
``sqrt(P)`` rescale of the tokens) ``paper`` keeps merc's choice.

Optimiser (§III-B: batch 64, lr 1e-4, weight decay 1e-5, 100 epochs) lives in the training config,
not here: :data:`PAPER_TRAIN` is registered as the model's ``train_defaults``, so ``merc train
--model matav`` and the bench train with it unless a ``train.<name>=...`` override (or a config
file's ``train`` section) says otherwise; early stopping on validation W-F1 (``train.patience``)
is merc's. Unspecified by the paper and chosen here:
``temperature``, ``queue_size``, ``momentum``, ``attn_heads``, ``attn_ffn``, ``fused_dim``,
``d_model``, the Mamba sizes and ``dropout``.

Outputs: ``logits (B, L, C)``; ``aux_loss`` as above; ``hidden`` = ``F (B, L, d_model)``, zero at
padding; ``modality_weights`` = ``None``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from merc.config import ModelConfig, require, require_choice
from merc.data.collate import Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.contrastive import KeyQueue, info_nce, momentum_update, utterance_ids
from merc.modules.ssm import (_mamba_scan, _SelectiveDirection, exempt_from_weight_decay,
                              flip_padded, selective_scan_cuda, selective_scan_reference)

PAPER_TRAIN = {"lr": 1e-4, "weight_decay": 1e-5, "batch_size": 64, "max_epochs": 100}
"""§III-B optimiser settings, registered as the model's ``train_defaults``: ``merc train`` and
the bench use them unless ``train.<name>=...`` (or a config file) sets them."""
PAPER_READING = {"bidirectional": False, "mamba_layers": 1, "attn_ffn": 0,
                 "fc_activation": "none", "temperature": 1.0, "positive_in_denominator": False}
"""The settings of the variant ``paper``: each departure of the module docstring's defaults table
at the paper's literal reading."""
PAPER_ORDER = ("text", "audio", "video")
"""Order of the modalities in ``[t||a||v]`` and in the pairs of Eq. 2-4."""


@dataclass
class MaTAVConfig(ModelConfig):
    proj_dim: int = 256
    """Width ``P`` of the projection heads ``g_m`` and of the attention tokens (paper: 256)."""
    use_mec: bool = True
    """TAV-alignment with the MEC loss (Eq. 1-5); False = the "w/o MEC-Loss" ablation (the heads
    stay as the modality encoders, trained by the classification loss alone; no momentum heads,
    queues or ``aux_loss``)."""
    mec_weight: float = 0.3
    """``lambda``: weight of ``L_MEC`` against the cross-entropy (paper: 0.3)."""
    temperature: float = 0.07
    """InfoNCE temperature ``tau`` (Eq. 5 has none, i.e. 1; unspecified, MoCo/ALBEF's 0.07)."""
    positive_in_denominator: bool = True
    """Count the positive in Eq. 5's denominator (MoCo's InfoNCE, a softmax cross-entropy);
    False = the literal Eq. 5, whose denominator sums over the ``M`` negatives alone."""
    queue_size: int = 4096
    """Keys ``M`` kept per key-modality queue (unspecified in the paper)."""
    momentum: float = 0.99
    """EMA coefficient of the momentum heads (unspecified; MoCo 0.999, ALBEF 0.995). Lower here:
    at the paper's batch of 64 dialogues IEMOCAP has only 2 optimiser steps per epoch."""
    symmetric: bool = False
    """Also align the reverse directions ``s(A,T')``, ``s(V,A')``, ``s(V,T')`` (not in Eq. 2-4)."""
    in_batch_negatives: bool = False
    """Also use the other utterances of the batch as negatives (ALBEF); Eq. 5: queue only."""
    require_tav: bool = False
    """Refuse to build unless the input modalities are exactly text, audio and video."""
    attn_layers: int = 6
    """Layers of the Eq. 6-7 attention over the modality tokens (paper: 6)."""
    attn_heads: int = 8
    """Attention heads (must divide ``proj_dim``; unspecified in the paper)."""
    attn_ffn: int = 512
    """Feed-forward width inside each attention layer; 0 = attention-only layers."""
    fused_dim: int = 256
    """Output width of ``W_F`` (``f = W_F[t||a||v]``)."""
    d_model: int = 256
    """Mamba width: the FC maps ``f`` to it (``z_i = FC(f_i)``)."""
    fc_activation: str = "gelu"
    """Nonlinearity after ``z_i = FC(f_i)``: ``gelu`` or ``none`` (the paper's fully connected
    layer, literally; then ``W_F`` and ``FC`` compose to one linear map)."""
    use_mamba: bool = True
    """Mamba over the dialogue; False = the "w/o Mamba" ablation (classifier on ``z``)."""
    mamba_layers: int = 2
    """Stacked Mamba blocks (the paper's literal reading: 1; 2 chosen on validation)."""
    bidirectional: bool = True
    """Add a backward scan in each block (Mamba itself is causal: past context only; the
    paper's literal reading is causal, the backward scan was chosen on validation)."""
    state_size: int = 16
    """SSM state size ``N`` per channel (Mamba default)."""
    conv_kernel: int = 4
    """Width of the causal depthwise convolution in each Mamba block (Mamba default)."""
    expand: int = 2
    """Inner width of a Mamba block as a multiple of ``d_model`` (Mamba default)."""
    dropout: float = 0.1
    """Dropout on the attention tokens, inside the attention layers and before the classifier."""

    def __post_init__(self) -> None:
        require(self.attn_heads >= 1 and self.proj_dim >= 1
                and self.proj_dim % self.attn_heads == 0, "attn_heads",
                f"must divide proj_dim ({self.proj_dim}), got {self.attn_heads}")
        require(self.temperature > 0, "temperature", f"expected > 0, got {self.temperature}")
        require_choice("fc_activation", self.fc_activation, ("gelu", "none"))
        require(0.0 <= self.momentum <= 1.0, "momentum",
                f"expected a value in [0, 1], got {self.momentum}")
        require(self.queue_size >= 1, "queue_size", f"expected >= 1, got {self.queue_size}")
        require(self.mec_weight >= 0, "mec_weight", f"expected >= 0, got {self.mec_weight}")
        for name in ("attn_layers", "mamba_layers"):
            require(getattr(self, name) >= 0, name, f"expected >= 0, got {getattr(self, name)}")
        for name in ("conv_kernel", "expand"):
            require(getattr(self, name) >= 1, name, f"expected >= 1, got {getattr(self, name)}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"expected [0, 1), got {self.dropout}")


# --------------------------------------------------------------------------------------------
# Fusion: attention among the modality tokens of an utterance (Eq. 6-7)
# --------------------------------------------------------------------------------------------

class ModalityAttentionLayer(nn.Module):
    """One layer of the Eq. 6-7 stack on ``(N, M, P)`` token sets (post-norm Transformer layer).

    ``x = LN(x + Drop(MHA(x, x, x)))``, then, if ``ffn > 0``, ``x = LN(x + Drop(FFN(x)))`` with
    ``FFN = Linear(P, ffn) -> GELU -> Dropout -> Linear(ffn, P)``.
    """

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        if ffn > 0:
            self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(ffn, dim))
            self.norm2 = nn.LayerNorm(dim)
        else:
            self.ffn = self.norm2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x, x, need_weights=False)                    # Eq. 6-7
        x = self.norm1(x + self.drop(a))
        if self.ffn is not None:
            x = self.norm2(x + self.drop(self.ffn(x)))
        return x


# --------------------------------------------------------------------------------------------
# Context: Mamba blocks over the dialogue
# --------------------------------------------------------------------------------------------

class MambaBlock(nn.Module):
    """Pre-norm residual Mamba block over the dialogue axis: ``x + Mixer(RMSNorm(x))``.

    Mixer (Gu & Dao 2023, Fig. 3): ``u, z = in_proj(h)`` (each ``E = expand * dim`` wide);
    ``u -> causal depthwise Conv1d -> SiLU -> selective scan (input-dependent Delta, B, C from
    merc's _SelectiveDirection; skip D)``; ``y * SiLU(z) -> out_proj``. With ``bidirectional``
    a second conv + scan (own parameters) runs on each dialogue reversed within its real length
    and its output is added before the gate.

    ``x (B, L, dim)``, ``mask (B, L)`` -> ``(B, L, dim)``, zero at padding. Padding follows the
    real utterances and every operation looks back only (the reversed direction included, see
    :func:`merc.modules.ssm.flip_padded`), so real outputs never depend on padding.
    """

    def __init__(self, dim: int, state_size: int = 16, conv_kernel: int = 4, expand: int = 2,
                 bidirectional: bool = False, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        inner = expand * dim
        dt_rank = math.ceil(dim / 16)
        n_dir = 2 if bidirectional else 1
        self.norm = nn.RMSNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.ModuleList(nn.Conv1d(inner, inner, conv_kernel, groups=inner,
                                            padding=conv_kernel - 1) for _ in range(n_dir))
        self.ssm = nn.ModuleList(_SelectiveDirection(inner, state_size, dt_rank, dt_min, dt_max)
                                 for _ in range(n_dir))
        self.D = nn.Parameter(torch.ones(n_dir, inner))
        exempt_from_weight_decay(self.D)  # the scans' A_log are exempt in _SelectiveDirection
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.bidirectional = bidirectional
        self.use_cuda_kernel = True
        """Set to ``False`` to force the reference scan on GPU too."""

    def _direction(self, u: torch.Tensor, k: int) -> torch.Tensor:
        L = u.shape[1]
        c = F.silu(self.conv[k](u.transpose(1, 2))[..., :L].transpose(1, 2))   # causal
        delta, A, B, C = self.ssm[k].params(c)
        if self.use_cuda_kernel and _mamba_scan is not None and c.is_cuda:
            return selective_scan_cuda(c, delta, A, B, C, self.D[k].float())
        return selective_scan_reference(c, delta, A, B, C, self.D[k])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        u, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        u = u * keep
        y = self._direction(u, 0)
        if self.bidirectional:
            lengths = mask.sum(1)
            y = y + flip_padded(self._direction(flip_padded(u, lengths), 1), lengths)
        return (x + self.out_proj(y * F.silu(z))) * keep


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

def modality_order(modalities) -> list[str]:
    """The paper's order ``text, audio, video`` first, then any other modality names sorted."""
    return ([m for m in PAPER_ORDER if m in modalities]
            + sorted(m for m in modalities if m not in PAPER_ORDER))


@register_model("matav", MaTAVConfig, train_defaults=PAPER_TRAIN, variants={
    # Tables I-II of the MaTAV paper.
    "w/o Mamba": {"use_mamba": False},
    "w/o MEC": {"use_mec": False},
    # The paper's literal context: one causal Mamba block. The default (bidirectional, two
    # blocks) was the best of a 7-config sweep on IEMOCAP validation (module docstring).
    "paper (causal x1)": {"bidirectional": False, "mamba_layers": 1},
    # The paper's literal model: every departure of the defaults table (module docstring) undone.
    "paper": PAPER_READING,
    # The documented alternatives of the config.
    "bidirectional x1": {"mamba_layers": 1},
    "symmetric + in-batch": {"symmetric": True, "in_batch_negatives": True},
    "attention-only layers": {"attn_ffn": 0},
})
class MaTAV(nn.Module):
    """MaTAV: MEC-aligned modality heads -> attention fusion -> Mamba over the dialogue.

    See the module docstring for the equations, shapes and the readings of the ambiguous parts.
    """

    def __init__(self, input_dims: dict[str, int], num_classes: int,
                 config: MaTAVConfig) -> None:
        super().__init__()
        c = self.config = config
        self.modalities = modality_order(input_dims)
        if c.require_tav and sorted(self.modalities) != sorted(PAPER_ORDER):
            raise ValueError(f"MaTAV with require_tav needs exactly the modalities "
                             f"{list(PAPER_ORDER)}, got {self.modalities}")
        self.num_classes = num_classes
        P = c.proj_dim

        # Eq. 1: online projection heads g_m (also the modality encoders of the fusion).
        self.heads = nn.ModuleDict({m: nn.Linear(input_dims[m], P) for m in self.modalities})

        # Eq. 2-4: directed (query, key) pairs; momentum heads and queues for the key side.
        order = self.modalities
        pairs = [(order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]
        if c.symmetric:
            pairs += [(k, q) for q, k in pairs]
        self.pairs: list[tuple[str, str]] = pairs if c.use_mec else []
        self.key_modalities = [m for m in order if any(k == m for _, k in self.pairs)]
        self.momentum_heads = nn.ModuleDict()
        self.queues = nn.ModuleDict()
        for m in self.key_modalities:
            head = copy.deepcopy(self.heads[m])
            head.requires_grad_(False)
            self.momentum_heads[m] = head
            self.queues[m] = KeyQueue(c.queue_size, P)

        # Eq. 6-7 and f = W_F[t||a||v], z = FC(f).
        self.token_dropout = nn.Dropout(c.dropout)
        self.attention = nn.ModuleList(ModalityAttentionLayer(P, c.attn_heads, c.attn_ffn,
                                                              c.dropout)
                                       for _ in range(c.attn_layers))
        self.w_f = nn.Linear(len(order) * P, c.fused_dim)
        # Identity for "none" keeps the parameter names (fc.0.*) of every setting the same.
        self.fc = nn.Sequential(nn.Linear(c.fused_dim, c.d_model),
                                nn.GELU() if c.fc_activation == "gelu" else nn.Identity())

        # Context (Mamba) and Eq. 8.
        if c.use_mamba:
            self.mamba = nn.ModuleList(MambaBlock(c.d_model, c.state_size, c.conv_kernel,
                                                  c.expand, c.bidirectional)
                                       for _ in range(c.mamba_layers))
            self.norm_f = nn.RMSNorm(c.d_model)
        else:
            self.mamba, self.norm_f = None, None
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(c.d_model, num_classes)

    # ---------------------------------------------------------------------------- alignment

    def _valid(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Modality -> ``(B, L)``: real utterances whose feature is present."""
        return {m: batch.valid(m) for m in self.modalities}

    def project(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Online ``g_m(x^m)``: modality -> ``(B, L, P)``, unit L2 norm (Eq. 1)."""
        return {m: F.normalize(self.heads[m](features[m]), dim=-1) for m in self.modalities}

    @torch.no_grad()
    def momentum_keys(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Momentum ``g'_m(x^m)`` for the key modalities: ``(B, L, P)``, unit norm, no graph."""
        return {m: F.normalize(self.momentum_heads[m](features[m]), dim=-1)
                for m in self.key_modalities}

    @torch.no_grad()
    def update_momentum(self) -> None:
        """One EMA step of every momentum head towards its online head (online ones untouched)."""
        for m in self.key_modalities:
            momentum_update(self.heads[m], self.momentum_heads[m], self.config.momentum)

    def mec_terms(self, batch: Batch, queries: dict[str, torch.Tensor] | None = None,
                  keys: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The InfoNCE term of every pair, ``"s(text,audio')" -> scalar`` (Eq. 2-5), unweighted.

        Side-effect free: neither the momentum heads nor the queues change (see
        :meth:`forward` for the training-time order: EMA step, terms, enqueue).
        """
        c = self.config
        if queries is None or keys is None:
            feats = batch.select(self.modalities)
            queries = self.project(feats) if queries is None else queries
            keys = self.momentum_keys(feats) if keys is None else keys
        valid = self._valid(batch)
        B, L = batch.mask.shape
        ids = utterance_ids(batch.dialogue_ids, B, L, batch.mask.device)
        terms = {}
        for q, k in self.pairs:
            sel = valid[q] & valid[k]
            queue = self.queues[k]
            terms[f"s({q},{k}')"] = info_nce(queries[q][sel], keys[k][sel], c.temperature,
                                             queue.keys, queue.ids, ids[sel],
                                             in_batch=c.in_batch_negatives,
                                             include_positive=c.positive_in_denominator)
        return terms

    @torch.no_grad()
    def enqueue(self, batch: Batch, keys: dict[str, torch.Tensor]) -> None:
        """Push the keys of the batch's real, present utterances into their queues (in order)."""
        valid = self._valid(batch)
        B, L = batch.mask.shape
        ids = utterance_ids(batch.dialogue_ids, B, L, batch.mask.device)
        for m in self.key_modalities:
            self.queues[m].enqueue(keys[m][valid[m]], ids[valid[m]])

    # ---------------------------------------------------------------------------- forward

    def forward(self, batch: Batch) -> ModelOutput:
        c = self.config
        feats = batch.select(self.modalities)
        mask = batch.mask
        keep = mask.unsqueeze(-1)
        q = self.project(feats)                                              # Eq. 1 (B, L, P)

        aux = None
        if self.training and self.pairs:
            self.update_momentum()                                           # g' <- EMA(g)
            keys = self.momentum_keys(feats)
            terms = self.mec_terms(batch, q, keys)                           # Eq. 2-5
            self.enqueue(batch, keys)                                        # after the loss
            aux = c.mec_weight * torch.stack(list(terms.values())).sum()

        # Fusion is per utterance, so it runs on the N real utterances only, (N, M, P): padding
        # (large in a batch of 64 dialogues of mixed lengths) costs no attention or FC compute.
        tokens = torch.stack([q[m][mask] for m in self.modalities], dim=1)   # (N, M, P)
        N, M, P = tokens.shape
        h = self.token_dropout(tokens * math.sqrt(P))
        for layer in self.attention:                                         # Eq. 6-7
            h = layer(h)
        f = self.w_f(h.reshape(N, M * P))                                    # f = W_F[t||a||v]
        fused = self.fc(f)                                                   # z_i = FC(f_i)
        z = fused.new_zeros(*mask.shape, fused.shape[-1])
        z[mask] = fused                                                      # (B, L, d_model)
        if self.mamba is not None:
            for block in self.mamba:
                z = block(z, mask)
            z = self.norm_f(z) * keep
        logits = self.classifier(self.dropout(z))                            # Eq. 8
        return ModelOutput(logits=logits, aux_loss=aux, hidden=z)
