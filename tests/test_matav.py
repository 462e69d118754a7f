"""MaTAV: MEC loss and its queues/momentum heads, every ablation trains, subsets, padding."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from merc.models import count_parameters, create_model, get_entry
from merc.modules.contrastive import (EMPTY_ID, UNKNOWN_ID, KeyQueue, info_nce, momentum_update,
                                      utterance_ids)

from helpers import TOY_DIMS as DIMS
from helpers import TOY_LABELS as LABELS
from helpers import toy_batch as _batch
from helpers import toy_conversation as _conversation
from helpers import toy_pair as _pair

# Tiny widths keep every case fast on a busy CPU.
SMALL = {"proj_dim": 16, "attn_layers": 2, "attn_heads": 2, "attn_ffn": 16, "fused_dim": 16,
         "d_model": 16, "state_size": 4, "queue_size": 64}


def _model(dims=DIMS, **overrides):
    torch.manual_seed(0)
    return create_model("matav", dims, len(LABELS), **{**SMALL, **overrides})


# --------------------------------------------------------------------------------------------
# InfoNCE / MEC loss
# --------------------------------------------------------------------------------------------

def test_info_nce_aligned_below_shuffled_and_excludes_own_copies():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=g)
    q = F.normalize(z + 0.2 * torch.randn(32, 16, generator=g), dim=-1)
    k = F.normalize(z + 0.2 * torch.randn(32, 16, generator=g), dim=-1)
    bank = F.normalize(torch.randn(64, 16, generator=g), dim=-1)
    bank_ids = torch.arange(100, 164)
    aligned = info_nce(q, k, 0.07, bank, bank_ids)
    shuffled = info_nce(q, k[torch.randperm(32, generator=g)], 0.07, bank, bank_ids)
    assert aligned < 0.5 * shuffled
    # In-batch negatives only add terms to the denominator.
    assert info_nce(q, k, 0.07, bank, bank_ids, in_batch=True) > aligned
    # A queue holding exactly the batch's positives: each query's own copy is excluded by id,
    # leaving the other utterances -- the in-batch loss. Without ids the copy is a negative.
    ids = torch.arange(32)
    own_excluded = info_nce(q, k, 0.07, k, ids, q_ids=ids)
    torch.testing.assert_close(own_excluded, info_nce(q, k, 0.07, in_batch=True))
    assert info_nce(q, k, 0.07, k, torch.full((32,), UNKNOWN_ID), q_ids=ids) > own_excluded
    assert info_nce(q[:1], k[:1], 0.07, k[:1], ids[:1], q_ids=ids[:1]) == 0
    # Empty slots are never negatives.
    assert info_nce(q, k, 0.07, bank, torch.full((64,), EMPTY_ID)) == 0


def test_info_nce_literal_eq5_drops_the_positive_from_the_denominator():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    k = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    bank = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    ids = torch.arange(100, 105)
    literal = info_nce(q, k, 1.0, bank, ids, include_positive=False)
    torch.testing.assert_close(literal, (torch.logsumexp(q @ bank.t(), 1) - (q * k).sum(1)).mean())
    # The positive in the denominator only adds a term: MoCo's loss is the larger one.
    assert info_nce(q, k, 1.0, bank, ids) > literal
    # Queries whose every negative is excluded contribute 0, with a finite gradient.
    q.requires_grad_(True)
    none = info_nce(q, k, 1.0, bank, torch.full((5,), EMPTY_ID), include_positive=False)
    none.backward()
    assert none == 0 and torch.isfinite(q.grad).all()


def _identity_heads(model):
    """Make every g_m (and g'_m) the identity, so aligned inputs give aligned projections."""
    with torch.no_grad():
        for m, head in model.heads.items():
            head.weight.copy_(torch.eye(head.weight.shape[0]))
            head.bias.zero_()
        for m, head in model.momentum_heads.items():
            head.load_state_dict(model.heads[m].state_dict())


def test_mec_loss_low_for_aligned_pairs_and_grows_for_shuffled():
    dims = {m: 16 for m in DIMS}
    model = _model(dims, temperature=0.1)
    _identity_heads(model)
    rng = np.random.default_rng(0)

    def batch(seed, shuffle=False):
        convs = []
        for i, n in enumerate((7, 5)):
            c = _conversation(n, seed + i, f"d{seed}_{i}", dims,
                              latent=rng.normal(size=(n, 16)), noise=0.2)
            convs.append(c)
        b = _batch(convs)
        if shuffle:   # break the pairing: audio and video of other real utterances
            real = b.mask.nonzero(as_tuple=True)
            for m, shift in (("audio", 1), ("video", 2)):
                x = b.features[m][real]
                b.features[m][real] = x.roll(shift, dims=0)
        return b

    model.train()
    for s in range(3):                        # fill the queues with keys of other utterances
        model.enqueue(batch(10 * s + 100), model.momentum_keys(batch(0).select(model.modalities)))
    assert len(model.queues["audio"]) == 36 and "text" not in model.queues
    aligned = model.mec_terms(batch(1))
    shuffled = model.mec_terms(batch(1, shuffle=True))
    assert set(aligned) == {"s(text,audio')", "s(audio,video')", "s(text,video')"}
    for name in aligned:
        assert aligned[name] < 0.5 * shuffled[name], name
    # mec_terms has no side effects.
    assert len(model.queues["audio"]) == 36


# --------------------------------------------------------------------------------------------
# Queues and momentum heads
# --------------------------------------------------------------------------------------------

def test_queue_fifo_wraps_and_overwrites_oldest_first():
    size = 5
    queue = KeyQueue(size, 2)
    ref: deque[int] = deque(maxlen=size)     # one-at-a-time reference
    next_id = 0
    for n in (3, 4, 1, 12, 5, 0, 2):
        ids = torch.arange(next_id, next_id + n)
        keys = torch.stack([ids.float(), -ids.float()], dim=1)
        queue.enqueue(keys, ids)
        ref.extend(range(next_id, next_id + n))
        next_id += n
        # Slot ptr holds the oldest key once full; reading from ptr gives insertion order.
        assert int(queue.ptr) == next_id % size
        order = [(int(queue.ptr) + i) % size for i in range(size)]
        held = [int(queue.ids[i]) for i in order if int(queue.ids[i]) != EMPTY_ID]
        assert held == list(ref)
        assert torch.equal(queue.keys[queue.valid, 0], queue.ids[queue.valid].float())
    # After 3 keys only: 3 filled slots, 2 empty ones.
    q2 = KeyQueue(size, 2)
    q2.enqueue(torch.zeros(3, 2), torch.arange(3))
    assert len(q2) == 3 and int(q2.ptr) == 3 and q2.ids.tolist() == [0, 1, 2, EMPTY_ID, EMPTY_ID]


def test_padded_and_absent_utterances_never_enter_the_queue():
    model = _model().train()
    batch = _pair()                                       # lengths 6 and 3 -> 3 padded slots
    batch.present["video"][0, 2] = False                 # one missing video feature
    keys = model.momentum_keys(batch.select(model.modalities))
    model(batch)
    ids = utterance_ids(batch.dialogue_ids, *batch.mask.shape)
    for m, n_expected in (("audio", 9), ("video", 8)):
        queue = model.queues[m]
        assert len(queue) == n_expected and int(queue.ptr) == n_expected
        valid = batch.mask.clone()
        if m == "video":
            valid[0, 2] = False
        assert queue.ids[:n_expected].tolist() == ids[valid].tolist()
        # The queued keys are those of the real utterances (EMA is a no-op right after init).
        torch.testing.assert_close(queue.keys[:n_expected], keys[m][valid])
    assert model.queues["video"].ids[:9].tolist().count(int(ids[0, 2])) == 0


def test_momentum_update_moves_only_the_momentum_heads_and_not_in_eval():
    model = _model()
    with torch.no_grad():                        # make online != momentum
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p))
    online = {k: v.clone() for k, v in model.heads.state_dict().items()}
    before = {k: v.clone() for k, v in model.momentum_heads.state_dict().items()}
    queue_before = model.queues["audio"].keys.clone()

    model.eval()
    with torch.no_grad():
        out = model(_pair())
    assert out.aux_loss is None
    for k, v in model.momentum_heads.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(model.queues["audio"].keys, queue_before)
    assert len(model.queues["audio"]) == 0

    model.train()
    out = model(_pair())
    m = model.config.momentum
    for k, v in model.momentum_heads.state_dict().items():
        torch.testing.assert_close(v, m * before[k] + (1 - m) * online[k])
        assert not torch.equal(v, before[k])
    for k, v in model.heads.state_dict().items():
        assert torch.equal(v, online[k])
    (out.logits.sum() + out.aux_loss).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.momentum_heads.parameters())


