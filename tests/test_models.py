"""Every registered model: forward + backward on a tiny batch, all parameters get gradients,
and padding never changes a real utterance's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merc.data.collate import DialogueDataset, collate_dialogues
from merc.data.conversation import Conversation
from merc.models import count_parameters, create_model, list_models

DIMS = {"text": 12, "audio": 5, "video": 7}
LABELS = ["a", "b", "c"]


def _conversation(n: int, seed: int, cid: str) -> Conversation:
    rng = np.random.default_rng(seed)
    return Conversation(
        id=cid, split="train", speakers=[["A", "B"][i % 2] for i in range(n)],
        utterances=[f"u{i}" for i in range(n)], labels=[LABELS[i % 3] for i in range(n)],
        features={m: rng.normal(size=(n, d)).astype(np.float32) for m, d in DIMS.items()})


def _batch(convs):
    return collate_dialogues(DialogueDataset(convs, LABELS, sorted(DIMS)).items)


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_all_params_get_grads(name):
    torch.manual_seed(0)
    model = create_model(name, DIMS, len(LABELS))
    batch = _batch([_conversation(5, 0, "x"), _conversation(3, 1, "y")])
    out = model(batch)
    assert out.logits.shape == (2, 5, 3)
    loss = torch.nn.functional.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask])
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and
               (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    assert count_parameters(model) > 0


@pytest.mark.parametrize("name", list_models())
def test_padding_does_not_change_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, DIMS, len(LABELS)).eval()
    short = _conversation(4, 2, "short")
    alone = model(_batch([short])).logits[0]
    padded = model(_batch([_conversation(9, 3, "long"), short])).logits[1, :4]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_modality_subsets(name):
    model = create_model(name, {"audio": 5}, 2)
    convs = [_conversation(3, 0, "x")]
    batch = collate_dialogues(DialogueDataset(convs, LABELS, ["audio"]).items)
    assert model(batch).logits.shape == (1, 3, 2)


def test_unknown_model_and_option_are_clear():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope", DIMS, 3)
    with pytest.raises(ValueError, match="unknown option"):
        create_model("mlp", DIMS, 3, hidden_sise=3)
