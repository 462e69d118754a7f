"""Broad Mamba with probability-guided fusion (Shou et al., "Revisiting Multi-modal Emotion
Learning with Broad State Space Models and Probability-guidance Fusion").

Pipeline per modality ``m`` (input ``xi^m``: ``(B, L, D_m)``; ``mask``: ``(B, L)``, True = real
utterance), then across modalities:

1. **Front end, Eq. 9-10.** ``xi_hat^m = Conv1D^m(xi^m) + pe_scale * PE``: a 1-D convolution
   *over the dialogue axis* (kernel ``conv_kernel``, odd, "same" padding) from ``D_m`` to
   ``d_model``, plus the sinusoidal position encoding of Eq. 10 (``use_pe``) -> ``(B, L,
   d_model)``. Padded positions are zeroed before the convolution, so a real utterance next to
   padding sees zeros -- exactly what it sees at the true end of its dialogue -- and outputs do
   not depend on the batch's padding.
2. **Context, Eq. 11.** ``context="bissm"``: the bidirectional SSM convolution
   (:class:`merc.modules.ssm.BiSSMConv`; diagonal S4D-real SSM per channel, Eq. 1-5 kernels,
   FFT convolution, separate forward/backward parameters, shared ``d`` skip) -> ``(B, L,
   d_model)``. ``context="selective"``: Mamba's selective scan in both directions instead
   (:class:`merc.modules.ssm.BiSelectiveScan`). Both zero and ignore padding.
3. **Broad learning, Eq. 12-13** (``use_bls``): ``n_feature`` linear feature-node groups of width
   ``feature_dim`` and ``m_enhance`` ReLU enhancement groups of width ``enhance_dim``;
   ``Y^m = [Z^n | H^m]`` of width ``k = n_feature*feature_dim + m_enhance*enhance_dim``
   (:mod:`merc.modules.bls`). Without BLS ("w/o BLS" ablation), ``Y^m`` is the context output.
4. **Fusion, Eq. 16-17** (``fusion``): ``pfm`` -- per-modality emotion classifier, sigmoid
   probabilities, and the probability of the modality's predicted class weighting ``Y^m`` in
   ``h^f = sum_m w^m Y^m`` (:class:`merc.modules.fusion.ProbabilityGuidedFusion`); or the
   Fig. 5 alternatives ``add``, ``concat`` and ``lmf`` (low-rank multimodal fusion).
5. **Classifier and loss, Eq. 18.** ``logits = Linear(Dropout(h^f))``; the engine adds the
   cross-entropy ``L_emo``. ``aux_loss`` carries the rest:

   * ``norm_weight * L_norm`` (Eq. 14 at the closed-form ridge ``W_b`` of Eq. 15, per utterance,
     summed over modalities; only with BLS). The target ``Y^{t/a/v}`` of Eq. 14 is ambiguous:
     §4.1 writes ``Y = [Z_1..Z_n, H_1..H_n]`` (the broad features themselves), while Eq. 8 and
     Fig. 2 define ``Y`` as the BLS's *predicted labels*, and Eq. 15 is verbatim the classical
     BLS pseudo-inverse ``W = (lam I + A^T A)^{-1} A^T Y`` fitted to the training labels. We read
     it as BLS does (``norm_target="labels"``): ``Y`` = one-hot emotion labels of the labelled
     utterances of the batch, so ``L_norm`` is the ridge residual of the best linear read-out of
     ``[Z^n | H^m]`` -- it rewards broad features from which emotions are linearly recoverable
     with a small-norm ``W_b``. ``norm_target="self"`` is the literal reading (target = the broad
     features; then ``L_norm = lam * tr(A (A^T A + lam I)^{-1} A^T) / N``, a penalty on the
     effective rank of ``[Z^n | H^m]``).
   * ``pfm_aux_weight * sum_m BCE(MLP^m(Y^m), onehot(y))`` (PFM, ``pfm_mode="max"``; summed over
     classes, averaged over labelled utterances): trains each modality's classifier of Eq. 16 on
     the labels with the same sigmoid it is read through, so its probabilities are the
     "predicted label probabilities" that guide the fusion. We count these per-modality emotion
     classifiers as part of ``L_emo`` in Eq. 18.

   With neither term active (e.g. ``use_bls=False`` and ``pfm_aux_weight=0``), and always in
   eval mode, ``aux_loss`` is ``None``: validation/test losses are the cross-entropy alone.

Departures from the paper. The variant ``paper`` (:data:`PAPER_READING`) sets every row at
once; a test checks that it differs from the default in exactly these fields. Validation
W-F1 on IEMOCAP (text + 8-d audio unless "text"); the test split chose nothing. "after": measured
once the default was in place (the variants ``L_norm literal target`` and ``pfm w/o label
loss``: ``merc train --corpus iemocap --model broad-mamba --seeds 5 model.<field>=...``, beside
the default's seeds 0-4 of the ``paper`` bench), paired t-test p over the seeds.

==================== ================================= ======= ===============================
field                paper (literal reading)           default what chose the default
==================== ================================= ======= ===============================
``conv_kernel``      Eq. 9 / Fig. 3: a "multi-scale"   1       3 seeds, T+A: 60.4 (1) vs
                     Conv1D, size not given;                   59.5 (3)
                     ``paper`` takes 3
``pe_scale``         1: Eq. 10 adds PE unscaled        0.1     3 seeds, text: 60.6 (0.1) vs
                                                               58.2 (1)
``norm_target``      ``self``: §4.1 defines Y as       labels  chosen as BLS reads Eq. 15;
                     the broad features [Z | H]                5 seeds, T+A, after: 61.24 +-
                                                               0.93 vs 60.42 +- 1.46 (p 0.26)
``pfm_aux_weight``   0: Eq. 18 is L_emo + L_norm       1       chosen as the reading of Eq. 16;
                     (no per-modality label loss)              5 seeds, T+A, after: 61.24 +-
                                                               0.93 vs 61.79 +- 1.27 (p 0.36):
                                                               not separated, kept
==================== ================================= ======= ===============================

The four together, ``paper`` against the default (5 seeds, docs/results.md "The papers' literal
models"): IEMOCAP validation 58.56 +- 0.97 vs 61.24 +- 0.93, MELD 51.57 +- 0.52 vs 55.12 +- 0.77.
Where the paper is silent (``d_model``, ``state_size``, the BLS group widths, ``dropout``,
the PFM classifier's hidden width) ``paper`` keeps merc's choice.

Outputs: ``logits (B, L, C)``; ``hidden`` = ``h^f (B, L, F)`` (for t-SNE);
``modality_weights`` = modality -> ``(B, L)`` PFM weights (0 at padding; each in ``(0, 1)``
independently, or summing to 1 over modalities with ``pfm_normalize``), ``None`` for the other
fusions. The model never sees dataset names; widths come from ``input_dims``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from merc.config import ModelConfig, require, require_choice
from merc.data.collate import IGNORE_INDEX, Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.bls import BroadLearningSystem, ridge_norm_loss
from merc.modules.fusion import FUSIONS, build_fusion
from merc.modules.position import sinusoidal_positions
from merc.modules.ssm import BiSelectiveScan, BiSSMConv


@dataclass
class BroadMambaConfig(ModelConfig):
    d_model: int = 128
    """Width ``d_m`` of each modality after the Conv1D front end (Eq. 9) and of the SSM."""
    conv_kernel: int = 1
    """Kernel size of the Conv1D over the dialogue axis (odd). 1 (a per-utterance projection, like
    the ``Conv1d(kernel_size=1)`` front ends of MMGCN-style MERC code) beat 3 on IEMOCAP
    validation W-F1 (3 seeds: 60.4 vs 59.5 text+audio; 60.8 vs 57.7 text-only without PE);
    context then comes from the SSM alone."""
    use_pe: bool = True
    """Add sinusoidal utterance-position encodings (Eq. 10); False = the "w/o PE" ablation."""
    pe_scale: float = 0.1
    """Multiplier on the position encoding. Eq. 10 adds it at scale 1, which cost IEMOCAP
    validation W-F1 in proportion to the scale (text-only, 3 seeds: 58.2 at 1, 59.5 at 0.3,
    60.6 at 0.1, 60.8 without PE); 0.1 keeps positions available at no measurable cost."""
    context: str = "bissm"
    """Context encoder: ``bissm`` (bidirectional SSM convolution, Eq. 11) or ``selective``
    (bidirectional Mamba selective scan; CUDA kernel if ``mamba_ssm`` is installed)."""
    state_size: int = 16
    """SSM state size ``N`` per channel."""
    use_bls: bool = True
    """Broad Learning System nodes (Eq. 12-13) and ``L_norm``; False = the "w/o BLS" ablation."""
    n_feature: int = 10
    """Number ``n`` of feature-node groups (paper: 10)."""
    feature_dim: int = 8
    """Width ``d_z`` of each feature-node group."""
    m_enhance: int = 30
    """Number ``m`` of enhancement-node groups (paper: 30)."""
    enhance_dim: int = 4
    """Width ``d_h`` of each enhancement-node group."""
    norm_weight: float = 1.0
    """Weight of ``L_norm`` (Eq. 14) in the loss (Eq. 18 uses 1); 0 disables it."""
    norm_lambda: float = 1.0
    """Ridge coefficient ``lambda`` of Eq. 14-15."""
    norm_target: str = "labels"
    """Target ``Y`` of Eq. 14: ``labels`` (one-hot emotions, classical BLS) or ``self`` (the broad
    features ``[Z^n | H^m]``, the paper's literal definition)."""
    fusion: str = "pfm"
    """Multimodal fusion: ``pfm`` (probability-guided, Eq. 16-17), ``add``, ``concat`` or ``lmf``
    (low-rank multimodal fusion); ``add``/``concat`` are the "w/o PFM" variants of Fig. 5."""
    pfm_mode: str = "max"
    """PFM weight: ``max`` (sigmoid probability of the modality's predicted class, a scalar per
    utterance) or ``gate`` (a sigmoid gate per feature channel, no class semantics)."""
    pfm_hidden: int = 64
    """Hidden width of each modality's PFM classifier ``MLP^m`` (Eq. 16)."""
    pfm_normalize: bool = False
    """Divide PFM weights by their sum over modalities (sum to 1) instead of Eq. 17's raw ones.
    With a single modality Eq. 17 has nothing to fuse: its raw weight ``w in (0, 1)`` only
    scales ``Y`` and with it the logits, a per-utterance temperature that left MELD's neutral
    predictions under-confident and the rest over-confident, which no single softmax
    temperature undoes; normalised, the weight is 1. The text-only zoo models set it
    (``scripts/build_zoo.py``): MELD, frozen MiniLM, causal, 5 seeds: validation W-F1 55.44 +-
    0.47 vs 54.73 +- 0.80 raw, validation ECE after temperature scaling 3.41 +- 0.78% vs 5.41
    +- 0.75%. The default stays Eq. 17's raw weight, the paper's reading."""
    pfm_aux_weight: float = 1.0
    """Weight of the per-modality label loss (sigmoid BCE) training the PFM classifiers
    (``pfm_mode=max`` only); 0 = they learn only through the fusion."""
    lmf_rank: int = 4
    """Rank of the low-rank fusion factors (``fusion=lmf``)."""
    lmf_dim: int | None = None
    """Output width of the low-rank fusion (default: the width of ``Y^m``)."""
    dropout: float = 0.3
    """Dropout on the input features, on the context output and before the classifier."""
    causal: bool = False
    """Past-only context (the live model, variant ``causal``): the Conv1D of Eq. 9 sees the
    current and ``conv_kernel - 1`` earlier utterances (left padding) and the SSM of Eq. 11 keeps
    its forward direction alone, so no prediction depends on a later utterance and
    :meth:`BroadMamba.step` gives each utterance's prediction from a fixed-size state."""

    def __post_init__(self) -> None:
        require(self.conv_kernel >= 1 and self.conv_kernel % 2 == 1, "conv_kernel",
                f"expected a positive odd number, got {self.conv_kernel}")
        require_choice("context", self.context, CONTEXTS)
        require(not (self.causal and self.context != "bissm"), "causal",
                "the causal configuration uses the SSM convolution (context=bissm)")
        require_choice("fusion", self.fusion, FUSIONS)
        require_choice("pfm_mode", self.pfm_mode, ("max", "gate"))
        require_choice("norm_target", self.norm_target, ("labels", "self"))
        require(not (self.use_bls and self.norm_weight > 0) or self.norm_lambda > 0,
                "norm_lambda", "expected > 0 (Eq. 15 needs A^T A + lambda I invertible)")
        require(0.0 <= self.dropout < 1.0, "dropout", f"expected [0, 1), got {self.dropout}")
        # Widths and counts below 1 build empty layers (a traceback deep in torch, or a model
        # that silently ignores a modality); negative loss weights turn a penalty into a reward.
        for name in ("d_model", "state_size", "n_feature", "feature_dim", "m_enhance",
                     "enhance_dim", "pfm_hidden", "lmf_rank"):
            require(getattr(self, name) >= 1, name, f"expected >= 1, got {getattr(self, name)}")
        require(self.lmf_dim is None or self.lmf_dim >= 1, "lmf_dim",
                f"expected >= 1 or null, got {self.lmf_dim}")
        for name in ("pe_scale", "norm_weight", "norm_lambda", "pfm_aux_weight"):
            require(getattr(self, name) >= 0, name, f"expected >= 0, got {getattr(self, name)}")


CONTEXTS = ("bissm", "selective")


PAPER_READING = {"conv_kernel": 3, "pe_scale": 1.0, "norm_target": "self", "pfm_aux_weight": 0.0}
"""The settings of the variant ``paper``: the module docstring's departures, each at the paper's
literal reading (Eq. 9 kernel: the paper gives no size, see there)."""


@register_model("broad-mamba", BroadMambaConfig, variants={
    # Table 3. "w/o PFM" drops the probability weights w^m of Eq. 17, leaving h^f = sum_m Y^m.
    "w/o PE": {"use_pe": False},
    "w/o BLS": {"use_bls": False},
    "w/o PFM": {"fusion": "add"},
    # Fig. 5 (pfm is the full model).
    "fusion=add": {"fusion": "add"},
    "fusion=concat": {"fusion": "concat"},
    "fusion=lmf": {"fusion": "lmf"},
    # Fig. 6.
    "w/o L_norm": {"norm_weight": 0.0},
    # The documented alternatives of the config (not in the paper's tables).
    "conv kernel 3": {"conv_kernel": 3},
    "context=selective": {"context": "selective"},
    "pfm gate": {"pfm_mode": "gate"},
    "pfm normalised": {"pfm_normalize": True},
    "pfm w/o label loss": {"pfm_aux_weight": 0.0},
    "L_norm literal target": {"norm_target": "self"},
    # Live conversations: no future anywhere (left-padded Conv1D, forward SSM only).
    "causal": {"causal": True},
    # The paper's literal model: every departure of the defaults table (module docstring) undone.
    "paper": PAPER_READING,
})
class BroadMamba(nn.Module):
    """Broad Mamba: Conv1D+PE -> bidirectional SSM -> broad learning -> probability-guided fusion.

    See the module docstring for the equations, shapes and the readings of the ambiguous parts.
    """

    def __init__(self, input_dims: dict[str, int], num_classes: int,
                 config: BroadMambaConfig) -> None:
        super().__init__()
        c = self.config = config  # values checked by BroadMambaConfig.__post_init__
        self.modalities = sorted(input_dims)
        self.num_classes = num_classes
        d = c.d_model
        # Eq. 9: one Conv1D per modality over the utterance axis, "same" length.
        # Causal: no padding in the layer; the input is padded on the left only (_conv).
        self.conv = nn.ModuleDict({m: nn.Conv1d(input_dims[m], d, c.conv_kernel,
                                                padding=0 if c.causal else c.conv_kernel // 2)
                                   for m in self.modalities})
        # Eq. 11: separate context encoders per modality (the superscripts t/a/v).
        if c.context == "bissm":
            self.context = nn.ModuleDict({m: BiSSMConv(d, c.state_size,
                                                       bidirectional=not c.causal)
                                          for m in self.modalities})
        else:
            self.context = nn.ModuleDict({m: BiSelectiveScan(d, c.state_size)
                                          for m in self.modalities})
        # Eq. 12-13.
        if c.use_bls:
            self.bls = nn.ModuleDict({m: BroadLearningSystem(d, c.n_feature, c.feature_dim,
                                                             c.m_enhance, c.enhance_dim)
                                      for m in self.modalities})
            width = self.bls[self.modalities[0]].out_dim
        else:
            self.bls = None
            width = d
        # Eq. 16-17 (or a Fig. 5 alternative).
        self.fusion = build_fusion(c.fusion, self.modalities, width, num_classes,
                                   pfm_hidden=c.pfm_hidden, pfm_mode=c.pfm_mode,
                                   pfm_normalize=c.pfm_normalize, lmf_rank=c.lmf_rank,
                                   lmf_dim=c.lmf_dim, dropout=c.dropout)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.fusion.out_dim, num_classes)

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-modality representations ``Y^m``: modality -> ``(B, L, k)``, zero at padding."""
        features = batch.select(self.modalities)
        mask = batch.mask
        keep = mask.unsqueeze(-1)
        reps = {}
        for m in self.modalities:
            x = self.dropout(features[m] * keep)                        # zero padding first
            x = self._conv(m, x.transpose(1, 2)).transpose(1, 2)         # Eq. 9  (B, L, d)
            if self.config.use_pe:                                       # Eq. 10
                x = x + self.config.pe_scale * sinusoidal_positions(x.shape[1], x.shape[2],
                                                                    x.device, x.dtype)
            x = self.dropout(self.context[m](x, mask))                   # Eq. 11 (B, L, d)
            y = self.bls[m](x) if self.bls is not None else x            # Eq. 12-13 (B, L, k)
            reps[m] = y * keep
        return reps

    def _conv(self, m: str, x: torch.Tensor) -> torch.Tensor:
        """Eq. 9 on ``x (B, D_m, L)`` -> ``(B, d, L)``: "same" padding, or, causal, ``k - 1``
        zeros on the left only (position ``j`` sees inputs ``j - k + 1 .. j``)."""
        if self.config.causal:
            x = F.pad(x, (self.config.conv_kernel - 1, 0))
        return self.conv[m](x)

    def init_stream(self, device=None, dtype=torch.float32) -> dict:
        """The state of one live conversation before its first utterance (causal model only):
        per modality the Conv1D's last ``k - 1`` inputs ``(1, D_m, k - 1)`` and the SSM state
        ``(1, d, N)``, plus the position ``t``. Its size never grows."""
        if not self.config.causal:
            raise ValueError("streaming needs the causal configuration (model.causal=true, "
                             "variant 'causal'): the bidirectional model reads the future")
        k = self.config.conv_kernel
        return {"t": 0,
                "tail": {m: torch.zeros(1, self.conv[m].in_channels, k - 1, device=device,
                                        dtype=dtype) for m in self.modalities},
                "h": {m: self.context[m].init_state(1, device=device, dtype=dtype)
                      for m in self.modalities}}

    @torch.no_grad()
    def step(self, features: dict[str, torch.Tensor], state: dict
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """One utterance of a live conversation (eval mode, causal model): ``features`` maps
        each modality to its normalised vector ``(1, D_m)`` (zeros where the utterance lacks
        the medium, as in a batch); ``state`` (:meth:`init_stream`) is updated in place.

        Returns ``logits (1, C)`` and the PFM weights (modality -> ``(1,)``) or ``None``: equal,
        up to float rounding, to what :meth:`forward` gives for this utterance on the whole
        conversation so far -- and therefore on the finished conversation, since the causal
        model never reads ahead. Cost: one Conv1D window, one SSM update and the per-utterance
        layers, independent of ``t``.
        """
        c = self.config
        reps = {}
        for m in self.modalities:
            x = features[m].unsqueeze(-1)                                # (1, D_m, 1)
            window = torch.cat([state["tail"][m], x], dim=-1)            # (1, D_m, k)
            state["tail"][m] = window[..., 1:]
            z = self.conv[m](window)[..., -1]                            # Eq. 9  (1, d)
            if c.use_pe:                                                 # Eq. 10 at position t
                z = z + c.pe_scale * sinusoidal_positions(1, z.shape[-1], z.device, z.dtype,
                                                          start=state["t"])
            z, state["h"][m] = self.context[m].step(z, state["h"][m])     # Eq. 11 (1, d)
            y = z.unsqueeze(1)                                           # (1, 1, d)
            reps[m] = self.bls[m](y) if self.bls is not None else y      # Eq. 12-13
        state["t"] += 1
        fused = self.fusion(reps)                                        # Eq. 16-17
        logits = self.head(fused.fused)[:, 0]                            # (1, C)
        weights = ({m: w[:, 0] for m, w in fused.weights.items()}
                   if fused.weights is not None else None)
        return logits, weights

    def _labelled(self, batch: Batch) -> torch.Tensor:
        """``(B, L)`` utterances with a usable label. Out-of-range labels are left to the engine's
        cross-entropy to report; the auxiliary terms just skip them."""
        return (batch.labels != IGNORE_INDEX) & (batch.labels < self.num_classes)

    def norm_loss(self, reps: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor | None:
        """``sum_m L_norm^m`` (Eq. 14-15) over the valid utterances, or ``None`` if inactive."""
        c = self.config
        if self.bls is None or c.norm_weight <= 0:
            return None
        if c.norm_target == "labels":
            valid = self._labelled(batch)
            if not valid.any():
                return None
            target = F.one_hot(batch.labels[valid], self.num_classes)
            losses = [ridge_norm_loss(reps[m][valid], target.to(reps[m].dtype), c.norm_lambda)
                      for m in self.modalities]
        else:
            valid = batch.mask
            losses = [ridge_norm_loss(reps[m][valid], reps[m][valid], c.norm_lambda)
                      for m in self.modalities]
        return torch.stack(losses).sum()

    def forward(self, batch: Batch) -> ModelOutput:
        reps = self.encode(batch)
        fused = self.fusion(reps)                                        # Eq. 16-17
        h = fused.fused                                                  # (B, L, F)
        logits = self.head(self.dropout(h))                              # (B, L, C)

        aux = []
        # The auxiliary terms only shape training; in eval mode they would cost a ridge solve
        # per batch (about 30% of inference time) for a number nobody reads.
        norm = self.norm_loss(reps, batch) if self.training else None
        if norm is not None:
            aux.append(self.config.norm_weight * norm)
        valid = self._labelled(batch)
        if (self.training and fused.modality_logits is not None
                and self.config.pfm_aux_weight > 0 and valid.any()):
            target = F.one_hot(batch.labels[valid], self.num_classes).float()
            pfm = sum(F.binary_cross_entropy_with_logits(
                fused.modality_logits[m][valid], target.to(h.dtype), reduction="sum")
                / target.shape[0] for m in self.modalities)
            aux.append(self.config.pfm_aux_weight * pfm)

        weights = None
        if fused.weights is not None:
            keep = batch.mask.to(h.dtype)
            weights = {m: w * keep for m, w in fused.weights.items()}
        return ModelOutput(logits=logits, aux_loss=sum(aux) if aux else None, hidden=h,
                           modality_weights=weights)
