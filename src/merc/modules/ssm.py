"""State space sequence layers over the dialogue axis (paper §3.2, Eq. 1-5, and Eq. 11).

Two context encoders live here, both bidirectional and both padding-invariant:

* :class:`BiSSMConv` -- the paper's *bidirectional SSM convolution* (Eq. 11). A diagonal,
  time-invariant SSM per channel (S4D-real style) is discretised with Eq. 2-3, unrolled into the
  convolution kernel of Eq. 5 and applied with an FFT in ``O(L log L)``; a forward and a
  separately parametrised backward kernel are added together with the ``D`` skip.
* :class:`BiSelectiveScan` -- the Mamba variant (input-dependent ``Delta``, ``B``, ``C``), computed
  by a sequential reference scan on CPU, or by ``mamba_ssm``'s CUDA kernel when it is installed
  and the input lives on a GPU.

Shapes follow the rest of merc: ``x`` is ``(B, L, D)`` (batch, utterances, channels) and ``mask``
is ``(B, L)`` with ``True`` at real utterances. ``N`` is the state size per channel.

Padding. Padded positions of the *input* are zeroed first. The forward direction is causal, so
padding (which always follows the real utterances) can never reach a real position. The
backward direction runs from the end of the padded tensor: the state it carries into a
dialogue's real last utterance was fed only zeros, so it is exactly zero -- the same state as
when the scan starts at that utterance. Hence a plain flip of the whole ``L`` axis is equivalent
to flipping each dialogue within its real length (:func:`flip_padded`), which the reference
implementations do explicitly and the tests compare.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

try:  # Optional CUDA kernel; the pure-PyTorch scan below is the reference and the CPU path.
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_scan
except (ImportError, OSError, RuntimeError):  # pragma: no cover - broken CUDA builds raise too
    _mamba_scan = None


def mamba_ssm_available() -> bool:
    """Whether ``mamba_ssm``'s ``selective_scan_fn`` could be imported."""
    return _mamba_scan is not None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def flip_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence within its real length, leaving padding where it is.

    Args:
        x: ``(B, L, ...)``.
        lengths: ``(B,)`` real lengths.

    Returns:
        ``(B, L, ...)`` with ``out[b, t] = x[b, n_b - 1 - t]`` for ``t < n_b`` and
        ``out[b, t] = x[b, t]`` otherwise. The map is its own inverse.
    """
    B, L = x.shape[:2]
    t = torch.arange(L, device=x.device).unsqueeze(0)                  # (1, L)
    n = lengths.to(x.device).view(B, 1)
    src = torch.where(t < n, n - 1 - t, t)                               # (B, L)
    src = src.view(B, L, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, src)


def exempt_from_weight_decay(*params: nn.Parameter) -> None:
    """Mark SSM parameters to train without weight decay (``param._no_weight_decay = True``, read
    by :func:`merc.training.loop.make_optimizer`), as the Mamba reference code does for ``A_log``
    and ``D``: decay would pull every state's ``A = -exp(A_log)`` towards ``-1`` (one time scale
    for all) and the skip ``D`` towards 0, neither of which is a smaller, simpler model."""
    for p in params:
        p._no_weight_decay = True


def _zero_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


def fft_causal_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution ``y[..., j] = sum_{l <= j} k[..., j - l] x[..., l]`` via FFT.

    Args:
        x: ``(B, D, L)`` signal.
        k: ``(D, L)`` kernel (one per channel).

    Returns:
        ``(B, D, L)``. The transforms use ``n = 2L`` so the circular convolution computed by the
        FFT equals the linear one on the first ``L`` outputs (no wrap-around): ``O(L log L)``.
    """
    L = x.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :L]


# --------------------------------------------------------------------------------------------
# Time-invariant diagonal SSM (Eq. 1-5) and its bidirectional convolution (Eq. 11)
# --------------------------------------------------------------------------------------------

