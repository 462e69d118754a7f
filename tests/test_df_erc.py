"""DF-ERC (the official code's mechanisms): supervised contrastive loss, DDM, CFM, CRM, alignment
loss, ablations, subsets -- hand-checked on toy inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from merc.data.conversation import Conversation
from merc.models import count_parameters, create_model, list_models
from merc.models.df_erc import neighbour_context
from merc.modules.contrastive import supervised_contrastive

from helpers import TOY_DIMS as DIMS
from helpers import TOY_LABELS as LABELS
from helpers import toy_batch as _batch
from helpers import toy_conversation as _conversation
from helpers import toy_pair as _pair

# Tiny widths keep every case fast on a busy CPU.
SMALL = {"hidden": 16, "align_dim": 6}


def _model(dims=DIMS, **overrides):
    torch.manual_seed(0)
    return create_model("df-erc", dims, len(LABELS), **{**SMALL, **overrides})


# --------------------------------------------------------------------------------------------
# supervised_contrastive
# --------------------------------------------------------------------------------------------

def test_supervised_contrastive_matches_hand_computed_values():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # Anchor 0: positive 1 (sim 0), contrast {1: 0, 2: 1}; anchor 1: positive 0 (sim 0),
    # contrast {0: 0, 2: 0}; anchor 2 has no positive and is skipped.
    expected = (math.log(1 + math.e) + math.log(2)) / 2
    got = supervised_contrastive(z, torch.tensor([0, 0, 1]), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Several positives are averaged per anchor (1/|P(i)|), anchors averaged over the batch.
    lse = math.log(1 + math.e)               # anchor 0 of [0, 0, 0]: sims 0 (to 1), 1 (to 2)
    a0 = lse - 0.5 * (0 + 1)
    a1 = math.log(2) - 0.0                   # anchor 1: sims 0, 0
    a2 = lse - 0.5 * (1 + 0)                 # anchor 2: sims 1 (to 0), 0 (to 1)
    got = supervised_contrastive(z, torch.tensor([0, 0, 0]), 1.0)
    assert got.item() == pytest.approx((a0 + a1 + a2) / 3, rel=1e-6)
    # Temperature scales the similarities.
    got = supervised_contrastive(z, torch.tensor([0, 0, 1]), 0.5)
    expected = (math.log(1 + math.exp(2)) + math.log(2)) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # An explicit anchor subset: only anchor 1 (anchor 2 alone has no positive -> 0).
    got = supervised_contrastive(z, torch.tensor([0, 0, 1]), 1.0, anchors=torch.tensor([1]))
    assert got.item() == pytest.approx(math.log(2), rel=1e-6)
    zero = supervised_contrastive(z.requires_grad_(), torch.tensor([0, 0, 1]), 1.0,
                                  anchors=torch.tensor([2]))
    assert zero.item() == 0 and zero.requires_grad


def test_supervised_contrastive_clustered_below_shuffled_and_no_positive_is_zero():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    labels = torch.arange(4).repeat_interleave(8)
    z = F.normalize(centers[labels] + 0.1 * torch.randn(32, 16, generator=g), dim=-1)
    clustered = supervised_contrastive(z, labels, 0.1)
    shuffled = supervised_contrastive(z, labels[torch.randperm(32, generator=g)], 0.1)
    assert clustered < 0.5 * shuffled
    # All labels distinct: no anchor has a positive -> exactly 0, still differentiable.
    z = z.clone().requires_grad_()
    none = supervised_contrastive(z, torch.arange(32), 0.1)
    assert none.item() == 0 and none.requires_grad
    none.backward()
    assert torch.isfinite(z.grad).all()
    # Gradients are finite with skipped anchors (no NaN from the masked self-similarity).
    z.grad = None
    mixed = torch.cat([torch.tensor([0, 0, 1]), torch.arange(2, 31)])
    supervised_contrastive(z, mixed, 0.1).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        supervised_contrastive(z, mixed, 0.0)


# --------------------------------------------------------------------------------------------
# DDM terms on the model
# --------------------------------------------------------------------------------------------

def _identity_model(dims):
    """Encoder and head weights = identity (hidden = D), biases 0: ``s^m = GELU(GELU(x^m))`` and
    ``c^m = GELU(s^m)``, so aligned inputs give aligned DDM vectors. GELU encoders (tanh would
    saturate the test's large offsets) and temperature 0.1 (at the official 1 every SupCon
    value is squeezed near ``log(N - 1)``): the test is about which structure each term
    rewards, not about those two settings."""
    D = next(iter(dims.values()))
    model = _model(dims, hidden=D, temperature=0.1, encoder_activation="gelu").eval()
    with torch.no_grad():
        for m in dims:
            for lin in (model.encoders[m][0], model.modality_heads[m][1],
                        model.utterance_heads[m][1]):
                lin.weight.copy_(torch.eye(D))
                lin.bias.zero_()
    return model


def _latent_batch(dims, rng, mode):
    """Two dialogues; per utterance every modality is a noisy copy of a shared latent.

    ``mode``: ``aligned``; ``shuffled`` (audio/video rows rolled across utterances);
    ``offset`` (modality m shifted by a large offset on its own coordinate); ``mixed`` (the
    same offsets, but assigned to random vectors regardless of the modality)."""
    D = next(iter(dims.values()))
    convs = []
    for i, n in enumerate((7, 5)):
        latent = rng.normal(size=(n, D))
        feats = {m: latent + 0.2 * rng.normal(size=(n, D)) for m in dims}
        convs.append(Conversation(
            id=f"d{i}", split="train", speakers=["A"] * n, utterances=[f"u{j}" for j in range(n)],
            labels=[LABELS[0]] * n, features={m: x.astype(np.float32) for m, x in feats.items()}))
    b = _batch(convs, tuple(dims))
    real = b.mask.nonzero(as_tuple=True)
    if mode == "shuffled":
        for shift, m in enumerate(sorted(dims)[1:], start=1):
            b.features[m][real] = b.features[m][real].roll(shift, dims=0)
    if mode in ("offset", "mixed"):
        n_real = len(real[0])
        for k, m in enumerate(sorted(dims)):
            if mode == "offset":
                which = torch.full((n_real,), k)
            else:
                which = torch.as_tensor(rng.integers(len(dims), size=n_real))
            offset = 4.0 * F.one_hot(which, D).float()
            b.features[m][real] = b.features[m][real] + offset
    return b


@pytest.mark.parametrize("term,structured,destroyed,seed", [
    # utterance level: modalities of an utterance share a latent vs. shuffled across utterances
    ("utterance", "aligned", "shuffled", 0),
    # modality level: each modality offset into its own cluster vs. offsets mixed at random
    ("modality", "offset", "mixed", 1),
])
def test_ddm_term_low_for_its_structure_and_grows_without_it(term, structured, destroyed, seed):
    dims = {m: 16 for m in DIMS}
    model = _identity_model(dims)
    low = model.ddm_terms(_latent_batch(dims, np.random.default_rng(seed), structured))[term]
    high = model.ddm_terms(_latent_batch(dims, np.random.default_rng(seed), destroyed))[term]
    assert low < 0.5 * high


def test_ddm_ignores_padding_and_missing_features():
    model = _model().eval()
    batch = _pair()
    batch.present["audio"][0, 1] = False
    base = model.ddm_terms(batch)
    # Garbage at padding and at the missing audio feature changes nothing.
    for m, x in batch.features.items():
        x[~batch.mask] = 1e3
    batch.features["audio"][0, 1] = -1e3
    again = model.ddm_terms(batch)
    for k in base:
        torch.testing.assert_close(again[k], base[k])
    # ...whereas the same garbage at a present feature does.
    batch.features["audio"][0, 2] = -1e3
    assert not torch.isclose(model.ddm_terms(batch)["utterance"], base["utterance"])


def test_max_contrast_subsamples_anchors_reproducibly():
    model = _model(max_contrast=4)
    batch = _pair()
    full = _model().ddm_terms(batch)
    torch.manual_seed(3)
    a = model.ddm_terms(batch)
    torch.manual_seed(3)
    b = model.ddm_terms(batch)
    for k in full:
        torch.testing.assert_close(a[k], b[k])
        assert torch.isfinite(a[k])
    assert any(not torch.isclose(a[k], full[k]) for k in full)


# --------------------------------------------------------------------------------------------
# CFM
# --------------------------------------------------------------------------------------------

def test_cfm_weights_sum_to_one_over_present_modalities():
    model = _model().eval()
    batch = _pair()
    batch.present["audio"][0, 2] = False
    batch.present["video"][0, 2] = False
    batch.present["video"][1, 0] = False
    w = model(batch).modality_weights
    assert set(w) == set(DIMS)
    for m in DIMS:
        assert w[m].shape == batch.mask.shape
    total = sum(w.values())
    torch.testing.assert_close(total[batch.mask], torch.ones(int(batch.mask.sum())))
    assert (total[~batch.mask] == 0).all()
    assert w["audio"][0, 2] == 0 and w["video"][0, 2] == 0 and w["video"][1, 0] == 0
    assert w["text"][0, 2] == 1                     # the only present modality
    # Learned weights are not all equal.
    assert not torch.allclose(w["text"][0, :6], w["audio"][0, :6])


def test_cfm_off_gives_equal_weights_and_no_present_modality_gives_zeros():
    model = _model(use_cfm=False).eval()
    batch = _pair()
    batch.present["audio"][0, 3] = False
    w = model(batch).modality_weights
    assert w["text"][0, 0].item() == pytest.approx(1 / 3)
    assert w["text"][0, 3].item() == pytest.approx(1 / 2) and w["audio"][0, 3] == 0
    # An utterance with no present modality: all-zero weights, finite outputs and gradients.
    model = _model().train()
    for m in DIMS:
        batch.present[m][1, 1] = False
    out = model(batch)
    assert all(out.modality_weights[m][1, 1] == 0 for m in DIMS)
    loss = out.logits[batch.mask].sum() + out.aux_loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------------------------
# CRM
# --------------------------------------------------------------------------------------------

def test_refuse_ignores_padding_and_crm_off_is_identity():
    model = _model().eval()
    g = torch.Generator().manual_seed(0)
    f = 3 * torch.randn(2, 6, model.fused_dim, generator=g)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    sim = torch.rand(2, 6, generator=g)
    r = model.refuse(f, mask, sim)
    assert r.shape == (2, 6, 2 * model.fused_dim) and (r[1, 3:] == 0).all()
    # Whatever sits at padding does not reach the real utterances.
    f2 = f.clone()
    f2[1, 3:] = 100.0
    torch.testing.assert_close(model.refuse(f2, mask, sim), r)
    off = _model(use_crm=False).eval()
    assert off.lstms is None
    torch.testing.assert_close(off.refuse(f, mask, sim), f * mask.unsqueeze(-1))
    with pytest.raises(ValueError, match="model.encoder_activation: expected one of"):
        _model(encoder_activation="relu")


def test_hidden_is_zero_at_padding():
    # (Padding never changing real logits, for every registered variant: test_models.py.)
    model = _model().eval()
    padded = model(_batch([_conversation(9, 3, "long"), _conversation(4, 2, "short")]))
    assert (padded.hidden[1, 4:] == 0).all()
    assert padded.hidden.shape == (2, 9, 8 * 16)


# --------------------------------------------------------------------------------------------
# Training: ablations, subsets, aux_loss
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"use_ddm": False}, {"use_cfm": False},
                                       {"use_crm": False}, {"encoder_activation": "gelu"}])
@pytest.mark.parametrize("modalities", [("text",), ("text", "audio"), tuple(DIMS)])
def test_aux_loss_across_ablations_and_subsets(overrides, modalities):
    dims = {m: DIMS[m] for m in modalities}
    model = _model(dims, **overrides).train()
    batch = _pair(modalities)
    out = model(batch)
    width = 8 * 16 if overrides.get("use_crm", True) else 4 * 16
    assert out.logits.shape == (2, 6, 3) and out.hidden.shape == (2, 6, width)
    # The alignment loss always applies in training (the CFM and DDM losses when switched on).
    assert out.aux_loss.ndim == 0 and out.aux_loss > 0
    loss = F.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask]) + out.aux_loss
    loss.backward()
    assert model.eval()(batch).aux_loss is None


def test_registered_and_parameter_count():
    assert "df-erc" in list_models()
    full = count_parameters(_model())
    assert count_parameters(_model(use_cfm=False)) < full
    assert count_parameters(_model(use_crm=False)) < full
    assert count_parameters(_model(use_ddm=False)) == full


# --------------------------------------------------------------------------------------------
# The official mechanisms by hand (WHULACC/DFERC)
# --------------------------------------------------------------------------------------------

def _no_dropout(model):
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    model.config.lstm_dropout = 0.0
    return model


def test_supcon_temperature_one_by_hand():
    # Three vectors, labels [0, 0, 1], tau = 1: anchors 0 and 1 each have the other as positive
    # (similarity 0) and contrast {other: 0, z2: 1/sqrt 2}; anchor 2 has no positive.
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    expected = math.log(1 + math.exp(1 / math.sqrt(2)))
    got = supervised_contrastive(z, torch.tensor([0, 0, 1]), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_official_ddm_stacks_heads_and_outputs_h_plus_scaled_sum():
    model = _model().eval()
    batch = _pair()
    h = model.encode(batch)
    s, c = model.disentangle(batch, h)
    x = model.modality_vectors(h, s, c)
    for m in DIMS:
        assert s[m].shape == c[m].shape == (2, 6, 16)
        torch.testing.assert_close(c[m], model.utterance_heads[m](s[m]))   # stacked on s
        torch.testing.assert_close(x[m], torch.cat([h[m], 0.4 * (s[m] + c[m])], dim=-1))
    # The terms are SupCon on the L2-normalised s (modality labels) and c (utterance labels).
    terms = model.ddm_terms(batch, s, c)
    valid = model.valid_masks(batch)
    mods = sorted(DIMS)
    zs = F.normalize(torch.cat([s[m][valid[m]] for m in mods]), dim=-1)
    mod_labels = torch.cat([torch.full((int(valid[m].sum()),), i) for i, m in enumerate(mods)])
    torch.testing.assert_close(terms["modality"], supervised_contrastive(zs, mod_labels, 1.0))
    # Distinct modality labels (not the official text == audio bug, src/model.py:120).
    assert mod_labels.unique().numel() == 3
    # Training: aux = 0.4 L_mod + 0.4 L_utt + CFM loss + 0.7 alignment loss.
    model = _no_dropout(_model()).train()
    out = model(batch)
    h = model.encode(batch)
    s, c = model.disentangle(batch, h)
    x = model.modality_vectors(h, s, c)
    terms = model.ddm_terms(batch, s, c)
    valid, lab = model.valid_masks(batch), model.labelled(batch)
    logits_m, conf = model.confidence(x)
    expected = (0.4 * (terms["modality"] + terms["utterance"])
                + model.cfm_loss(logits_m, conf, batch.labels, valid, lab)
                + 0.7 * model.alignment_loss(model.align(x), batch.labels, valid, lab))
    torch.testing.assert_close(out.aux_loss, expected)
    assert model.eval()(batch).aux_loss is None


def test_official_cfm_weights_follow_confidences_and_fused_vector_by_hand():
    model = _model().eval()
    mods = sorted(DIMS)                                    # audio, text, video
    x = {m: torch.full((1, 2, 4), float(i + 1)) for i, m in enumerate(mods)}
    conf = {"audio": torch.tensor([[0.2, 0.2]]), "text": torch.tensor([[0.6, 0.6]]),
            "video": torch.tensor([[0.2, 0.9]])}
    valid = {m: torch.tensor([[True, True]]) for m in mods}
    valid["video"] = torch.tensor([[True, False]])         # video absent at utterance 1
    f, w = model.fuse(x, valid, conf)
    assert f.shape == (1, 2, 8)
    total = sum(w.values())
    torch.testing.assert_close(total, torch.ones(1, 2))
    # Utterance 0: w = c / sum c = (0.2, 0.6, 0.2); utterance 1: video excluded -> (0.25, 0.75).
    torch.testing.assert_close(torch.stack([w[m][0, 0] for m in mods]),
                               torch.tensor([0.2, 0.6, 0.2]))
    torch.testing.assert_close(torch.stack([w[m][0, 1] for m in mods]),
                               torch.tensor([0.25, 0.75, 0.0]))
    # f = [0.9 * sum w x ; sum x] with x_audio = 1, x_text = 2, x_video = 3.
    torch.testing.assert_close(f[0, 0], torch.tensor([0.9 * (0.2 + 1.2 + 0.6)] * 4 + [6.0] * 4))
    torch.testing.assert_close(f[0, 1], torch.tensor([0.9 * (0.25 + 1.5)] * 4 + [3.0] * 4))
    # Nothing present: zero weights, zero vector; conf=None ("w/o CFM"): equal weights.
    none = {m: torch.tensor([[False, True]]) for m in mods}
    f, w = model.fuse(x, none, conf)
    assert (f[0, 0] == 0).all() and all(w[m][0, 0] == 0 for m in mods)
    f, w = model.fuse(x, valid, None)
    assert w["text"][0, 1].item() == pytest.approx(0.5) and w["video"][0, 1] == 0


def test_official_cfm_loss_by_hand():
    model = _model()
    z = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])               # (1, 2, 3)
    labels = torch.tensor([[0, 2]])
    conf = torch.tensor([[0.5, 0.1]])
    valid = {"text": torch.tensor([[True, True]])}
    lab = torch.tensor([[True, False]])                                  # utterance 1 unlabelled
    model.modalities = ["text"]
    got = model.cfm_loss({"text": z}, {"text": conf}, labels, valid, lab)
    p = math.exp(2) / (math.exp(2) + 2)
    assert got.item() == pytest.approx(-math.log(p) + (0.5 - p) ** 2, rel=1e-6)
    assert model.cfm_loss({"text": z}, {"text": conf}, labels, valid, lab & False) is None


def test_neighbour_context_excludes_own_state_edges_zero_and_padding_ignored():
    o = torch.arange(1.0, 9.0).view(2, 4, 1)            # dialogue 0: 1..4; dialogue 1: 5, 6 + pad
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    ctx = neighbour_context(o, mask)
    torch.testing.assert_close(ctx[0, :, 0], torch.tensor([2.0, 1 + 3, 2 + 4, 3.0]))
    torch.testing.assert_close(ctx[1, :, 0], torch.tensor([6.0, 5.0, 0.0, 0.0]))
    o2 = o.clone()
    o2[1, 2:] = 1e3                                     # garbage at padding
    torch.testing.assert_close(neighbour_context(o2, mask), ctx)


def test_official_similarity_and_context_scale():
    model = _model().eval()
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    a = {"text": v, "audio": v.clone(), "video": -v}
    a["audio"][0, 1] = torch.tensor([0.0, 1.0])
    valid = {m: torch.ones(1, 3, dtype=torch.bool) for m in a}
    valid["video"][0, 2] = False
    valid["audio"][0, 2] = False
    sim = model.similarity(a, valid)
    # u0: pairs (a,t)=1, (a,v)=-1, (t,v)=-1 -> -1/3; u1: 0, 0, -1 -> -1/3; u2: one present -> 0.
    torch.testing.assert_close(sim, torch.tensor([[-1 / 3, -1 / 3, 0.0]]))
    f = torch.randn(1, 3, model.fused_dim)
    mask = torch.ones(1, 3, dtype=torch.bool)
    r = model.refuse(f, mask, torch.ones(1, 3))            # s = 1: no context
    assert r.shape == (1, 3, 2 * model.fused_dim)
    torch.testing.assert_close(r[..., :model.fused_dim], f)
    assert (r[..., model.fused_dim:] == 0).all()
    o = model.lstm_states(f, mask)
    r = model.refuse(f, mask, torch.zeros(1, 3))
    torch.testing.assert_close(r[..., model.fused_dim:], 0.8 * neighbour_context(o, mask))
    off = _model(use_crm=False).eval()
    assert off.refuse(f, mask, torch.zeros(1, 3)).shape == (1, 3, off.fused_dim)


def test_official_alignment_loss_by_hand():
    model = _model()
    model.modalities = ["audio", "text"]
    # Utterance 0 (class 0): text 1, audio 0 -> prototype 0.5, d = 0.25, hinge 0.15 each.
    # Utterance 1 (class 1): both 0.3 -> d = 0, hinge 0 (terms 0, counted in the mean).
    a = {"text": torch.tensor([[[1.0], [0.3], [9.0]]]),
         "audio": torch.tensor([[[0.0], [0.3], [-9.0]]])}
    labels = torch.tensor([[0, 1, 2]])
    valid = {m: torch.ones(1, 3, dtype=torch.bool) for m in a}
    lab = torch.tensor([[True, True, False]])            # utterance 2 unlabelled: ignored
    got = model.alignment_loss(a, labels, valid, lab)
    assert got.item() == pytest.approx((0.15 + 0.15 + 0 + 0) / 4, rel=1e-6)


def test_full_model_shapes_padding_and_losses():
    model = _model().train()
    batch = _pair()
    out = model(batch)
    assert out.logits.shape == (2, 6, 3) and out.hidden.shape == (2, 6, 8 * 16)
    assert (out.hidden[1, 3:] == 0).all()
    assert torch.isfinite(out.aux_loss)
    total = sum(out.modality_weights.values())
    torch.testing.assert_close(total[batch.mask], torch.ones(int(batch.mask.sum())))
    # Garbage at padding changes neither the real logits nor the losses (eval).
    model.eval()
    base = model(batch).logits
    for x in batch.features.values():
        x[~batch.mask] = 1e3
    torch.testing.assert_close(model(batch).logits[batch.mask], base[batch.mask])


def test_official_training_settings_are_the_defaults_and_a_set_value_wins():
    from merc.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.model = {"name": "df-erc"}
    t = cfg.resolved().train
    assert (t.lr, t.batch_size, t.max_epochs, t.patience, t.grad_clip, t.weight_decay) == (
        5e-4, 2, 20, 10, 1.0, 0.01)
    assert (t.adam_betas, t.adam_eps, t.warmup_steps, t.lr_decay, t.decay_bias_norm) == (
        [0.9, 0.84], 1e-7, 100, "linear", False)
    cfg.train.batch_size = 8
    assert cfg.resolved().train.batch_size == 8


@pytest.mark.parametrize("scope", ["all", "heads"])
def test_official_init_reaches_every_linear_or_only_the_heads(scope):
    """model.py:81 applies init_esim_weights (Kaiming-uniform, bound sqrt(6/fan_in)) to every
    Linear; PyTorch's own Linear init stays within 1/sqrt(fan_in)."""
    model = create_model("df-erc", {"text": 64, "audio": 48}, len(LABELS), hidden=64,
                         init_scope=scope)

    def beyond_default(linear):
        return bool(linear.weight.abs().max() > 1.0 / math.sqrt(linear.in_features))

    assert beyond_default(model.modality_heads["text"][1])          # an MLP head: both
    for linear in (model.encoders["text"][0], model.classifier):
        assert beyond_default(linear) == (scope == "all")
        assert linear.weight.abs().max() <= math.sqrt(6.0 / linear.in_features)