def test_momentum_update_helper_is_graph_free():
    online, mom = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    mom.requires_grad_(False)
    w0 = mom.weight.clone()
    momentum_update(online, mom, 0.9)
    torch.testing.assert_close(mom.weight, 0.9 * w0 + 0.1 * online.weight.detach())
    assert mom.weight.grad_fn is None and online.weight.grad is None


def test_utterance_ids_are_stable_and_distinct():
    a = utterance_ids(["dlg1", "dlg2"], 2, 4)
    assert torch.equal(a, utterance_ids(["dlg1", "dlg2"], 2, 4))
    assert a.unique().numel() == 8 and (a >= 0).all()
    assert (utterance_ids([], 2, 4) == UNKNOWN_ID).all()


# --------------------------------------------------------------------------------------------
# Whole model: ablations, subsets, padding, checkpoints
# --------------------------------------------------------------------------------------------

VARIANTS = {"default": {}, **get_entry("matav").variants}
"""The registered variants (their forward/backward and padding: the registry test)."""


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_mec_loss_and_queues(variant):
    model = _model(**VARIANTS[variant]).train()
    for step in range(2):                        # the 2nd step has queued negatives
        model.zero_grad()
        batch = _pair(seed=step)
        out = model(batch)
        assert out.logits.shape == (2, 6, 3) and out.hidden.shape == (2, 6, 16)
        loss = F.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask])
        if variant == "w/o MEC":
            assert out.aux_loss is None
        else:
            assert out.aux_loss is not None and torch.isfinite(out.aux_loss)
            if step == 1 or "in-batch" in variant:
                # The literal Eq. 5 (no positive in the denominator) may go below 0.
                assert out.aux_loss != 0 if variant == "paper" else out.aux_loss > 0
            loss = loss + out.aux_loss
        loss.backward()
    if variant == "w/o MEC":
        assert len(model.momentum_heads) == 0 and len(model.queues) == 0
    if variant == "symmetric + in-batch":
        assert len(model.pairs) == 6 and sorted(model.queues) == sorted(DIMS)
    else:
        assert sorted(model.queues) == ([] if variant == "w/o MEC" else ["audio", "video"])


