"""AdamW: exact vs a hand-written reference of the course formula, close to
torch.optim.AdamW over 200 steps, correct_bias=False, argument checks."""
import math

import pytest
import torch

from minillama.core.optimizer import AdamW

STEPS = 200


def _problem(seed=0):
    """Small linear regression: X [64, 8] -> y [64, 3]."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 8, generator=g, dtype=torch.float64)
    true_w = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = X @ true_w + 0.1 * torch.randn(64, 3, generator=g, dtype=torch.float64)
    w0 = torch.randn(8, 3, generator=g, dtype=torch.float64)
    b0 = torch.randn(3, generator=g, dtype=torch.float64)
    return X, y, w0, b0


def _loss(params, X, y):
    w, b = params
    return ((X @ w + b - y) ** 2).mean()


def _train(make_opt, steps=STEPS, seed=0):
    X, y, w0, b0 = _problem(seed)
    params = [w0.clone().requires_grad_(), b0.clone().requires_grad_()]
    opt = make_opt(params)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = _loss(params, X, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return [p.detach() for p in params], losses


def _reference(lr, betas, eps, wd, correct_bias=True, steps=STEPS, seed=0):
    """The course formula, written independently (float64, no torch optimiser)."""
    X, y, w0, b0 = _problem(seed)
    params = [w0.clone(), b0.clone()]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2 = betas
    for t in range(1, steps + 1):
        ps = [p.clone().requires_grad_() for p in params]
        grads = torch.autograd.grad(_loss(ps, X, y), ps)
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if correct_bias else lr
            params[i] = params[i] - step * m[i] / (v[i].sqrt() + eps)
            params[i] = params[i] - lr * wd * params[i]
    return params


@pytest.mark.slow
@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_matches_hand_written_course_formula(correct_bias, wd):
    lr, betas, eps = 1e-2, (0.9, 0.999), 1e-6
    ours, losses = _train(lambda ps: AdamW(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd,
                                           correct_bias=correct_bias))
    ref = _reference(lr, betas, eps, wd, correct_bias)
    for a, b in zip(ours, ref):
        # float64 throughout; only operation order differs
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert losses[-1] < 0.2 * losses[0]  # it actually optimises


@pytest.mark.slow
def test_close_to_torch_adamw_without_weight_decay():
    """With wd = 0 the only difference from torch is where eps sits: ours is
    lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps/sqrt(bc2)), torch's the same with eps.
    With eps = 1e-8 and gradients far from 0 the relative difference per step
    is ~ eps/sqrt(v_hat) <= 1e-6, so parameters agree to ~1e-6."""
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ours, _ = _train(lambda ps: AdamW(ps, **kw))
    theirs, _ = _train(lambda ps: torch.optim.AdamW(ps, **kw))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_close_to_torch_adamw_with_weight_decay():
    """torch decays before the update: p(1 - lr wd) - u; we decay after it:
    (p - u)(1 - lr wd) = p(1 - lr wd) - u + lr wd u.  Each step differs by
    lr*wd*|u| <= lr*wd*lr (|u| <= ~lr for Adam) = 1e-6 here; over 200 steps the
    drift is bounded by 200 * 1e-6 = 2e-4, so 5e-4 is a justified tolerance;
    the decay itself (p shrinking by lr*wd per step) is 100x larger and checked below."""
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ours, _ = _train(lambda ps: AdamW(ps, **kw))
    theirs, _ = _train(lambda ps: torch.optim.AdamW(ps, **kw))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=5e-4, rtol=0)
    no_decay, _ = _train(lambda ps: AdamW(ps, **{**kw, "weight_decay": 0.0}))
    assert max((a - b).abs().max().item() for a, b in zip(ours, no_decay)) > 5e-3


def test_correct_bias_changes_early_steps():
    """Step 1 with bias correction moves each weight by exactly lr (m/sqrt(v) = sign(g))."""
    X, y, w0, b0 = _problem()
    for correct_bias, expected in [(True, 1e-2), (False, 1e-2 * 0.1 / math.sqrt(0.001))]:
        p = w0.clone().requires_grad_()
        opt = AdamW([p], lr=1e-2, eps=0.0, correct_bias=correct_bias)
        _loss([p, b0], X, y).backward()
        opt.step()
        torch.testing.assert_close((p.detach() - w0).abs(), torch.full_like(w0, expected), atol=1e-12, rtol=1e-9)


def test_skips_params_without_grad_and_supports_param_groups():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = AdamW([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.0}])
    a.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(a.detach(), torch.full((3,), 0.9), atol=1e-6)
    assert torch.equal(b.detach(), torch.ones(3))
    assert opt.state[a]["step"] == 1 and b not in opt.state


def test_closure_returns_loss():
    p = torch.nn.Parameter(torch.tensor([2.0]))
    opt = AdamW([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(4.0)
    assert p.item() < 2.0


@pytest.mark.parametrize("kwargs", [dict(lr=-1e-3), dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.1)),
                                    dict(betas=(-0.1, 0.9)), dict(betas=(0.9, 1.0)), dict(eps=-1e-8)])
def test_constructor_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        AdamW([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_course_signature_defaults():
    opt = AdamW([torch.nn.Parameter(torch.zeros(2))])
    d = opt.defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"], d["correct_bias"]) == (1e-3, (0.9, 0.999), 1e-6, 0.0, True)
