"""DF-ERC: disentanglement and fusion on modality and context (Li, Fei, Liao, Zhao, Teng, Chua,
Ji and Li, 2023, "Revisiting Disentanglement and Fusion on Modality and Context in Conversational
Multimodal Emotion Recognition"), following the authors' code mechanism by mechanism.

Specification: GitHub ``WHULACC/DFERC`` (files cited as ``model.py:N`` for ``src/model.py``, and
likewise ``layer.py``, ``contrastive.py``, ``tools.py``, ``loader.py``, ``engine.py`` and
``iemo_config.yaml``). merc's first DF-ERC was designed from the abstract alone (parallel linear
heads at temperature 0.1, attention fusion, a gated BiGRU); the official form beat it on IEMOCAP
validation W-F1 (59.99 +- 0.86 vs 58.90 +- 0.45, 5 seeds; docs/results.md), so it was removed (issue 15).

Shapes. Input per modality ``m``: ``x^m (B, L, D_m)``; ``mask (B, L)``, True = real utterance;
``present[m] (B, L)``, False where the feature is missing (zero-filled) or at padding (a modality
absent from ``batch.present`` counts as present at every real utterance). ``valid[m] = mask &
present[m]``. The modalities are the keys of ``input_dims``, sorted; ``M`` is their number,
``H = hidden``. ``MLP(n -> k)`` is the official ``Dropout(0.2) -> Linear -> GELU`` with a
Kaiming-uniform (leaky-ReLU) weight init (``layer.py:7-19``, ``:206-211``). The official model
re-initialises *every* ``nn.Linear`` weight that way (``self.apply(init_esim_weights)``,
``model.py:81``, run before RoBERTa is attached; biases, LSTMs and RoBERTa keep PyTorch's
init), and so does merc (``init_scope="all"``); ``init_scope="heads"`` (variant ``init heads
only``) is merc's earlier reading, which re-initialised the ``MLP`` heads alone.
Speaker indices are not used (the official ``speaker_embedding``, ``model.py:16``, is never used
in ``forward`` either).

0. **Unimodal encoders** ``h^m = Dropout_0.2(tanh(Linear(D_m -> H)(x^m)))`` ``(B, L, H)``
   (``model.py:22-38``; ``encoder_activation="gelu"`` is merc's earlier choice). The official
   text input is RoBERTa-large fine-tuned over each dialogue packed into <= 512 tokens, the
   utterance vector being the mean of its first and last sub-token outputs (``model.py:86-89``,
   ``loader.py:stack``); in merc it is whatever ``data.text`` gives -- the frozen sentence
   encoder or an encoder folder from ``merc finetune`` (a CPU-feasible stand-in; see docs/finetune.md).
   ``H`` is 300 officially (``iemo_config.yaml:50``); merc's default 256.

1. **DDM -- dual-level disentanglement** (``use_ddm``). Modality head ``s^m = MLP(H -> H)(h^m)``
   and utterance head *stacked on it*, ``c^m = MLP(H -> H)(s^m)`` (``model.py:55-61``,
   ``:116-126``). Over the valid (utterance, modality) vectors of the batch (``N`` of them;
   padding and missing features never enter), L2-normalised (:func:`merc.modules.contrastive.
   supervised_contrastive`, temperature ``temperature`` = 1, ``cl_temp``, ``iemo_config.yaml:82``):

   * modality level on ``s``: label = the modality, so ``s`` encodes which channel it came from;
   * utterance level on ``c``: label = the utterance, so the modalities of one utterance agree.

   Loss ``modality_weight L_mod + utterance_weight L_utt`` with both weights 0.4 (``cl_weight``,
   ``model.py:277``, ``iemo_config.yaml:81``). Per-modality output ``x^m = [h^m ; ddm_scale
   (s^m + c^m)]`` ``(B, L, 2H)``, ``ddm_scale`` = 0.4 (``model.py:132-134``, ``:273-275``).
   *Deviation:* the official modality labels are ``1, 1, 2`` for text, audio, video
   (``model.py:120``: ``new_ones`` then ``new_zeros + 1``), which makes text and audio each
   other's positives -- a bug; merc gives each modality its own label. The official
   ``SupConLoss`` multiplies by the temperature (``contrastive.py:113-114``): identical at 1.
   With one modality neither term is defined (no negatives / no positives) and both are skipped.
   If ``N > max_contrast`` each term uses ``max_contrast`` anchors drawn with ``torch.randperm``
   (default CPU generator, reproducible under ``torch.manual_seed``) against all ``N`` vectors.
   ``use_ddm=False`` ("w/o DDM"): heads and output kept, no loss.

2. **CFM -- contribution-aware fusion** (``use_cfm``). Per modality a classifier
   ``MLP(2H -> C)(x^m)`` (GELU on the logits, ``model.py:71-73``) and a confidence ``c_m =
   sigmoid(Linear_{2H->1}(Dropout_0.2(x^m)))`` (``model.py:67-69``, ``layer.py:21-33``); CFM
   loss = sum over modalities of the classifier's cross-entropy + MSE of ``c_m`` toward the
   softmax probability of the true class, not detached (``model.py:139-169``), weight
   ``conf_loss_weight`` = 1 (``iemo_config.yaml:83``). Weights ``w_m = c_m / sum_n c_n``
   (``model.py:171-175``) over the *present* modalities (absent ones get ``w = 0`` and leave
   both sums); fused ``f = [conf_weight sum_m w_m x^m ; sum_m x^m]`` ``(B, L, 4H)``,
   ``conf_weight`` = 0.9 (``model.py:285``, ``iemo_config.yaml:85``); zero where nothing is
   present. ``modality_weights`` = ``w``. *Deviation:* the official per-modality and main
   cross-entropies are weighted ``[1.0] + [1.3] * (C - 1)`` (``model.py:78-79``,
   ``label_weight``, ``iemo_config.yaml:76``): class 0 of the official label order (IEMOCAP
   ``hap``, MELD ``neu``; ``loader.py``) weighs 1, the rest 1.3 -- a rule tied to one label order,
   which merc does not copy (``train.class_weights`` is merc's corpus-independent option).
   ``use_cfm=False`` ("w/o CFM"): equal weights ``1 / #present``, no heads, no CFM loss.

3. **CRM -- context refusion** (``use_crm``). A 2-layer bidirectional LSTM over ``f`` (``2H``
   units per direction, output ``4H``; ``model.py:46-53``), locked dropout ``lstm_dropout`` =
   0.3 before each layer (``layer.py:143-168``), packed with the real lengths. Context of
   utterance ``i``: ``o_{i-1} + o_{i+1}`` -- its own state excluded, a missing neighbour is zero
   (``model.py:187-192``) -- scaled by ``context_weight (1 - s_i)``, ``context_weight`` = 0.8
   (``sim_weight``, ``iemo_config.yaml:86``), where ``s_i`` is the mean cosine over the modality
   pairs of the alignment projections ``a^m = MLP(2H -> align_dim)(x^m)``, ``align_dim`` = 500
   (``model.py:63-65``, ``:242-246``; merc: over the pairs of present modalities, 0 with fewer
   than two), detached as the official ``.tolist()`` (``model.py:185``). ``r = [f ; context]``
   ``(B, L, 8H)`` (``model.py:199``). Prototype alignment loss on ``a`` (``model.py:214-239``,
   ``:248``), weight ``align_weight`` = 0.7 (``sim_loss``), margin 0.1 (``iemo_config.yaml:75``,
   ``:87``): see :meth:`DFERC.alignment_loss`; the official "running" prototype is the in-batch
   class mean, since ``prototype_num`` (``model.py:76``) is never incremented. *Deviation:* no
   weight-drop (DropConnect 0.3 on the recurrent weights, ``model.py:47``, ``layer.py:172-202``).
   ``use_crm=False`` ("w/o CRM"): ``r = f`` (the alignment loss stays: it trains the projections
   that the official code always trains).

4. **Classifier** ``logits = Linear(r)`` ``(B, L, C)`` (``model.py:42-44``, ``:291``; merc adds
   ``Dropout(classifier_dropout)``, 0 by default as officially); the engine's cross-entropy is
   the task loss.

Training settings (registered as DF-ERC's ``train_defaults``; a value set on the command line
wins): AdamW (``tools.py:65``) lr 5e-4, betas (0.9, 0.84), eps 1e-7, weight decay 0.01
(``iemo_config.yaml:15-18``, ``:25-26``), none on biases / LayerNorm (``tools.py:57-63``); 100
warm-up steps then linear decay (``tools.py:66-68``); batch 2 dialogues (``iemo_config.yaml:12``),
20 epochs (``:28``), patience 10 (``:19``, ``engine.py:131``), clip 1.0 (``:20``,
``engine.py:44``); best epoch on validation W-F1 (``engine.py:86``, ``:116``), validation a random
10% of the training dialogues when the corpus has none (``loader.py:120-124``; merc's
``data.valid_fraction`` = 0.1 does the same). The encoder's own lr (2e-5) applies to the official
end-to-end RoBERTa, which merc's pre-extracted features do not have.

Departures from the official code, in one table (IEMOCAP text + 8-d audio validation W-F1
where measured; the test split chose nothing):

========================== ================================ ======== ===========================
what                       official code                    merc     why; validation figure
========================== ================================ ======== ===========================
modality labels of L_mod   1, 1, 2 (``model.py:120``)       0, 1, 2  a bug (text and audio
                                                                     positives of each other);
                                                                     not measured
class weights              [1.0] + [1.3] * (C - 1)          none     tied to one label order;
                           (``model.py:78-79``)                      ``train.class_weights``
recurrent DropConnect      0.3 (``model.py:47``)            none     not implemented; not
                                                                     measured
``hidden``                 300 (``iemo_config.yaml:50``)    256      not measured
``init_scope``             every Linear (``model.py:81``)   ``all``  same as official since
                                                                     issue 30: 60.65 +- 0.97 vs
                                                                     60.91 +- 0.58 heads only
                                                                     (5 seeds, p 0.52)
text encoder               RoBERTa-large, end to end        features ``data.text``; a CPU stand-in
========================== ================================ ======== ===========================

Outputs: ``logits (B, L, C)``; ``aux_loss`` = DDM + CFM + alignment losses (training mode only,
``None`` when none applies); ``hidden = r`` (zero at padding); ``modality_weights`` = modality ->
``(B, L)`` CFM weights (sum to 1 over the present modalities of each real utterance, 0 for absent
modalities and at padding).

Padding: everything but the LSTM is per utterance, and the LSTM runs on packed sequences (the
neighbour context zeroes padding first), so the logits of real utterances do not depend on the
batch's padding. The model never sees dataset names; widths come from ``input_dims``.
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

ACTIVATIONS = {"tanh": nn.Tanh, "gelu": nn.GELU}
HEAD_DROPOUT = 0.2
"""Dropout of the official ``MLP`` / ``MlpSigmoid`` heads (``src/layer.py:8``, ``:22``)."""


@dataclass
class DFERCConfig(ModelConfig):
    hidden: int = 256
    """Width ``H`` of the unimodal encoders and the DDM heads; ``x^m`` is ``2H`` wide, the fused
    vector ``4H``, the refused one ``8H`` (official: 300)."""
    encoder_activation: str = "tanh"
    """Non-linearity of the unimodal encoders: ``tanh`` (official) or ``gelu``."""
    dropout: float = 0.2
    """Dropout after the unimodal encoders (official 0.2)."""
    classifier_dropout: float = 0.0
    """Dropout before the final linear classifier (official: none)."""
    init_scope: str = "all"
    """Which ``nn.Linear`` weights get the official Kaiming-uniform init: ``all`` (official,
    ``model.py:81``) or ``heads`` (the ``MLP`` heads only; merc's earlier reading)."""
    use_ddm: bool = True
    """DDM contrastive losses; False = the "w/o DDM" ablation (heads kept, no loss)."""
    modality_weight: float = 0.4
    """Weight of the modality-level contrastive term ``L_mod`` (on ``s``) in ``aux_loss``."""
    utterance_weight: float = 0.4
    """Weight of the utterance-level contrastive term ``L_utt`` (on ``c``) in ``aux_loss``."""
    temperature: float = 1.0
    """Temperature ``tau`` of both supervised contrastive terms."""
    ddm_scale: float = 0.4
    """Scale of ``s + c`` in ``x = [h ; ddm_scale * (s + c)]`` (the official ``cl_weight``)."""
    max_contrast: int = 4096
    """At most this many anchors per contrastive term (drawn from the torch RNG when the batch
    has more valid (utterance, modality) vectors); the contrast set is always all of them."""
    use_cfm: bool = True
    """Confidence-weighted fusion; False = the "w/o CFM" ablation (equal weights over the
    present modalities, no classifier / confidence heads, no CFM loss)."""
    conf_weight: float = 0.9
    """Scale of the confidence-weighted sum in the fused vector."""
    conf_loss_weight: float = 1.0
    """Weight of the CFM loss (per-modality CE + confidence MSE)."""
    use_crm: bool = True
    """Neighbour-context refusion; False = the "w/o CRM" ablation (``r = f``)."""
    context_weight: float = 0.8
    """Scale of the neighbour context (the official ``sim_weight``)."""
    lstm_dropout: float = 0.3
    """Locked (variational) dropout before each BiLSTM layer."""
    align_dim: int = 500
    """Width of the alignment projections (the official ``align_size``)."""
    align_margin: float = 0.1
    """Hinge margin of the prototype alignment loss."""
    align_weight: float = 0.7
    """Weight of the prototype alignment loss in ``aux_loss``."""

    def __post_init__(self) -> None:
        require_choice("encoder_activation", self.encoder_activation, sorted(ACTIVATIONS))
        require_choice("init_scope", self.init_scope, ("all", "heads"))
        require(self.hidden >= 1, "hidden", f"expected >= 1, got {self.hidden}")
        require(self.align_dim >= 1, "align_dim", f"expected >= 1, got {self.align_dim}")
        require(self.temperature > 0, "temperature", f"expected > 0, got {self.temperature}")
        for name in ("modality_weight", "utterance_weight", "ddm_scale", "conf_weight",
                     "conf_loss_weight", "context_weight", "align_margin", "align_weight"):
            require(getattr(self, name) >= 0, name, f"expected >= 0, got {getattr(self, name)}")
        require(self.max_contrast >= 2, "max_contrast",
                f"expected >= 2, got {self.max_contrast}")
        for name in ("dropout", "classifier_dropout", "lstm_dropout"):
            require(0.0 <= getattr(self, name) < 1.0, name,
                    f"expected [0, 1), got {getattr(self, name)}")


PAPER_TRAIN = {"max_epochs": 20, "patience": 10, "batch_size": 2, "lr": 5e-4,
               "weight_decay": 0.01, "grad_clip": 1.0, "adam_betas": [0.9, 0.84],
               "adam_eps": 1e-7, "warmup_steps": 100, "lr_decay": "linear",
               "decay_bias_norm": False}
"""The official training settings (module docstring, "Training settings"), registered as the
model's ``train_defaults``."""


def _mlp(n_in: int, n_out: int, last: nn.Module) -> nn.Sequential:
    """The official ``MLP`` / ``MlpSigmoid``: Dropout(0.2) -> Linear -> GELU / Sigmoid
    (``src/layer.py:7-33``), its weight initialised as the official ``init_esim_weights``
    (Kaiming-uniform, leaky-ReLU gain; ``src/layer.py:206-211``, applied at ``src/model.py:81``)."""
    return nn.Sequential(nn.Dropout(HEAD_DROPOUT), _esim_init(nn.Linear(n_in, n_out)), last)


def _esim_init(linear: nn.Linear) -> nn.Linear:
    """The official ``init_esim_weights`` on one Linear (``src/layer.py:206-211``): Kaiming-
    uniform weight with the leaky-ReLU gain at slope 0 (bound ``sqrt(6 / fan_in)``); bias kept."""
    nn.init.kaiming_uniform_(linear.weight, mode="fan_in", nonlinearity="leaky_relu")
    return linear


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


@register_model("df-erc", DFERCConfig, train_defaults=PAPER_TRAIN, variants={
    # The paper's ablations of its three mechanisms, one at a time.
    "w/o DDM": {"use_ddm": False},
    "w/o CFM": {"use_cfm": False},
    "w/o CRM": {"use_crm": False},
    # merc's earlier reading of the init (heads only); the official code inits every Linear.
    "init heads only": {"init_scope": "heads"},
})
class DFERC(nn.Module):
    """DF-ERC: stacked modality/utterance disentanglement -> confidence fusion -> neighbour context.

    DDM (modality head, utterance head on top of it, two SupCon terms), CFM (per-modality
    classifier and supervised confidence weighting the present modalities), CRM (2-layer BiLSTM
    whose neighbour states are re-injected, scaled by cross-modal dissimilarity, plus a prototype
    alignment loss), as in the authors' code. See the module docstring for shapes and file:line.
    """

    def __init__(self, input_dims: dict[str, int], num_classes: int,
                 config: DFERCConfig) -> None:
        super().__init__()
        c = self.config = config
        self.modalities = sorted(input_dims)
        self.num_classes = num_classes
        H = c.hidden
        act = ACTIVATIONS[c.encoder_activation]

        # 0. Unimodal encoders (model.py:22-38).
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(input_dims[m], H), act(),
                                                        nn.Dropout(c.dropout))
                                       for m in self.modalities})
        # 1. DDM heads: s^m = MLP(h^m), c^m = MLP(s^m).
        self.modality_heads = nn.ModuleDict({m: _mlp(H, H, nn.GELU()) for m in self.modalities})
        self.utterance_heads = nn.ModuleDict({m: _mlp(H, H, nn.GELU()) for m in self.modalities})
        U = 2 * H                                              # x^m = [h ; scale (s + c)]
        # 2. CFM heads.
        self.predictors = self.confidences = None
        if c.use_cfm:
            self.predictors = nn.ModuleDict({m: _mlp(U, num_classes, nn.GELU())
                                             for m in self.modalities})
            self.confidences = nn.ModuleDict({m: _mlp(U, 1, nn.Sigmoid())
                                              for m in self.modalities})
        Fw = self.fused_dim = 2 * U                            # [conf_weight sum w x ; sum x]
        # 3. CRM: BiLSTM and alignment projections.
        self.lstms = nn.ModuleList([nn.LSTM(Fw, Fw // 2, batch_first=True, bidirectional=True)
                                    for _ in range(2)]) if c.use_crm else None
        self.aligners = nn.ModuleDict({m: _mlp(U, c.align_dim, nn.GELU())
                                       for m in self.modalities})
        # 4. Classifier.
        self.dropout = nn.Dropout(c.classifier_dropout)
        self.classifier = nn.Linear(2 * Fw if c.use_crm else Fw, num_classes)
        if c.init_scope == "all":
            # model.py:81: self.apply(init_esim_weights) -- every Linear weight, last.
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    _esim_init(module)

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
        """``(s, c)``: modality -> modality-space ``s`` and utterance-space ``c = utterance_head(s)``
        vectors, ``(B, L, H)`` each; raw head outputs, not masked -- use :meth:`valid_masks`."""
        if h is None:
            h = self.encode(batch)
        s, c = {}, {}
        for m in self.modalities:
            s[m] = self.modality_heads[m](h[m])
            c[m] = self.utterance_heads[m](s[m])
        return s, c

    def modality_vectors(self, h: dict[str, torch.Tensor], s: dict[str, torch.Tensor],
                         c: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality input of the fusion ``x^m = [h ; ddm_scale (s + c)]`` ``(B, L, 2H)``
        (``src/model.py:132-134``, ``:273-275``)."""
        k = self.config.ddm_scale
        return {m: torch.cat([h[m], k * (s[m] + c[m])], dim=-1) for m in self.modalities}

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

    def confidence(self, x: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """CFM heads: modality -> logits ``(B, L, C)`` and confidence ``(B, L)`` in
        ``(0, 1)`` (``src/model.py:139-141``, ``:156-158``). Requires ``use_cfm``."""
        logits = {m: self.predictors[m](x[m]) for m in self.modalities}
        conf = {m: self.confidences[m](x[m]).squeeze(-1) for m in self.modalities}
        return logits, conf

    def fuse(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
             conf: dict[str, torch.Tensor] | None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CFM fusion ``f = [conf_weight * sum_m w_m x_m ; sum_m x_m]`` ``(B, L, 4H)``
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
        """CFM loss: per modality, cross-entropy of its classifier plus MSE of its
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

    def lstm_states(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """CRM encoder: 2 BiLSTM layers, locked dropout before each (``src/layer.py:
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
        """Alignment projections ``a^m (B, L, align_dim)`` (``src/model.py:205-207``)."""
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

    def refuse(self, f: torch.Tensor, mask: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
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
        """Prototype alignment loss (``src/model.py:214-239``, ``:248``). Per class
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

        conf = None
        if c.use_cfm:
            logits_m, conf = self.confidence(x)
            if self.training:
                term = self.cfm_loss(logits_m, conf, batch.labels, valid, labelled)
                if term is not None:
                    losses.append(c.conf_loss_weight * term)
        f, weights = self.fuse(x, valid, conf)

        a = self.align(x)
        r = self.refuse(f, batch.mask, self.similarity(a, valid))
        if self.training:
            term = self.alignment_loss(a, batch.labels, valid, labelled)
            if term is not None:
                losses.append(c.align_weight * term)
        logits = self.classifier(self.dropout(r))
        aux = sum(losses[1:], losses[0]) if losses else None
        return ModelOutput(logits=logits, aux_loss=aux, hidden=r, modality_weights=weights)
