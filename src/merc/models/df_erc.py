"""DF-ERC: disentanglement and fusion on modality and context (Li, Fei, Liao, Zhao, Teng, Chua,
Ji and Li, 2023, "Revisiting Disentanglement and Fusion on Modality and Context in Conversational
Multimodal Emotion Recognition").

The default form (sections 1-3) was written from the abstract alone. It names three mechanisms
-- DDM, CFM and CRM -- and says what each is for, but gives no equations, widths or loss weights;
everything below the "what the abstract says" lines is our own design. The authors' code
(GitHub ``WHULACC/DFERC``, commit b013eb3; files cited as ``model.py:N`` for ``src/model.py``)
differs in every mechanism; section 5 implements it behind the switches ``ddm``, ``cfm`` and
``crm`` (``"official"``; the ``official`` variant turns all three on). The defaults stay the
abstract form until a validation comparison decides (issue 15).

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

Outputs: ``logits (B, L, C)``; ``aux_loss`` as in 1 (official forms: plus the CFM and alignment
losses of section 5; training mode only); ``hidden = r (B, L, H)`` (official CFM / CRM: wider, see
section 5), zero at padding; ``modality_weights`` = modality -> ``(B, L)`` CFM weights (sum to 1
over the present modalities of each real utterance, 0 for absent modalities and at padding).

Widths and dropout (``hidden=256, proj_dim=128, dropout=0.4``) were chosen on IEMOCAP
*validation* W-F1 (text + 8-d audio, 3 seeds each, GPU, everything else default): 128/64/0.2
gave 58.25 +- 0.52, 256/128/0.2 57.52 +- 0.53, 128/64/0.4 58.73 +- 0.59, 256/128/0.4
59.63 +- 1.21; a vector gate (57.96), loss weights 0.3 (57.99), lr 5e-4 (57.24) and batch 8
(57.34) did not help. The test split played no part.

5. **The official code** (``ddm`` / ``cfm`` / ``crm`` = ``"official"``; read from
   ``WHULACC/DFERC`` ``src/model.py``, ``src/layer.py``, ``src/contrastive.py``,
   ``src/tools.py``, ``src/loader.py``, ``src/engine.py``, ``src/iemo_config.yaml``).

   * ``ddm="official"``: heads ``s^m = GELU(Linear_{H->H}(Dropout_0.2(h^m)))`` and ``c^m =
     GELU(Linear(Dropout(s^m)))`` -- the utterance head is stacked on the modality head's
     output, not beside it (``model.py:55-61``, ``:116-126``; ``MLP`` = Dropout 0.2 -> Linear
     -> GELU, ``layer.py:7-19``). SupCon on the L2-normalised ``s`` (modality labels) and ``c``
     (utterance labels) (``contrastive.py:25``, ``model.py:119-130``), temperature 1 (``cl_temp``,
     ``iemo_config.yaml:82``), loss ``0.4 (L_mod + L_utt)`` (``cl_weight``, ``model.py:277``,
     ``iemo_config.yaml:81``): the variant sets ``temperature=1``, ``modality_weight =
     utterance_weight = 0.4``. Per-modality output ``x^m = [h^m ; ddm_scale (s^m + c^m)]``,
     ``(B, L, 2H)`` (``model.py:132-134``, ``:273-275``). *Deviation:* the official modality
     labels are ``1, 1, 2`` for text, audio, video (``model.py:120``: ``new_ones`` then
     ``new_zeros + 1``), so text and audio are each other's positives -- a bug; merc keeps one
     distinct label per modality. The official ``SupConLoss`` multiplies the loss by the
     temperature (``contrastive.py:113-114``): identical at temperature 1.
   * ``cfm="official"``: per modality a classifier ``GELU(Linear_{2H->C}(Dropout_0.2(x^m)))``
     (GELU on the logits, as ``model.py:71-73`` with ``layer.py:7-19``) trained by cross-
     entropy, and a confidence ``c_m = sigmoid(Linear_{2H->1}(Dropout_0.2(x^m)))``
     (``model.py:67-69``, ``layer.py:21-33``) trained by MSE toward the softmax probability of
     the true class, not detached (``model.py:148-163``); CFM loss = sum over modalities of CE +
     MSE (``model.py:165-169``), weight ``conf_loss_weight`` = 1 (``iemo_config.yaml:83``).
     Weights ``w_m = c_m / sum c`` (``model.py:171-175``) over the *present* modalities (merc:
     absent modalities get ``w = 0`` and leave both sums); fused ``f = [conf_weight sum_m w_m x^m
     ; sum_m x^m]``, ``(B, L, 4H)``, ``conf_weight`` = 0.9 (``model.py:285``,
     ``iemo_config.yaml:85``). ``modality_weights`` = ``w``. *Deviation:* the official
     per-modality CE is class-weighted with ``[1.0] + [1.3] * (C - 1)`` (``model.py:78``,
     ``:143``, ``label_weight`` ``iemo_config.yaml:76``) -- weight 1 for class 0 of *its* label
     order, 1.3 for the rest; merc's per-modality CE is unweighted (the
     engine's class weighting applies to the main loss). ``use_cfm=False``: equal weights, no
     classifier/confidence heads, no CFM loss.
   * ``crm="official"``: a 2-layer bidirectional LSTM over ``f`` (``F/2`` units per direction,
     output ``F`` wide; ``model.py:46-53``) with locked dropout ``lstm_dropout`` = 0.3 before
     each layer (``layer.py:143-153``), packed with the real lengths. Context of utterance ``i``:
     ``o_{i-1} + o_{i+1}`` -- its own output excluded, a missing neighbour is zero
     (``model.py:187-192``) -- scaled by ``context_weight (1 - s_i)``, ``context_weight`` = 0.8
     (``sim_weight``, ``iemo_config.yaml:86``), where ``s_i`` is the mean cosine over the modality
     pairs of the alignment projections ``a^m = GELU(Linear_{2H->500}(Dropout_0.2(x^m)))``
     (``model.py:63-65``, ``:242-246``; merc: over the pairs of present modalities, 0 with fewer
     than two), detached as the official ``.tolist()`` (``model.py:185``); ``r = [f ; context]``,
     ``(B, L, 2F)`` (``model.py:199``). Prototype alignment loss (``model.py:214-239``, ``:248``),
     weight ``align_weight`` = 0.7 (``sim_loss``, ``iemo_config.yaml:87``), margin 0.1
     (``:75``): see :meth:`DFERC.alignment_loss` -- the official "running" prototype is the
     in-batch class mean, since ``prototype_num`` (``model.py:76``) is never incremented.
     *Deviation:* no weight-drop (DropConnect 0.3 on the recurrent weights, ``model.py:47``,
     ``:52``, ``layer.py:133-135``, ``:172-202``). ``use_crm=False``: ``r = f``.
   * Classifier ``Linear(r)`` (``model.py:42-44``, ``:291``); merc keeps its ``Dropout(dropout)``
     before it (the variant sets ``dropout=0.2``, the official encoder dropout,
     ``model.py:25``). The official-mode heads use the official Kaiming-uniform (leaky-ReLU)
     init (``layer.py:206-211``, ``model.py:81``); merc's encoders and classifier keep torch's.
   * *Not (yet) followed:* the text path -- RoBERTa-large fine-tuned over each dialogue packed
     into <= 512 tokens, utterance vector = mean of its first and last sub-token outputs
     (``model.py:86-89``; ``max_doc_length`` ``iemo_config.yaml:13``), then ``Linear(1024 ->
     300) -> Tanh -> Dropout 0.2`` (``model.py:22-26``); merc's unimodal encoders are
     ``Linear -> GELU -> Dropout`` on pre-extracted features. ``H`` = 300 officially
     (``iemo_config.yaml:50``); merc's default 256.
   * *Official training settings, not registered as DF-ERC's defaults* (that would change
     today's results; issue 15): AdamW (``tools.py:65``), lr 5e-4, encoder lr 2e-5, betas (0.9,
     0.84), eps 1e-7, weight decay 0.01 (``iemo_config.yaml:15-18``, ``:25-26``), none on bias /
     LayerNorm (``tools.py:57-63``); 100 warm-up steps then linear decay
     (``tools.py:66-68``); batch 2 dialogues (``iemo_config.yaml:12``), 20 epochs (``:28``),
     patience 10 (``:19``, ``engine.py:131``), clip 1.0 (``:20``, ``engine.py:44``); main
     cross-entropy class-weighted as above (``model.py:79``, ``:293``); validation = a random
     10% of the training dialogues (``loader.py:120-124``, ``:235``); best epoch on validation
     weighted F1 (``engine.py:86``, ``:116``).

Padding: everything but the GRU / LSTM is per utterance and they run on packed sequences (the
official neighbour context zeroes padding first), so the logits of real utterances do not depend
on the batch's padding. The model never sees dataset names; widths come from ``input_dims``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from merc.config import ModelConfig, require, require_choice
from merc.data.collate import IGNORE_INDEX, Batch
from merc.models.registry import ModelOutput, register_model
from merc.modules.contrastive import supervised_contrastive

GATES = ("scalar", "vector")
DDM_MODES = ("abstract", "official")
CFM_MODES = ("attention", "official")
CRM_MODES = ("gru", "official")
OFFICIAL_HEAD_DROPOUT = 0.2
"""Dropout of the official ``MLP`` / ``MlpSigmoid`` heads (``src/layer.py:8``, ``:22``)."""


@dataclass
class DFERCConfig(ModelConfig):
    hidden: int = 256
    """Width ``H`` of the unimodal encoders, the fused vector, the context layer and ``hidden``
    (must be even: the bidirectional GRU has ``H/2`` units per direction)."""
    proj_dim: int = 128
    """Width ``P`` of each DDM head; ``u^m = [s^m ; c^m]`` is ``2P`` wide (``ddm="abstract"``;
    the official heads are ``H -> H``)."""
    ddm: str = "abstract"
    """DDM form: ``abstract`` (parallel linear heads, ``u = [s ; c]``) or ``official`` (GELU
    heads, utterance head stacked on the modality head, ``x = [h ; ddm_scale * (s + c)]``)."""
    cfm: str = "attention"
    """CFM form: ``attention`` (unsupervised additive attention) or ``official`` (per-modality
    classifier + supervised confidence, ``[conf_weight * sum w x ; sum x]``)."""
    crm: str = "gru"
    """CRM form: ``gru`` (gated BiGRU refusion) or ``official`` (2-layer BiLSTM, neighbour context
    scaled by ``context_weight * (1 - s_i)``, concatenated; prototype alignment loss)."""
    use_ddm: bool = True
    """DDM contrastive losses; False = the "w/o DDM" ablation (heads kept, no loss)."""
    modality_weight: float = 0.1
    """Weight of the modality-level contrastive term ``L_mod`` (on ``s``) in ``aux_loss``."""
    utterance_weight: float = 0.1
    """Weight of the utterance-level contrastive term ``L_utt`` (on ``c``) in ``aux_loss``."""
    temperature: float = 0.1
    """Temperature ``tau`` of both supervised contrastive terms."""
    ddm_scale: float = 0.4
    """``ddm="official"``: scale of ``s + c`` in ``x = [h ; ddm_scale * (s + c)]`` (the official
    ``cl_weight``)."""
    max_contrast: int = 4096
    """At most this many anchors per contrastive term (drawn from the torch RNG when the batch
    has more valid (utterance, modality) vectors); the contrast set is always all of them."""
    use_cfm: bool = True
    """Contribution-aware fusion (learned per-utterance modality weights); False = the "w/o CFM"
    ablation (equal weights over the present modalities; ``cfm="official"``: no confidence
    heads and no CFM loss)."""
    conf_weight: float = 0.9
    """``cfm="official"``: scale of the confidence-weighted sum in the fused vector."""
    conf_loss_weight: float = 1.0
    """``cfm="official"``: weight of the CFM loss (per-modality CE + confidence MSE)."""
    use_crm: bool = True
    """Gated context refusion ``LN(f + g * c)``; False = the "w/o CRM" ablation (``LN(c)``;
    ``crm="official"``: no context part, ``r = f``)."""
    gate: str = "scalar"
    """CRM gate granularity: ``scalar`` (one value per utterance) or ``vector`` (per channel)."""
    context_weight: float = 0.8
    """``crm="official"``: scale of the neighbour context (the official ``sim_weight``)."""
    lstm_dropout: float = 0.3
    """``crm="official"``: locked (variational) dropout before each BiLSTM layer."""
    align_dim: int = 500
    """``crm="official"``: width of the alignment projections (the official ``align_size``)."""
    align_margin: float = 0.1
    """``crm="official"``: hinge margin of the prototype alignment loss."""
    align_weight: float = 0.7
    """``crm="official"``: weight of the prototype alignment loss in ``aux_loss``."""
    dropout: float = 0.4
    """Dropout after the unimodal encoders and before the classifier."""

    def __post_init__(self) -> None:
        require_choice("gate", self.gate, GATES)
        require_choice("ddm", self.ddm, DDM_MODES)
        require_choice("cfm", self.cfm, CFM_MODES)
        require_choice("crm", self.crm, CRM_MODES)
        require(self.hidden >= 2 and self.hidden % 2 == 0, "hidden",
                f"expected an even number >= 2 (BiGRU), got {self.hidden}")
        require(self.proj_dim >= 1, "proj_dim", f"expected >= 1, got {self.proj_dim}")
        require(self.align_dim >= 1, "align_dim", f"expected >= 1, got {self.align_dim}")
        require(self.temperature > 0, "temperature", f"expected > 0, got {self.temperature}")
        for name in ("modality_weight", "utterance_weight", "ddm_scale", "conf_weight",
                     "conf_loss_weight", "context_weight", "align_margin", "align_weight"):
            require(getattr(self, name) >= 0, name, f"expected >= 0, got {getattr(self, name)}")
        require(self.max_contrast >= 2, "max_contrast",
                f"expected >= 2, got {self.max_contrast}")
        for name in ("dropout", "lstm_dropout"):
            require(0.0 <= getattr(self, name) < 1.0, name,
                    f"expected [0, 1), got {getattr(self, name)}")


def _official_mlp(n_in: int, n_out: int, last: nn.Module) -> nn.Sequential:
    """The official ``MLP`` / ``MlpSigmoid``: Dropout(0.2) -> Linear -> GELU / Sigmoid
    (``src/layer.py:7-33``), its weight initialised as the official ``init_esim_weights``
    (Kaiming-uniform, leaky-ReLU gain; ``src/layer.py:206-211``, applied at ``src/model.py:81``)."""
    linear = nn.Linear(n_in, n_out)
    nn.init.kaiming_uniform_(linear.weight, mode="fan_in", nonlinearity="leaky_relu")
    return nn.Sequential(nn.Dropout(OFFICIAL_HEAD_DROPOUT), linear, last)


def neighbour_context(o: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official CRM context ``ctx_i = o_{i-1} + o_{i+1}`` (``src/model.py:187-192``): the
    utterance's own state is excluded; a neighbour outside the dialogue (first/last real
    utterance, padding) counts as zero. ``o (B, L, D)``, ``mask (B, L)``; zero at padding."""
    keep = mask.unsqueeze(-1).to(o.dtype)
    o = o * keep
    prev = F.pad(o[:, :-1], (0, 0, 1, 0))
    nxt = F.pad(o[:, 1:], (0, 0, 0, 1))
    return (prev + nxt) * keep


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """One dropout mask per sequence and channel, shared over time (``src/layer.py:156-168``)."""
    if not training or p == 0:
        return x
    keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * keep