@pytest.mark.parametrize("modalities,pairs", [
    (("text", "audio"), [("text", "audio")]),
    (("audio", "video"), [("audio", "video")]),
    (("text", "video"), [("text", "video")]),
    (("audio",), []),
])
def test_modality_subsets(modalities, pairs):
    dims = {m: DIMS[m] for m in modalities}
    model = _model(dims).train()
    assert model.pairs == pairs
    model(_pair(modalities))
    out = model(_pair(modalities, seed=5))
    assert out.logits.shape == (2, 6, 3)
    assert (out.aux_loss is None) == (not pairs)
    if pairs:
        assert out.aux_loss > 0


def test_missing_modality_and_require_tav_are_clear():
    model = _model()
    with pytest.raises(KeyError, match=r"lacks modalities \['video'\]"):
        model(_pair(("text", "audio")))
    with pytest.raises(ValueError, match="require_tav"):
        _model({"text": 12, "audio": 5}, require_tav=True)
    _model(require_tav=True)                     # the full set is accepted


def test_parameter_count_and_checkpoint_round_trip(tmp_path):
    dims = {"text": 384, "audio": 8}
    full = create_model("matav", dims, 6)        # the paper-sized default
    n = count_parameters(full)
    assert n == count_parameters(create_model("matav", dims, 6, use_mec=False))
    momentum = sum(p.numel() for p in full.momentum_heads.parameters())
    assert sum(p.numel() for p in full.parameters()) - n == momentum == 9 * 256
    print(f"MaTAV default, dims {dims}, 6 classes: {n:,} trainable parameters")

    model = _model().train()
    model(_pair())
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = _model()
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(fresh.queues["video"].ids, model.queues["video"].ids)
    assert int(fresh.queues["video"].ptr) == int(model.queues["video"].ptr)
