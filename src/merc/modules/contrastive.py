"""Momentum-contrast building blocks (MoCo / ALBEF style) for utterance-level alignment.

Three pieces, independent of any particular model:

* :class:`KeyQueue` -- a FIFO memory of the last ``M`` L2-normalised keys of one modality, with
  an integer id per key (which utterance it came from) so a query can skip stale copies of its
  own positive. Kept in buffers: saved in checkpoints, moved with ``.to()``, never trained.
* :func:`momentum_update` -- the exponential moving average ``theta' <- m theta' + (1 - m) theta``
  of a momentum copy towards its online module, without autograd.
* :func:`info_nce` -- the InfoNCE loss ``-log exp(q.k+/tau) / (exp(q.k+/tau) + sum_j
  exp(q.k_j/tau))`` of queries against their positives, with negatives from a queue (and,
  optionally, from the other positives of the current batch).

Utterance ids (:func:`utterance_ids`) are stable across processes (a keyed hash of the dialogue
id and the turn index, not Python's salted ``hash``), so the ids stored in a checkpointed queue
still match after a reload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

EMPTY_ID = -1
"""Id of a queue slot that has never been written (such slots are never used as negatives)."""
UNKNOWN_ID = -2
"""Id of a key whose utterance is unknown (e.g. a batch without dialogue ids); it is used as a
negative for every query, because there is nothing to compare it with."""
_TURN_BITS = 15
"""Bits reserved for the turn index inside an utterance id (dialogues up to 32768 turns)."""


def utterance_ids(dialogue_ids: Sequence[str], batch_size: int, length: int,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, L)`` int64 ids, one per (dialogue, turn), equal across runs and processes.

    ``id = blake2b48(dialogue_id) << 15 | turn`` (non-negative, < 2**63). When the batch does not
    carry one dialogue id per row (``len(dialogue_ids) != batch_size``), every entry is
    :data:`UNKNOWN_ID`.
    """
    if len(dialogue_ids) != batch_size:
        return torch.full((batch_size, length), UNKNOWN_ID, dtype=torch.long, device=device)
    if length > (1 << _TURN_BITS):
        raise ValueError(f"dialogues longer than {1 << _TURN_BITS} turns are not supported")
    heads = [int.from_bytes(hashlib.blake2b(str(d).encode("utf-8"), digest_size=6).digest(),
                            "big") << _TURN_BITS for d in dialogue_ids]
    base = torch.tensor(heads, dtype=torch.long, device=device).unsqueeze(1)     # (B, 1)
    return base + torch.arange(length, dtype=torch.long, device=device)          # (B, L)


@torch.no_grad()
def momentum_update(online: nn.Module, momentum: nn.Module, m: float) -> None:
    """EMA step ``theta' = m * theta' + (1 - m) * theta`` over matching parameters (MoCo Eq. 2).

    Only ``momentum`` changes; runs without building an autograd graph. Buffers (none in the
    linear heads this is used with) are copied verbatim.
    """
    for p_m, p in zip(momentum.parameters(), online.parameters(), strict=True):
        p_m.mul_(m).add_(p.detach(), alpha=1.0 - m)
    for b_m, b in zip(momentum.buffers(), online.buffers(), strict=True):
        b_m.copy_(b)


