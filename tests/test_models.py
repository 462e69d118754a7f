"""The registry test: every registered model in every registered variant (``register_model(...,
variants=...)``) runs forward + backward with a gradient for every parameter, never lets padding
change a real utterance's output, and accepts a single-modality input."""

from __future__ import annotations

import pytest
import torch

from helpers import TOY_DIMS as DIMS
from helpers import TOY_LABELS as LABELS
from helpers import toy_batch, toy_conversation
from merc.models import count_parameters, create_model, get_entry, list_models, make_config

CASES = [(name, variant) for name in list_models()
         for variant in [None, *get_entry(name).variants]]
IDS = [f"{name}[{variant or 'default'}]" for name, variant in CASES]


def _model(name: str, variant: str | None, dims=DIMS) -> torch.nn.Module:
    torch.manual_seed(0)
    options = get_entry(name).variants[variant] if variant else {}
    return create_model(make_config(name, options), dims, len(LABELS))


@pytest.mark.parametrize("name,variant", CASES, ids=IDS)
def test_forward_backward_all_params_get_grads(name, variant):
    model = _model(name, variant).train()
    batch = toy_batch([toy_conversation(5, 0, "x"), toy_conversation(3, 1, "y")])
    out = model(batch)
    assert out.logits.shape == (2, 5, 3)
    loss = torch.nn.functional.cross_entropy(out.logits[batch.mask], batch.labels[batch.mask])
    if out.aux_loss is not None:
        assert out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss)
        loss = loss + out.aux_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and
               (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not missing, f"{name} {variant}: parameters without gradient: {missing}"
    assert count_parameters(model) > 0


@pytest.mark.parametrize("name,variant", CASES, ids=IDS)
def test_padding_does_not_change_outputs(name, variant):
    model = _model(name, variant).eval()
    short = toy_conversation(4, 2, "short")
    alone = model(toy_batch([short])).logits[0]
    padded = model(toy_batch([toy_conversation(9, 3, "long"), short])).logits[1, :4]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,variant", CASES, ids=IDS)
def test_modality_subsets(name, variant):
    model = _model(name, variant, {"audio": DIMS["audio"]})
    batch = toy_batch([toy_conversation(3, 0, "x")], ["audio"])
    assert model(batch).logits.shape == (1, 3, 3)


def test_every_variant_names_real_options():
    """A variant is validated at registration; its options differ from the defaults."""
    for name in list_models():
        default = make_config(name)
        for variant, options in get_entry(name).variants.items():
            assert make_config(name, options) != default, f"{name} {variant} changes nothing"


def _departure_fields(module) -> set[str]:
    """The fields in the first column of the RST table under "Departures from the paper" in a
    model module's docstring (a body row starts with the field in double backquotes)."""
    import re

    doc = module.__doc__
    lines = doc[doc.index("Departures from the paper"):].splitlines()
    rulers = [i for i, line in enumerate(lines) if line.startswith("====")]
    body = "\n".join(lines[rulers[1] + 1:rulers[2]])           # RST table: header, body rulers
    rows = re.findall(r"^``([a-z_]+)``\s", body, flags=re.M)
    assert rows, f"{module.__name__}: no rows in its departures table"
    return set(rows)


@pytest.mark.parametrize("name", ["broad-mamba", "matav"])
def test_paper_variant_differs_from_default_in_exactly_the_listed_settings(name):
    import dataclasses
    import importlib

    entry = get_entry(name)
    assert "paper" in entry.variants
    default, paper = make_config(name), make_config(name, entry.variants["paper"])
    changed = {f.name for f in dataclasses.fields(default)
               if getattr(default, f.name) != getattr(paper, f.name)}
    module = importlib.import_module(entry.cls.__module__)
    assert changed == _departure_fields(module)


def test_unknown_model_and_option_are_clear():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope", DIMS, 3)
    with pytest.raises(ValueError, match="model.hidden_sise: unknown option"):
        create_model("mlp", DIMS, 3, hidden_sise=3)
