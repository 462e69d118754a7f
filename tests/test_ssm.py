"""SSM layers: FFT convolution == explicit recurrence, selective scan == naive loop, and padding
never changes a real position's output."""

from __future__ import annotations

import pytest
import torch

from merc.modules.ssm import (BiSelectiveScan, BiSSMConv, fft_causal_conv, flip_padded,
                              lti_recurrence, mamba_ssm_available, selective_scan_reference)


def _padded(lengths, dim, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    x = torch.randn(len(lengths), L, dim, generator=g, dtype=dtype)
    x = x + 100.0 * ~mask[..., None]  # garbage at padding: the layers must zero it themselves
    return x, mask


def _random_bissm(dim=6, n=5, seed=0):
    torch.manual_seed(seed)
    layer = BiSSMConv(dim, n, dt_min=0.05, dt_max=0.8).double()
    with torch.no_grad():  # move away from the symmetric init so directions really differ
        layer.B.normal_()
        layer.D.normal_()
        layer.A_log.add_(0.3 * torch.randn_like(layer.A_log))
    return layer


def test_flip_padded_reverses_within_length_and_is_an_involution():
    x = torch.arange(10.0).view(2, 5, 1)
    lengths = torch.tensor([3, 5])
    out = flip_padded(x, lengths)
    assert out[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert out[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    assert torch.equal(flip_padded(out, lengths), x)


def test_fft_causal_conv_equals_direct_sum_without_wraparound():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    k = torch.randn(3, 7, generator=g, dtype=torch.float64)
    direct = torch.zeros_like(x)
    for j in range(7):
        for l in range(j + 1):
            direct[..., j] += k[:, j - l] * x[..., l]
    torch.testing.assert_close(fft_causal_conv(x, k), direct, rtol=0, atol=1e-10)


def test_kernel_is_C_Abar_power_Bbar():
    layer = _random_bissm()
    A_bar, B_bar, C = layer.discretize()
    K = layer.kernels(4)
    for k in range(4):
        expected = (C * A_bar.pow(k) * B_bar).sum(-1)                         # (2, D)
        torch.testing.assert_close(K[..., k], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("direction", ["forward", "backward", "both"])
def test_fft_path_equals_recurrence_on_padded_batch(direction):
    layer = _random_bissm()
    with torch.no_grad():
        if direction == "forward":
            layer.C[1].zero_()
        elif direction == "backward":
            layer.C[0].zero_()
    x, mask = _padded([9, 4, 1, 7], 6)
    fast = layer(x, mask)
    ref = layer.reference(x, mask)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-8)
    assert fast[~mask].abs().max() == 0


def test_backward_direction_uses_future_context_only():
    """Perturbing utterance 3 changes the backward part at positions <= 3 only (and forward >= 3)."""
    layer = _random_bissm()
    x, mask = _padded([6], 6)
    x2 = x.clone()
    x2[0, 3] += 1.0
    with torch.no_grad():
        layer.C[0].zero_()  # backward only
    delta = (layer(x2, mask) - layer(x, mask)).abs().sum(-1)[0]
    assert (delta[:4] > 1e-3).all() and (delta[4:] < 1e-12).all()  # FFT round-off only


def test_bissm_padding_invariance():
    layer = _random_bissm()
    x, mask = _padded([8, 5], 6)
    alone = layer(x[1:, :5], mask[1:, :5])
    torch.testing.assert_close(layer(x, mask)[1:, :5], alone, rtol=0, atol=1e-10)


def test_selective_reference_equals_naive_scalar_loop():
    g = torch.Generator().manual_seed(2)
    Bsz, L, D, N = 2, 5, 3, 4
    u = torch.randn(Bsz, L, D, generator=g, dtype=torch.float64)
    delta = torch.rand(Bsz, L, D, generator=g, dtype=torch.float64) + 0.1
    A = -torch.rand(D, N, generator=g, dtype=torch.float64) - 0.5
    Bm = torch.randn(Bsz, L, N, generator=g, dtype=torch.float64)
    Cm = torch.randn(Bsz, L, N, generator=g, dtype=torch.float64)
    Dv = torch.randn(D, generator=g, dtype=torch.float64)
    expected = torch.zeros(Bsz, L, D, dtype=torch.float64)
    for b in range(Bsz):
        for d in range(D):
            h = [0.0] * N
            for t in range(L):
                dt = float(delta[b, t, d])
                y = 0.0
                for n in range(N):
                    h[n] = (torch.exp(dt * A[d, n]).item() * h[n]
                            + dt * float(Bm[b, t, n]) * float(u[b, t, d]))
                    y += float(Cm[b, t, n]) * h[n]
                expected[b, t, d] = y + float(Dv[d]) * float(u[b, t, d])
    got = selective_scan_reference(u, delta, A, Bm, Cm, Dv)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_selective_scan_with_constant_parameters_is_the_lti_ssm():
    """Known case: input-independent Delta, B, C reduce the selective scan to Eq. 4."""
    g = torch.Generator().manual_seed(3)
    Bsz, L, D, N = 2, 6, 3, 4
    u = torch.randn(Bsz, L, D, generator=g, dtype=torch.float64)
    dt = torch.rand(D, generator=g, dtype=torch.float64) + 0.05
    A = -torch.arange(1, N + 1, dtype=torch.float64).repeat(D, 1)
    b, c = (torch.randn(N, generator=g, dtype=torch.float64) for _ in range(2))
    sel = selective_scan_reference(u, dt.expand(Bsz, L, D), A, b.expand(Bsz, L, N),
                                   c.expand(Bsz, L, N))
    lti = lti_recurrence(u, torch.exp(dt[:, None] * A), dt[:, None] * b, c.expand(D, N))
    torch.testing.assert_close(sel, lti, rtol=0, atol=1e-12)


def test_bi_selective_scan_padding_invariance_and_zero_padding():
    torch.manual_seed(0)
    layer = BiSelectiveScan(6, 4).double()
    x, mask = _padded([7, 3], 6)
    out = layer(x, mask)
    assert out[~mask].abs().max() == 0
    alone = layer(x[1:, :3], mask[1:, :3])
    torch.testing.assert_close(out[1:, :3], alone, rtol=0, atol=1e-10)


def test_bi_selective_scan_backward_runs_from_real_end():
    """The backward scan at a dialogue's last real utterance sees only that utterance."""
    torch.manual_seed(0)
    layer = BiSelectiveScan(4, 3).double()
    x, mask = _padded([5, 2], 4)
    full = layer(x, mask)
    single = layer(x[1:, 1:2], mask[1:, 1:2])  # the last real utterance on its own...
    with torch.no_grad():                      # ...differs from the full output only by the
        fwd_only = layer._scan(x[1:, :2], layer.fwd)[:, 1]  # forward direction's history
        fwd_single = layer._scan(x[1:, 1:2], layer.fwd)[:, 0]
    torch.testing.assert_close(full[1, 1] - fwd_only, single[0, 0] - fwd_single,
                               rtol=0, atol=1e-10)


@pytest.mark.skipif(not (mamba_ssm_available() and torch.cuda.is_available()),
                    reason="mamba_ssm CUDA kernel not available")
def test_mamba_ssm_kernel_matches_reference():  # pragma: no cover - needs CUDA + mamba_ssm
    torch.manual_seed(0)
    layer = BiSelectiveScan(16, 8).cuda()
    x, mask = _padded([12, 5], 16, dtype=torch.float32)
    x, mask = x.cuda(), mask.cuda()
    fast = layer(x, mask)
    layer.use_cuda_kernel = False
    ref = layer(x, mask)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def test_ssm_a_log_and_d_get_no_weight_decay_other_parameters_do():
    """The optimizer's parameter-group rule: A_log/D-like SSM parameters are exempt."""
    from merc.training.loop import make_optimizer
    from merc.models import create_model

    dims = {"text": 6, "audio": 3}
    for name, options in (("broad-mamba", {}), ("broad-mamba", {"context": "selective"}),
                          ("matav", {"bidirectional": True})):
        model = create_model(name, dims, 3, **options)
        opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
        decay, exempt = opt.param_groups
        assert decay["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
        names = {id(p): n for n, p in model.named_parameters()}
        exempt_names = sorted(names[id(p)] for p in exempt["params"])
        assert exempt_names and all(n.endswith(("A_log", ".D")) for n in exempt_names), exempt_names
        assert not [names[id(p)] for p in decay["params"] if names[id(p)].endswith("A_log")]
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert len(decay["params"]) + len(exempt["params"]) == len(trainable)
    # A model without an SSM: one group, exactly AdamW(model.parameters()).
    model = create_model("bc-lstm", dims, 3)
    (group,) = make_optimizer(model, lr=1e-3, weight_decay=0.1).param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