class BiSSMConv(nn.Module):
    """Bidirectional SSM convolution, Eq. 11: ``y_j = sum_{l<=j} Kf_{j-l} x_l +
    sum_{l>=j} Kb_{l-j} x_l + d * x_j``.

    Each of the ``D`` channels holds an independent single-input single-output SSM (Eq. 1) with a
    diagonal state matrix of size ``N``; the forward and the backward direction have separate
    ``A``, ``B``, ``C`` and ``Delta`` (the skip ``d`` is shared, as Eq. 11 has a single ``d``).

    Parametrisation (per direction):

    * ``A = -exp(A_log)`` -- always negative, hence ``|exp(Delta A)| < 1`` and a stable, decaying
      kernel; initialised S4D-real style to ``A_n = -(n + 1)``, ``n = 0..N-1``.
    * ``Delta = exp(log_dt)`` per channel, initialised log-uniformly in ``[dt_min, dt_max]`` so the
      channels start with time scales from a few to a few hundred utterances.
    * Discretisation: ``A_bar = exp(Delta A)`` (Eq. 2) and the first-order ``B_bar = Delta B``
      (Eq. 3) -- the paper's choice, also Mamba's.
    * Kernel (Eq. 5): ``K_k = C A_bar^k B_bar = sum_n C_n B_bar_n exp(k Delta A_n)``,
      ``k = 0..L-1``; a Vandermonde product, cheap for the short dialogue axis.

    The diagonal term ``l = j`` appears in *both* sums of Eq. 11 (``l <= j`` and ``l >= j``), and we
    keep it literally so: ``y_j`` contains ``(Kf_0 + Kb_0 + d) x_j``. The three coefficients are
    separate parameters, so counting the current utterance twice only over-parametrises a
    per-channel gain and changes nothing else.

    ``bidirectional=False`` keeps the forward direction only (``y_j = sum_{l<=j} Kf_{j-l} x_l +
    d * x_j``): no output depends on a later input, and :meth:`step` computes the same outputs
    one position at a time from a fixed-size state (the live predictor's use).

    Args:
        dim: Channels ``D``.
        state_size: ``N``.
        dt_min, dt_max: Range of the initial ``Delta``.
        bidirectional: Both directions (Eq. 11), or the causal forward direction alone.
    """

    def __init__(self, dim: int, state_size: int = 16, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, bidirectional: bool = True) -> None:
        super().__init__()
        self.dim, self.state_size = dim, state_size
        self.bidirectional = bidirectional
        n_dir = 2 if bidirectional else 1
        # Index 0 = forward direction, 1 = backward direction.
        a = torch.arange(1, state_size + 1, dtype=torch.float32).repeat(n_dir, dim, 1)
        self.A_log = nn.Parameter(torch.log(a))                                 # (dir, D, N)
        self.B = nn.Parameter(torch.ones(n_dir, dim, state_size))               # (dir, D, N)
        self.C = nn.Parameter(torch.randn(n_dir, dim, state_size))              # (dir, D, N)
        log_dt = (torch.rand(n_dir, dim) * (math.log(dt_max) - math.log(dt_min))
                  + math.log(dt_min))
        self.log_dt = nn.Parameter(log_dt)                                      # (dir, D)
        self.D = nn.Parameter(torch.ones(dim))                                  # (D,)
        exempt_from_weight_decay(self.A_log, self.D)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A_bar, B_bar, C)``, each ``(dir, D, N)`` (Eq. 2-3)."""
        dt = torch.exp(self.log_dt).unsqueeze(-1)                               # (2, D, 1)
        A = -torch.exp(self.A_log)
        return torch.exp(dt * A), dt * self.B, self.C

    def kernels(self, length: int) -> torch.Tensor:
        """The Eq. 5 kernels ``(dir, D, length)`` of each direction.

        ``K_k = sum_n c_n exp(k dtA_n)`` with ``c = C * Delta B``. Writing ``k = s + j`` with
        ``s`` a multiple of a block size ``J ~ sqrt(L)`` and ``0 <= j < J`` factorises the
        powers, ``exp(k dtA) = exp(s dtA) exp(j dtA)``, so only ``N (L/J + J)`` exponentials per
        channel are needed instead of ``N L``, and the sum over ``n`` becomes one batched matrix
        product ``(L/J, N) @ (N, J)``. Exponents below -80 (values < 2e-35, zero for any purpose
        here) are clamped to stay out of exp's slow denormal range. Same kernel as the direct
        Vandermonde sum up to float rounding (tested against the recurrence).
        """
        dt = torch.exp(self.log_dt).unsqueeze(-1)                               # (2, D, 1)
        dtA = -torch.exp(self.A_log) * dt                                      # (2, D, N)
        coef = self.C * (dt * self.B)                                          # (2, D, N)
        block = max(1, math.isqrt(length))
        n_blocks = -(-length // block)
        j = torch.arange(block, device=dtA.device, dtype=dtA.dtype)
        s = torch.arange(n_blocks, device=dtA.device, dtype=dtA.dtype) * block
        inner = torch.exp((dtA.unsqueeze(-1) * j).clamp(min=-80.0))             # (2, D, N, J)
        outer = torch.exp((dtA.unsqueeze(-1) * s).clamp(min=-80.0))             # (2, D, N, S)
        outer = outer * coef.unsqueeze(-1)
        K = torch.matmul(outer.transpose(-1, -2), inner)                        # (2, D, S, J)
        return K.reshape(*K.shape[:2], -1)[..., :length]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, L, D)``, ``mask (B, L)`` -> ``(B, L, D)``; zero at padded positions."""
        x = _zero_padding(x, mask)
        u = x.transpose(1, 2)                                                   # (B, D, L)
        K = self.kernels(u.shape[-1]).to(u.dtype)
        y = fft_causal_conv(u, K[0])
        if self.bidirectional:
            # Backward sum over l >= j == causal conv of the time-reversed signal, reversed
            # back. Reversing the whole padded axis is safe: padding inputs are zero.
            y = y + fft_causal_conv(u.flip(-1), K[1]).flip(-1)
        y = y + self.D.unsqueeze(-1) * u          # (fwd + bwd) + skip: the order is kept
        return _zero_padding(y.transpose(1, 2), mask)

    def init_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """The zero state ``(B, D, N)`` of the forward recurrence before the first input."""
        return torch.zeros(batch, self.dim, self.state_size, device=device, dtype=dtype)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One position of the causal SSM (``bidirectional=False`` only): ``x (B, D)``, state
        ``h (B, D, N)`` -> ``(y (B, D), h')`` with ``h' = A_bar h + B_bar x`` and
        ``y = C h' + d x`` (Eq. 4): what :meth:`forward` gives at that position, in time and
        memory independent of how many positions came before."""
        if self.bidirectional:
            raise ValueError("step() needs a causal SSM (bidirectional=False): the backward "
                             "direction reads the future")
        A_bar, B_bar, C = (t[0].to(x.dtype) for t in self.discretize())
        h = A_bar * h + B_bar * x.unsqueeze(-1)
        return (h * C).sum(-1) + self.D.to(x.dtype) * x, h

    @torch.no_grad()
    def reference(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Same output as :meth:`forward` from the explicit recurrences of Eq. 4 (slow; tests).

        The backward direction flips each dialogue within its real length, scans forward, and
        flips back -- i.e. its scan starts at the dialogue's real last utterance.
        """
        x = _zero_padding(x, mask)
        lengths = (mask.sum(1) if mask is not None
                   else torch.full((x.shape[0],), x.shape[1], device=x.device))
        A_bar, B_bar, C = (t.to(x.dtype) for t in self.discretize())
        y = lti_recurrence(x, A_bar[0], B_bar[0], C[0])
        if self.bidirectional:
            y = y + flip_padded(lti_recurrence(flip_padded(x, lengths), A_bar[1], B_bar[1],
                                               C[1]), lengths)
        return _zero_padding(y + self.D.to(x.dtype) * x, mask)


def lti_recurrence(x: torch.Tensor, A_bar: torch.Tensor, B_bar: torch.Tensor,
                   C: torch.Tensor) -> torch.Tensor:
    """Reference scan of Eq. 4 without the skip: ``h_t = A_bar h_{t-1} + B_bar x_t``,
    ``y_t = C h_t`` with ``h_{-1} = 0``, for a diagonal ``A_bar``.

    Args:
        x: ``(B, L, D)`` input.
        A_bar, B_bar, C: ``(D, N)`` discretised parameters, one diagonal SSM per channel.

    Returns:
        ``(B, L, D)``.
    """
    Bsz, L, D = x.shape
    h = x.new_zeros(Bsz, D, A_bar.shape[-1])                                   # (B, D, N)
    ys = []
    for t in range(L):
        h = A_bar * h + B_bar * x[:, t, :, None]                               # (B, D, N)
        ys.append((h * C).sum(-1))                                             # (B, D)
    return torch.stack(ys, dim=1)


# --------------------------------------------------------------------------------------------
# Selective (Mamba) scan
# --------------------------------------------------------------------------------------------

def selective_scan_reference(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                             B: torch.Tensor, C: torch.Tensor,
                             D: torch.Tensor | None = None) -> torch.Tensor:
    """Sequential selective scan (Mamba, Gu & Dao 2023, Alg. 2), the readable reference.

    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``, ``h_{-1} = 0``;
    ``exp(delta A)`` is Eq. 2's zero-order hold for ``A`` and ``delta B`` Eq. 3's first-order ``B``
    (the same discretisation ``mamba_ssm`` uses).

    Args:
        u: ``(B, L, D)`` input.
        delta: ``(B, L, D)`` positive step sizes (already through softplus).
        A: ``(D, N)`` continuous, negative state matrix (diagonal per channel).
        B, C: ``(B, L, N)`` input-dependent projections shared by the channels.
        D: ``(D,)`` skip, or ``None``.

    Returns:
        ``(B, L, D)``.
    """
    Bsz, L, Dm = u.shape
    h = u.new_zeros(Bsz, Dm, A.shape[-1])                                      # (B, D, N)
    ys = []
    for t in range(L):
        dt = delta[:, t, :, None]                                              # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * B[:, t, None, :] * u[:, t, :, None]   # (B, D, N)
        ys.append((h * C[:, t, None, :]).sum(-1))                              # (B, D)
    y = torch.stack(ys, dim=1)
    return y if D is None else y + u * D


def selective_scan_cuda(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                        C: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`selective_scan_reference` through ``mamba_ssm``'s fused kernel (same arguments).

    ``mamba_ssm`` wants channel-first tensors: ``u, delta (B, D, L)``, ``B, C (B, N, L)``.
    """
    if _mamba_scan is None:
        raise RuntimeError("mamba_ssm is not installed")
    y = _mamba_scan(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(),
                    A.contiguous(), B.transpose(1, 2).contiguous(),
                    C.transpose(1, 2).contiguous(), D, delta_softplus=False)
    return y.transpose(1, 2)


class _SelectiveDirection(nn.Module):
    """One direction of a selective SSM: input-dependent ``Delta``, ``B``, ``C`` (Mamba S6)."""

    def __init__(self, dim: int, state_size: int, dt_rank: int, dt_min: float,
                 dt_max: float) -> None:
        super().__init__()
        a = torch.arange(1, state_size + 1, dtype=torch.float32).repeat(dim, 1)
        self.A_log = nn.Parameter(torch.log(a))                                 # (D, N)
        exempt_from_weight_decay(self.A_log)
        self.x_proj = nn.Linear(dim, dt_rank + 2 * state_size, bias=False)
        self.dt_proj = nn.Linear(dt_rank, dim)
        # Mamba's Delta init: softplus(bias) log-uniform in [dt_min, dt_max] (inverse softplus).
        dt = torch.exp(torch.rand(dim) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_rank, self.state_size = dt_rank, state_size

    def params(self, x: torch.Tensor):
        """``x (B, L, D)`` -> ``delta (B, L, D)``, ``A (D, N)``, ``B, C (B, L, N)``."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.state_size, self.state_size], -1)
        return F.softplus(self.dt_proj(dt)), -torch.exp(self.A_log), B, C


class BiSelectiveScan(nn.Module):
    """Bidirectional selective SSM (``context: selective``): a forward and a separately
    parametrised backward Mamba-style scan, added with a shared ``D`` skip like Eq. 11.

    The backward direction flips each dialogue within its real length (:func:`flip_padded`), so
    its scan starts at the real last utterance. Uses ``mamba_ssm`` when it is importable and the
    input is on CUDA, otherwise :func:`selective_scan_reference`.

    Args:
        dim: Channels ``D``.
        state_size: ``N``.
        dt_rank: Rank of the ``Delta`` projection (Mamba: ``ceil(D / 16)``); ``None`` = that.
    """

    def __init__(self, dim: int, state_size: int = 16, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        dt_rank = dt_rank or math.ceil(dim / 16)
        self.fwd = _SelectiveDirection(dim, state_size, dt_rank, dt_min, dt_max)
        self.bwd = _SelectiveDirection(dim, state_size, dt_rank, dt_min, dt_max)
        self.D = nn.Parameter(torch.ones(dim))
        exempt_from_weight_decay(self.D)
        self.use_cuda_kernel = True
        """Set to ``False`` to force the reference scan (tests compare the two)."""

    def _scan(self, x: torch.Tensor, direction: _SelectiveDirection) -> torch.Tensor:
        delta, A, B, C = direction.params(x)
        if self.use_cuda_kernel and _mamba_scan is not None and x.is_cuda:
            return selective_scan_cuda(x, delta, A, B, C)
        return selective_scan_reference(x, delta, A, B, C)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, L, D)``, ``mask (B, L)`` -> ``(B, L, D)``; zero at padded positions."""
        x = _zero_padding(x, mask)
        lengths = (mask.sum(1) if mask is not None
                   else torch.full((x.shape[0],), x.shape[1], device=x.device))
        y_fwd = self._scan(x, self.fwd)
        y_bwd = flip_padded(self._scan(flip_padded(x, lengths), self.bwd), lengths)
        return _zero_padding(y_fwd + y_bwd + self.D * x, mask)