@register_model("df-erc", DFERCConfig, variants={
    # The three mechanisms of the abstract, one at a time.
    "w/o DDM": {"use_ddm": False},
    "w/o CFM": {"use_cfm": False},
    "w/o CRM": {"use_crm": False},
    # The documented alternative of the config.
    "gate=vector": {"gate": "vector"},
    # The authors' code (WHULACC/DFERC), mechanism by mechanism (module docstring, section 5).
    "official": {"ddm": "official", "cfm": "official", "crm": "official",
                 "temperature": 1.0, "modality_weight": 0.4, "utterance_weight": 0.4,
                 "dropout": 0.2},
})
class DFERC(nn.Module):
    """DF-ERC: contrastive modality/utterance disentanglement -> weighted fusion -> context.

    DDM (two contrastive heads per modality), CFM (contribution weights over the present
    modalities), CRM (re-injection of dialogue context); each in its abstract-based form
    (default) or the official code's form (``ddm`` / ``cfm`` / ``crm`` = ``"official"``).

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
        if c.ddm == "official":
            self.modality_heads = nn.ModuleDict({m: _official_mlp(H, H, nn.GELU())
                                                 for m in self.modalities})
            self.utterance_heads = nn.ModuleDict({m: _official_mlp(H, H, nn.GELU())
                                                  for m in self.modalities})
            U = 2 * H                                         # x^m = [h ; scale (s + c)]
        else:
            self.modality_heads = nn.ModuleDict({m: nn.Linear(H, P) for m in self.modalities})
            self.utterance_heads = nn.ModuleDict({m: nn.Linear(H, P) for m in self.modalities})
            U = 2 * P                                         # u^m = [s ; c]
        # 2. CFM.
        self.score_proj = self.score_vec = self.modality_bias = self.fuse_proj = None
        self.predictors = self.confidences = None
        if c.cfm == "official":
            if c.use_cfm:
                self.predictors = nn.ModuleDict({m: _official_mlp(U, num_classes, nn.GELU())
                                                 for m in self.modalities})
                self.confidences = nn.ModuleDict({m: _official_mlp(U, 1, nn.Sigmoid())
                                                  for m in self.modalities})
            Fw = 2 * U                                        # [conf_weight sum w x ; sum x]
        else:
            # a^m = w^T tanh(W u^m) + b_m; f = sum_m alpha^m W_f u^m.
            if c.use_cfm and len(self.modalities) > 1:
                self.score_proj = nn.Linear(U, P)
                self.score_vec = nn.Linear(P, 1, bias=False)
                self.modality_bias = nn.Parameter(torch.zeros(len(self.modalities)))
            self.fuse_proj = nn.Linear(U, H)
            Fw = H
        self.fused_dim = Fw
        # 3. CRM.
        self.context = self.gate = self.norm = self.lstms = self.aligners = None
        if c.crm == "official":
            self.lstms = nn.ModuleList([
                nn.LSTM(Fw, Fw // 2, batch_first=True, bidirectional=True) for _ in range(2)])
            self.aligners = nn.ModuleDict({m: _official_mlp(U, c.align_dim, nn.GELU())
                                           for m in self.modalities})
            out = 2 * Fw if c.use_crm else Fw
        else:
            self.context = nn.GRU(Fw, Fw // 2, batch_first=True, bidirectional=True)
            self.gate = (nn.Linear(2 * Fw, 1 if c.gate == "scalar" else Fw)
                         if c.use_crm else None)
            self.norm = nn.LayerNorm(Fw)
            out = Fw
        # 4. Classifier.
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(out, num_classes)

    # ---------------------------------------------------------------------------- inputs

    def valid_masks(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Modality -> ``(B, L)`` bool: real utterances whose feature is present."""
        return {m: batch.valid(m) for m in self.modalities}

    def labelled(self, batch: Batch) -> torch.Tensor:
        """``(B, L)`` utterances with a usable label (for the supervised CFM / CRM losses)."""
        return (batch.labels != IGNORE_INDEX) & (batch.labels < self.num_classes)

    # ---------------------------------------------------------------------------- DDM

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Modality -> ``h^m (B, L, H)``."""
        feats = batch.select(self.modalities)
        return {m: self.encoders[m](feats[m]) for m in self.modalities}

    def disentangle(self, batch: Batch, h: dict[str, torch.Tensor] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(s, c)``: modality -> modality-space and utterance-space vectors (``(B, L, P)``
        abstract, ``(B, L, H)`` official, where ``c = utterance_head(s)``); raw head outputs,
        not masked -- use :meth:`valid_masks`."""
        if h is None:
            h = self.encode(batch)
        s, c = {}, {}
        for m in self.modalities:
            s[m] = self.modality_heads[m](h[m])
            c[m] = self.utterance_heads[m](s[m] if self.config.ddm == "official" else h[m])
        return s, c

    def modality_vectors(self, h: dict[str, torch.Tensor], s: dict[str, torch.Tensor],
                         c: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality input of the fusion: ``[s ; c]`` (abstract) or ``[h ; ddm_scale (s +
        c)]`` (official, ``src/model.py:132-134``, ``:273-275``)."""
        if self.config.ddm == "official":
            k = self.config.ddm_scale
            return {m: torch.cat([h[m], k * (s[m] + c[m])], dim=-1) for m in self.modalities}
        return {m: torch.cat([s[m], c[m]], dim=-1) for m in self.modalities}

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

    def fuse(self, u: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Attention CFM: ``f (B, L, H)`` and modality -> ``(B, L)`` contribution weights.

        Weights are a softmax over the present modalities (learned scores with ``use_cfm``,
        equal otherwise); 0 for absent modalities and where none is present."""
        u = torch.stack([u[m] for m in self.modalities], dim=2)
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

    def confidence(self, x: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Official CFM heads: modality -> logits ``(B, L, C)`` and confidence ``(B, L)`` in
        ``(0, 1)`` (``src/model.py:139-141``, ``:156-158``). Requires ``use_cfm``."""
        logits = {m: self.predictors[m](x[m]) for m in self.modalities}
        conf = {m: self.confidences[m](x[m]).squeeze(-1) for m in self.modalities}
        return logits, conf

    def fuse_official(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                      conf: dict[str, torch.Tensor] | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Official CFM fusion ``f = [conf_weight * sum_m w_m x_m ; sum_m x_m]`` ``(B, L, 4H)``
        with ``w_m = c_m / sum_n c_n`` over the present modalities (``src/model.py:171-175``,
        ``:285``); ``conf=None`` ("w/o CFM"): ``w_m = 1 / #present``. Absent modalities have
        ``w = 0`` and are left out of both sums; everything is zero where nothing is present."""
        present = torch.stack([valid[m] for m in self.modalities], dim=-1)
        pf = present.to(x[self.modalities[0]].dtype)
        if conf is None:
            raw = pf
        else:
            raw = torch.stack([conf[m] for m in self.modalities], dim=-1) * pf
        w = raw / (raw.sum(dim=-1, keepdim=True) + 1e-13)                          # (B, L, M)
        xs = torch.stack([x[m] for m in self.modalities], dim=2) * pf.unsqueeze(-1)
        f = torch.cat([self.config.conf_weight * (w.unsqueeze(-1) * xs).sum(dim=2),
                       xs.sum(dim=2)], dim=-1)
        return f, {m: w[..., i] for i, m in enumerate(self.modalities)}

    def cfm_loss(self, logits: dict[str, torch.Tensor], conf: dict[str, torch.Tensor],
                 labels: torch.Tensor, valid: dict[str, torch.Tensor],
                 labelled: torch.Tensor) -> torch.Tensor | None:
        """Official CFM loss: per modality, cross-entropy of its classifier plus MSE of its
        confidence toward the softmax probability of the true class (not detached, as in
        ``src/model.py:148-163``), summed over modalities; each term a mean over the modality's
        valid labelled utterances. ``None`` if no utterance qualifies."""
        total = None
        for m in self.modalities:
            sel = valid[m] & labelled
            if not sel.any():
                continue
            y = labels[sel]
            z = logits[m][sel]
            p_true = torch.softmax(z, dim=-1).gather(1, y.unsqueeze(1)).squeeze(1)
            term = F.cross_entropy(z, y) + F.mse_loss(conf[m][sel], p_true)
            total = term if total is None else total + term
        return total

    # ---------------------------------------------------------------------------- CRM

    def contextualise(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """BiGRU over each dialogue's real utterances: ``(B, L, F)``, zero at padding."""
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

    def lstm_states(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Official CRM encoder: 2 BiLSTM layers, locked dropout before each (``src/layer.py:
        143-153``), packed so padding never reaches a real utterance; ``(B, L, F)``, zero at
        padding. No weight-drop on the recurrent weights (deviation, see the docstring)."""
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        out = f
        for lstm in self.lstms:
            out = locked_dropout(out, self.config.lstm_dropout, self.training)
            packed = pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=f.shape[1])
        return out * mask.unsqueeze(-1).to(out.dtype)

    def align(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official alignment projections ``a^m (B, L, align_dim)`` (``src/model.py:205-207``)."""
        return {m: self.aligners[m](x[m]) for m in self.modalities}

    def similarity(self, a: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
                   ) -> torch.Tensor:
        """``s_i (B, L)``: mean cosine over the pairs of present modalities (``src/model.py:
        242-246``); 0 with fewer than two present. Detached, as the official ``.tolist()``."""
        mods = self.modalities
        B, L = valid[mods[0]].shape
        total = a[mods[0]].new_zeros(B, L)
        count = a[mods[0]].new_zeros(B, L)
        for i in range(len(mods)):
            for j in range(i + 1, len(mods)):
                both = (valid[mods[i]] & valid[mods[j]]).to(total.dtype)
                total = total + both * F.cosine_similarity(a[mods[i]], a[mods[j]], dim=-1)
                count = count + both
        return (total / count.clamp(min=1)).detach()

    def refuse_official(self, f: torch.Tensor, mask: torch.Tensor, sim: torch.Tensor
                        ) -> torch.Tensor:
        """``r = [f ; context_weight (1 - s_i) (o_{i-1} + o_{i+1})]`` ``(B, L, 2F)``, zero at
        padding (``src/model.py:179-200``); ``use_crm=False``: ``r = f``."""
        keep = mask.unsqueeze(-1).to(f.dtype)
        f = f * keep
        if not self.config.use_crm:
            return f
        ctx = neighbour_context(self.lstm_states(f, mask), mask)
        scale = self.config.context_weight * (1 - sim) * mask.to(f.dtype)
        return torch.cat([f, scale.unsqueeze(-1) * ctx], dim=-1)

    def alignment_loss(self, a: dict[str, torch.Tensor], labels: torch.Tensor,
                       valid: dict[str, torch.Tensor], labelled: torch.Tensor
                       ) -> torch.Tensor | None:
        """Official prototype alignment loss (``src/model.py:214-239``, ``:248``). Per class
        ``k`` in the batch, the prototype is the mean of the valid projections of class ``k``
        over all modalities (the official running mean never accumulates: ``prototype_num``,
        ``:76``, is never incremented, so it is this in-batch mean, with gradient); per
        modality, ``d = mean_dim (a - proto)^2``, ``hinge = max(d - margin, 0)``, term = sum of
        hinge / (number of non-zero hinges + 1e-13); the loss is the mean of the terms."""
        terms = []
        for k in range(self.num_classes):
            sel = {m: valid[m] & labelled & (labels == k) for m in self.modalities}
            n = sum(int(v.sum()) for v in sel.values())
            if n == 0:
                continue
            proto = sum(a[m][sel[m]].sum(dim=0) for m in self.modalities) / n
            for m in self.modalities:
                if not sel[m].any():
                    continue
                d = ((a[m][sel[m]] - proto) ** 2).mean(dim=-1)
                hinge = torch.clamp(d - self.config.align_margin, min=0)
                terms.append(hinge.sum() / ((hinge > 0).sum() + 1e-13))
        return torch.stack(terms).mean() if terms else None

    # ---------------------------------------------------------------------------- forward

    def forward(self, batch: Batch) -> ModelOutput:
        c = self.config
        h = self.encode(batch)
        s, u = self.disentangle(batch, h)
        x = self.modality_vectors(h, s, u)
        valid = self.valid_masks(batch)
        labelled = self.labelled(batch)
        losses = []

        if self.training and c.use_ddm:
            terms = self.ddm_terms(batch, s, u)
            if terms:
                losses.append(c.modality_weight * terms["modality"]
                              + c.utterance_weight * terms["utterance"])

        if c.cfm == "official":
            conf = None
            if self.predictors is not None:
                logits_m, conf = self.confidence(x)
                if self.training:
                    term = self.cfm_loss(logits_m, conf, batch.labels, valid, labelled)
                    if term is not None:
                        losses.append(c.conf_loss_weight * term)
            f, weights = self.fuse_official(x, valid, conf)
        else:
            f, weights = self.fuse(x, valid)

        if c.crm == "official":
            a = self.align(x)
            r = self.refuse_official(f, batch.mask, self.similarity(a, valid))
            if self.training:
                term = self.alignment_loss(a, batch.labels, valid, labelled)
                if term is not None:
                    losses.append(c.align_weight * term)
        else:
            r, _ = self.refuse(f, batch.mask)
        logits = self.classifier(self.dropout(r))
        aux = sum(losses[1:], losses[0]) if losses else None
        return ModelOutput(logits=logits, aux_loss=aux, hidden=r, modality_weights=weights)
