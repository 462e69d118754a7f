"""DF-ERC: disentanglement and fusion on modality and context (Li, Fei, Liao, Zhao, Teng, Chua,
Ji and Li, 2023, "Revisiting Disentanglement and Fusion on Modality and Context in Conversational
Multimodal Emotion Recognition").

Only the abstract was available when this was written. It names three mechanisms -- DDM, CFM and
CRM -- and says what each is for, but gives no equations, widths or loss weights. Everything
below the "what the abstract says" lines is our own design and should be read as one plausible
instance of the paper's ideas, not as a reproduction of it.

Shapes. Input per modality ``m``: ``x^m (B, L, D_m)``; ``mask (B, L)``, True = real utterance;
``present[m] (B, L)``, False where the feature is missing (zero-filled) or at padding (a modality
absent from ``batch.present`` counts as present at every real utterance). ``valid[m] = mask &
present[m]``. The modalities are the keys of ``input_dims``, sorted; ``M`` is their number,
``H = hidden``, ``P = proj_dim``. Speaker indices are not used.

0. **Unimodal encoders.** ``h^m = Dropout(GELU(Linear(D_m -> H)(x^m)))``, ``(B, L, H)``, one per
   modality. The abstract says nothing about them (pre-extracted utterance features play the
   role of the paper's unimodal encoders).

1. **DDM -- Dual-level Disentanglement Mechanism** (``use_ddm``).

   *What the abstract says:* during feature disentanglement, a contrastive-learning mechanism
   decouples the features "into both the modality space and utterance space".

   *What we chose:* two linear heads per modality, ``s^m = S_m h^m`` (modality space) and ``c^m =
   C_m h^m`` (utterance space), each ``(B, L, P)``. Over the valid (utterance, modality) vectors
   of the batch -- ``N`` of them; padding and missing features never enter -- both are L2-
   normalised and trained with the supervised contrastive loss of Khosla et al.
   (:func:`merc.modules.contrastive.supervised_contrastive`, temperature ``temperature``):

   * modality level, on ``s``: label = the modality. Positives of ``s^m_i`` are ``s^m_j`` of the
     other utterances, negatives every other modality. ``s`` thus encodes *which channel* a
     vector came from (the modality-specific part).
   * utterance level, on ``c``: label = the utterance. Positives of ``c^m_i`` are ``c^n_i`` of the
     other modalities of the same utterance, negatives every vector of other utterances. ``c``
     thus encodes *what was said/expressed in this utterance*, shared across channels.

   ``aux_loss = modality_weight * L_mod + utterance_weight * L_utt``, in training mode only (eval:
   ``None``). With one modality the modality term has no negatives and the utterance term no
   positives, so both are skipped and ``aux_loss`` is ``None``; an utterance with a single present
   modality is simply an anchor without positives in ``L_utt`` (skipped). If ``N >
   max_contrast``, each term uses ``max_contrast`` anchors drawn with ``torch.randperm`` from the
   default (CPU) torch generator -- reproducible under ``torch.manual_seed`` -- against all ``N``
   vectors as the contrast set, so the similarity matrix is at most ``max_contrast x N``.
   ``use_ddm=False`` ("w/o DDM"): the heads stay (same shapes and fusion input) but no loss.
   The disentangled representation per modality is ``u^m = [s^m ; c^m]`` ``(B, L, 2P)``, the
   raw (un-normalised) head outputs.

2. **CFM -- Contribution-aware Fusion Mechanism** (``use_cfm``).

   *What the abstract says:* CFM "explicitly manages the multimodal feature contributions
   dynamically".

   *What we chose:* an additive-attention score per utterance and modality, ``a^m = w^T tanh(W
   u^m) + b_m`` (``W: 2P -> P`` and ``w`` shared across modalities, ``b_m`` a learned per-modality
   bias), contribution weights ``alpha = softmax_m(a)`` over the *present* modalities only
   (absent ones are filled with the dtype's most negative value before the softmax, so they get
   exactly 0; an utterance with no present modality -- e.g. padding -- gets all-zero weights, no
   NaN), and the fused vector ``f = sum_m alpha^m W_f u^m`` (``W_f: 2P -> H`` shared), ``(B, L,
   H)``, zero where nothing is present. With one modality the softmax is identically 1, so the
   scorer is not built. ``use_cfm=False`` ("w/o CFM"): equal weights ``1 / #present`` (masked
   mean). The weights are returned as ``modality_weights`` (``(B, L)`` per modality).

3. **CRM -- Context Refusion Mechanism** (``use_crm``).

   *What the abstract says:* CRM "flexibly coordinates the introduction of dialogue contexts"
   during fusion.

   *What we chose:* a bidirectional GRU over the fused dialogue (``H/2`` per direction, packed
   with the real lengths so padding never reaches a real utterance) gives the context ``c_i``
   ``(B, L, H)``; a learned gate ``g_i = sigmoid(W_g [f_i ; c_i] + b)`` decides how much context
   to re-inject: ``gate="scalar"`` one value per utterance ``(B, L, 1)``, ``gate="vector"`` one
   per channel ``(B, L, H)``; ``r_i = LayerNorm(f_i + g_i * c_i)``. ``use_crm=False`` ("w/o
   CRM"): standard context modelling, ``r_i = LayerNorm(c_i)``, no gate. :meth:`DFERC.refuse`
   exposes this step; gate and ``r`` are zero at padding.

4. **Classifier.** ``logits = Linear(Dropout(r))``, ``(B, L, C)``; the engine's cross-entropy is
   the task loss.

Outputs: ``logits (B, L, C)``; ``aux_loss`` as in 1; ``hidden = r (B, L, H)``, zero at padding;
``modality_weights`` = modality -> ``(B, L)`` CFM weights (sum to 1 over the present modalities
of each real utterance, 0 for absent modalities and at padding).

Widths and dropout (``hidden=256, proj_dim=128, dropout=0.4``) were chosen on IEMOCAP
*validation* W-F1 (text + 8-d audio, 3 seeds each, GPU, everything else default): 128/64/0.2
gave 58.25 +- 0.52, 256/128/0.2 57.52 +- 0.53, 128/64/0.4 58.73 +- 0.59, 256/128/0.4
59.63 +- 1.21; a vector gate (57.96), loss weights 0.3 (57.99), lr 5e-4 (57.24) and batch 8
(57.34) did not help. The test split played no part.

Padding: everything but the GRU is per utterance and the GRU runs on packed sequences, so the
logits of real utterances do not depend on the batch's padding. The model never sees dataset
names; widths come from ``input_dims``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from merc.config import ModelConfig, require, require_choice
from merc.data.collate import Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.contrastive import supervised_contrastive

GATES = ("scalar", "vector")


@dataclass
class DFERCConfig(ModelConfig):
    hidden: int = 256
    """Width ``H`` of the unimodal encoders, the fused vector, the context layer and ``hidden``
    (must be even: the bidirectional GRU has ``H/2`` units per direction)."""
    proj_dim: int = 128
    """Width ``P`` of each DDM head; ``u^m = [s^m ; c^m]`` is ``2P`` wide."""
    use_ddm: bool = True
    """DDM contrastive losses; False = the "w/o DDM" ablation (heads kept, no loss)."""
    modality_weight: float = 0.1
    """Weight of the modality-level contrastive term ``L_mod`` (on ``s``) in ``aux_loss``."""
    utterance_weight: float = 0.1
    """Weight of the utterance-level contrastive term ``L_utt`` (on ``c``) in ``aux_loss``."""
    temperature: float = 0.1
    """Temperature ``tau`` of both supervised contrastive terms."""
    max_contrast: int = 4096
    """At most this many anchors per contrastive term (drawn from the torch RNG when the batch
    has more valid (utterance, modality) vectors); the contrast set is always all of them."""
    use_cfm: bool = True
    """Contribution-aware fusion (learned per-utterance modality weights); False = the "w/o CFM"
    ablation (equal weights over the present modalities)."""
    use_crm: bool = True
    """Gated context refusion ``LN(f + g * c)``; False = the "w/o CRM" ablation (``LN(c)``)."""
    gate: str = "scalar"
    """CRM gate granularity: ``scalar`` (one value per utterance) or ``vector`` (per channel)."""
    dropout: float = 0.4
    """Dropout after the unimodal encoders and before the classifier."""

    def __post_init__(self) -> None:
        require_choice("gate", self.gate, GATES)
        require(self.hidden >= 2 and self.hidden % 2 == 0, "hidden",
                f"expected an even number >= 2 (BiGRU), got {self.hidden}")
        require(self.proj_dim >= 1, "proj_dim", f"expected >= 1, got {self.proj_dim}")
        require(self.temperature > 0, "temperature", f"expected > 0, got {self.temperature}")
        for name in ("modality_weight", "utterance_weight"):
            require(getattr(self, name) >= 0, name, f"expected >= 0, got {getattr(self, name)}")
        require(self.max_contrast >= 2, "max_contrast",
                f"expected >= 2, got {self.max_contrast}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"expected [0, 1), got {self.dropout}")


@register_model("df-erc", DFERCConfig, variants={
    # The three mechanisms of the abstract, one at a time.
    "w/o DDM": {"use_ddm": False},
    "w/o CFM": {"use_cfm": False},
    "w/o CRM": {"use_crm": False},
    # The documented alternative of the config.
    "gate=vector": {"gate": "vector"},
})
class DFERC(nn.Module):
    """DF-ERC: contrastive modality/utterance disentanglement -> weighted fusion -> gated BiGRU.

    DDM (two contrastive heads per modality), CFM (contribution weights over the present
    modalities), CRM (gated re-injection of BiGRU dialogue context).

    See the module docstring for the shapes and for what the abstract says versus what we chose.
    """

    def __init__(self, input_dims: dict[str, int], num_classes: int,
                 config: DFERCConfig) -> None:
        super().__init__()
        c = self.config = config
        self.modalities = sorted(input_dims)
        self.num_classes = num_classes
        H, P = c.hidden, c.proj_dim

        # 0. Unimodal encoders.
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(input_dims[m], H), nn.GELU(),
                                                        nn.Dropout(c.dropout))
                                       for m in self.modalities})
        # 1. DDM heads: modality space s^m and utterance space c^m.
        self.modality_heads = nn.ModuleDict({m: nn.Linear(H, P) for m in self.modalities})
        self.utterance_heads = nn.ModuleDict({m: nn.Linear(H, P) for m in self.modalities})
        # 2. CFM: a^m = w^T tanh(W u^m) + b_m; f = sum_m alpha^m W_f u^m.
        if c.use_cfm and len(self.modalities) > 1:
            self.score_proj = nn.Linear(2 * P, P)
            self.score_vec = nn.Linear(P, 1, bias=False)
            self.modality_bias = nn.Parameter(torch.zeros(len(self.modalities)))
        else:
            self.score_proj = self.score_vec = self.modality_bias = None
        self.fuse_proj = nn.Linear(2 * P, H)
        # 3. CRM: BiGRU context + gate + LayerNorm.
        self.context = nn.GRU(H, H // 2, batch_first=True, bidirectional=True)
        self.gate = nn.Linear(2 * H, 1 if c.gate == "scalar" else H) if c.use_crm else None
        self.norm = nn.LayerNorm(H)
        # 4. Classifier.
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(H, num_classes)

    # ---------------------------------------------------------------------------- inputs

    def valid_masks(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Modality -> ``(B, L)`` bool: real utterances whose feature is present."""
        return {m: batch.valid(m) for m in self.modalities}

    # ---------------------------------------------------------------------------- DDM

    def disentangle(self, batch: Batch) -> tuple[dict[str, torch.Tensor],
                                                 dict[str, torch.Tensor]]:
        """``(s, c)``: modality -> ``(B, L, P)`` modality-space and utterance-space vectors
        (raw head outputs; not masked -- use :meth:`valid_masks`)."""
        feats = batch.select(self.modalities)
        s, c = {}, {}
        for m in self.modalities:
            h = self.encoders[m](feats[m])
            s[m] = self.modality_heads[m](h)
            c[m] = self.utterance_heads[m](h)
        return s, c

    def _anchors(self, n: int, device: torch.device) -> torch.Tensor | None:
        k = self.config.max_contrast
        if n <= k:
            return None
        return torch.randperm(n)[:k].to(device)        # default CPU generator: reproducible

    def ddm_terms(self, batch: Batch, s: dict[str, torch.Tensor] | None = None,
                  c: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Unweighted DDM terms ``{"modality": L_mod, "utterance": L_utt}`` over the valid
        (utterance, modality) vectors; empty with fewer than two modalities. Does not look at
        ``use_ddm`` or the training mode (``forward`` does)."""
        if len(self.modalities) < 2:
            return {}
        if s is None or c is None:
            s, c = self.disentangle(batch)
        valid = self.valid_masks(batch)
        B, L = batch.mask.shape
        utt_index = torch.arange(B * L, device=batch.mask.device).view(B, L)
        zs, zc, mod_labels, utt_labels = [], [], [], []
        for i, m in enumerate(self.modalities):
            sel = valid[m]
            zs.append(s[m][sel])
            zc.append(c[m][sel])
            mod_labels.append(torch.full((int(sel.sum()),), i, dtype=torch.long,
                                         device=sel.device))
            utt_labels.append(utt_index[sel])
        zs = F.normalize(torch.cat(zs), dim=-1)
        zc = F.normalize(torch.cat(zc), dim=-1)
        t = self.config.temperature
        return {
            "modality": supervised_contrastive(zs, torch.cat(mod_labels), t,
                                               self._anchors(zs.shape[0], zs.device)),
            "utterance": supervised_contrastive(zc, torch.cat(utt_labels), t,
                                                self._anchors(zc.shape[0], zc.device)),
        }

    # ---------------------------------------------------------------------------- CFM

    def fuse(self, s: dict[str, torch.Tensor], c: dict[str, torch.Tensor],
             valid: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``f (B, L, H)`` and modality -> ``(B, L)`` contribution weights ``alpha``.

        Weights are a softmax over the present modalities (learned scores with ``use_cfm``,
        equal otherwise); 0 for absent modalities and where none is present."""
        u = torch.stack([torch.cat([s[m], c[m]], dim=-1) for m in self.modalities], dim=2)
        present = torch.stack([valid[m] for m in self.modalities], dim=-1)     # (B, L, M)
        if self.score_proj is not None:
            scores = self.score_vec(torch.tanh(self.score_proj(u))).squeeze(-1)  # (B, L, M)
            scores = scores + self.modality_bias
        else:
            scores = torch.zeros(present.shape, dtype=u.dtype, device=u.device)
        # The most negative finite value (not -inf): an all-absent row stays finite (uniform)
        # and is then zeroed by the mask, without NaNs in the forward or backward pass.
        scores = scores.masked_fill(~present, torch.finfo(scores.dtype).min)
        alpha = torch.softmax(scores, dim=-1) * present.to(u.dtype)              # (B, L, M)
        f = (alpha.unsqueeze(-1) * self.fuse_proj(u)).sum(dim=2)                 # (B, L, H)
        return f, {m: alpha[..., i] for i, m in enumerate(self.modalities)}

    # ---------------------------------------------------------------------------- CRM

    def contextualise(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """BiGRU over each dialogue's real utterances: ``(B, L, H)``, zero at padding."""
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(f, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.context(packed)
        ctx, _ = pad_packed_sequence(out, batch_first=True, total_length=f.shape[1])
        return ctx * mask.unsqueeze(-1).to(ctx.dtype)

    def refuse(self, f: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Context refusion: ``r (B, L, H)`` and the gate (``(B, L, 1)`` scalar or ``(B, L, H)``
        vector, in ``[0, 1]``; ``None`` without CRM). Both are zero at padding, and real
        positions do not depend on what ``f`` holds at padding."""
        keep = mask.unsqueeze(-1).to(f.dtype)
        f = f * keep
        ctx = self.contextualise(f, mask)
        if self.gate is None:                                       # "w/o CRM"
            return self.norm(ctx) * keep, None
        g = torch.sigmoid(self.gate(torch.cat([f, ctx], dim=-1))) * keep
        return self.norm(f + g * ctx) * keep, g

    # ---------------------------------------------------------------------------- forward

    def forward(self, batch: Batch) -> ModelOutput:
        c = self.config
        s, u = self.disentangle(batch)
        valid = self.valid_masks(batch)

        aux = None
        if self.training and c.use_ddm:
            terms = self.ddm_terms(batch, s, u)
            if terms:
                aux = (c.modality_weight * terms["modality"]
                       + c.utterance_weight * terms["utterance"])

        f, weights = self.fuse(s, u, valid)
        r, _ = self.refuse(f, batch.mask)
        logits = self.classifier(self.dropout(r))
        return ModelOutput(logits=logits, aux_loss=aux, hidden=r, modality_weights=weights)