class KeyQueue(nn.Module):
    """FIFO queue of the last ``size`` keys (``dim`` wide) and their utterance ids.

    ``keys[ptr]`` is the oldest entry once the queue has wrapped; :meth:`enqueue` writes new keys
    at ``ptr, ptr+1, ...`` (mod ``size``), overwriting the oldest ones first, exactly as writing
    them one at a time would -- also when more than ``size`` keys arrive at once (then only the
    newest ``size`` survive). Never-written slots have id :data:`EMPTY_ID` and are not negatives.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.size, self.dim = int(size), int(dim)
        self.register_buffer("keys", torch.zeros(self.size, self.dim))
        self.register_buffer("ids", torch.full((self.size,), EMPTY_ID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def valid(self) -> torch.Tensor:
        """``(size,)`` bool, ``True`` at slots holding a key."""
        return self.ids != EMPTY_ID

    def __len__(self) -> int:
        return int(self.valid.sum())

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Append ``keys (n, dim)`` (with ``ids (n,)``, default :data:`UNKNOWN_ID`) in order."""
        n = keys.shape[0]
        if n == 0:
            return
        if keys.shape[1] != self.dim:
            raise ValueError(f"key width {keys.shape[1]} != queue width {self.dim}")
        if ids is None:
            ids = torch.full((n,), UNKNOWN_ID, dtype=torch.long, device=keys.device)
        start = int(self.ptr)
        if n > self.size:            # only the newest `size` keys survive a sequential write
            skip = n - self.size
            keys, ids, start, n = keys[skip:], ids[skip:], (start + skip) % self.size, self.size
        slots = (start + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.ids[slots] = ids.to(self.ids.device)
        self.ptr.fill_((start + n) % self.size)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float,
             queue_keys: torch.Tensor | None = None, queue_ids: torch.Tensor | None = None,
             q_ids: torch.Tensor | None = None, in_batch: bool = False,
             include_positive: bool = True) -> torch.Tensor:
    """Mean InfoNCE loss of ``N`` queries against their positives.

    For query ``i``: ``l_i = -log( exp(q_i.k_i/tau) / (exp(q_i.k_i/tau) + sum_{j in neg(i)}
    exp(q_i.n_j/tau)) )`` -- MoCo's form, the positive counted once in the denominator.
    ``neg(i)``: every filled queue slot whose id differs from ``q_ids[i]`` (a stale copy of the
    same utterance is never a negative; ids ``< 0`` never match), plus with ``in_batch`` the
    other positives ``k_j, j != i`` of the batch (same exclusion by id). Without negatives the
    loss of a query is exactly 0.

    ``include_positive=False`` drops the positive from the denominator: ``l_i = -q_i.k_i/tau +
    log sum_{j in neg(i)} exp(q_i.n_j/tau)`` (MaTAV's Eq. 5 read literally). No longer a
    cross-entropy, it can go below 0; with unit-norm vectors (``q.k <= 1``, ``q.n >= -1``) it is
    bounded below by ``log |neg(i)| - 2/tau``. A query without negatives still contributes 0.

    Args:
        q: ``(N, P)`` L2-normalised queries (online heads; gradients flow into them).
        k: ``(N, P)`` L2-normalised positive keys (momentum heads; treated as constants).
        temperature: ``tau > 0``.
        queue_keys, queue_ids: ``(M, P)`` keys and ``(M,)`` ids of a :class:`KeyQueue`.
        q_ids: ``(N,)`` utterance ids of the queries (default: all :data:`UNKNOWN_ID`).
        in_batch: Also use the batch's other positives as negatives (ALBEF style).
        include_positive: Count the positive in the denominator (MoCo; default).

    Returns:
        Scalar mean over the ``N`` queries (0 with a graph when ``N == 0``).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q.shape[0] == 0:
        return q.sum() * 0.0
    k = k.detach()
    if q_ids is None:
        q_ids = torch.full((q.shape[0],), UNKNOWN_ID, dtype=torch.long, device=q.device)
    pos = (q * k).sum(-1, keepdim=True) / temperature                           # (N, 1)
    parts = [pos]
    if queue_keys is not None and queue_keys.shape[0] > 0:
        # A copy: the queue is updated in place after the loss, before the backward pass.
        bank = queue_keys.detach().to(q.dtype, copy=True)
        neg = q @ bank.t() / temperature                                        # (N, M)
        same = (queue_ids.unsqueeze(0) == q_ids.unsqueeze(1)) & (q_ids.unsqueeze(1) >= 0)
        drop = same | (queue_ids == EMPTY_ID).unsqueeze(0)
        parts.append(neg.masked_fill(drop, float("-inf")))
    if in_batch and q.shape[0] > 1:
        neg = q @ k.t() / temperature                                           # (N, N)
        eye = torch.eye(q.shape[0], dtype=torch.bool, device=q.device)
        same = (q_ids.unsqueeze(0) == q_ids.unsqueeze(1)) & (q_ids.unsqueeze(1) >= 0)
        parts.append(neg.masked_fill(eye | same, float("-inf")))
    if include_positive:
        logits = torch.cat(parts, dim=1)
        return (torch.logsumexp(logits, dim=1) - pos.squeeze(1)).mean()
    if len(parts) == 1:
        return q.sum() * 0.0
    neg = torch.cat(parts[1:], dim=1)                                           # (N, M')
    has = torch.isfinite(neg).any(dim=1)                                        # (N,)
    # Rows without a negative: a finite stand-in keeps logsumexp (and its gradient) finite.
    lse = torch.logsumexp(neg.masked_fill(~has.unsqueeze(1), 0.0), dim=1)
    per = torch.where(has, lse - pos.squeeze(1), torch.zeros_like(lse))
    return per.mean()


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float,
                           anchors: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``L^sup_out``) of ``N`` labelled vectors.

    For anchor ``i`` with positives ``P(i) = {p != i : y_p = y_i}`` and contrast set ``A(i) =
    {a != i}`` (every other vector, positives included):
    ``l_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) )``.
    The loss is the mean of ``l_i`` over the anchors that have at least one positive; anchors
    without a positive are skipped (they have nothing to be pulled towards), nothing else is.

    Args:
        z: ``(N, P)`` L2-normalised vectors (the caller normalises; only valid vectors -- no
            padding, no missing features).
        labels: ``(N,)`` integer labels; equal labels are positives of each other.
        temperature: ``tau > 0``.
        anchors: Optional ``(K,)`` indices into ``z`` of the vectors used as anchors (e.g. a
            random subset, to bound the ``K x N`` similarity matrix); the contrast set is still
            all ``N`` vectors. Default: every vector is an anchor.

    Returns:
        Scalar; ``0`` (with a graph through ``z``) when no anchor has a positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    idx = torch.arange(n, device=z.device) if anchors is None else anchors.to(z.device)
    if idx.numel() == 0 or n < 2:
        return z.sum() * 0.0
    labels = labels.to(z.device)
    is_self = idx.unsqueeze(1) == torch.arange(n, device=z.device).unsqueeze(0)     # (K, N)
    pos = (labels[idx].unsqueeze(1) == labels.unsqueeze(0)) & ~is_self
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    sim = (z[idx] @ z.t() / temperature).masked_fill(is_self, float("-inf"))       # (K, N)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos_sum = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(pos_sum[has] / n_pos[has].to(z.dtype)).mean()
