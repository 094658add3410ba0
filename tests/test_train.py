"""The shared training loop: best-dev restore, early stopping, repeatability, bf16 autocast;
grad accumulation, clipping, the head's lr and the lr schedule."""
import copy
import math

import pytest
import torch

from conftest import tiny_model
from minillama.data import Example, Split
from minillama import train as train_mod
from minillama.heads import HeadClassifier
from minillama.lm_data import LMSplit
from minillama.runconfig import RunConfig
from minillama.train import (IGNORE, CausalLM, Classification, TrainConfig, accuracy, clip_grad_norm,
                             count_parameters, describe_trainable, fit, lr_factor, make_optimizer, micro_batches,
                             predict, train_step)


def split(n, seed):
    g = torch.Generator().manual_seed(seed)
    examples = [Example(int(torch.randint(0, 2, (1,), generator=g)), "", i + 1) for i in range(n)]
    ids = [[1] + torch.randint(5, 97, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
           for _ in range(n)]
    return Split(examples, ids, pad_id=0)


def classifier(seed=0):
    torch.manual_seed(seed)
    return HeadClassifier(tiny_model(), 64, 2, dropout=0.2)


@pytest.mark.slow
def test_best_dev_weights_are_restored():
    train, dev = split(48, 0), split(32, 1)
    clf = classifier()
    history = fit(clf, train, dev, TrainConfig(epochs=4, lr=3e-3, batch_size=8), RunConfig(progress=False), log=lambda s: None)
    final = accuracy(predict(clf, dev, 8, torch.device("cpu"), progress=False), dev.labels)
    assert final == max(r.dev_acc for r in history)
    assert len({round(r.dev_acc, 6) for r in history}) > 1  # the epochs really differ


@pytest.mark.slow
def test_early_stopping_with_patience():
    train, dev = split(16, 0), split(8, 1)
    lines = []
    # lr 0: dev accuracy never improves after epoch 0, so patience 2 stops after epoch 2
    history = fit(classifier(), train, dev, TrainConfig(epochs=10, lr=0.0, batch_size=8, patience=2), RunConfig(progress=False),
                  log=lines.append)
    assert len(history) == 3 and lines[-1].startswith("early stopping")
    history = fit(classifier(), train, dev, TrainConfig(epochs=3, lr=0.0, batch_size=8), RunConfig(progress=False),
                  log=lambda s: None)
    assert len(history) == 3


@pytest.mark.slow
def test_same_seed_same_run_on_cpu():
    train, dev = split(32, 0), split(16, 1)
    runs = []
    for _ in range(2):
        clf = classifier(seed=3)
        torch.manual_seed(7)  # dropout draws
        history = fit(clf, train, dev, TrainConfig(epochs=2, lr=1e-3, batch_size=8), RunConfig(seed=5, progress=False),
                      log=lambda s: None)
        runs.append(([r.train_loss for r in history], clf.head.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_bf16_autocast_trains_and_matches_fp32_roughly():
    train, dev = split(16, 0), split(16, 1)
    clf = classifier()
    clf.dropout.p = 0.0
    b = next(dev.batches(16))
    with torch.no_grad():
        fp32 = clf(b.input_ids, b.attention_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = clf(b.input_ids, b.attention_mask)
    assert bf16.dtype == torch.bfloat16 and torch.allclose(bf16.float(), fp32, atol=0.05)
    history = fit(clf, train, dev, TrainConfig(epochs=1, lr=1e-3, batch_size=8), RunConfig(bf16=True, progress=False),
                  log=lambda s: None)
    assert torch.isfinite(torch.tensor(history[0].train_loss))


def test_parameter_counts_and_description():
    clf = classifier()
    clf.backbone.requires_grad_(False)
    trainable, total = count_parameters(clf)
    assert trainable == 64 * 2 + 2
    assert total == clf.backbone.num_parameters() + trainable
    assert describe_trainable(clf).startswith(f"trainable parameters: {trainable:,} of {total:,} (")


# -- grad accumulation, clipping, head lr, lr schedule (minillama/train.py) ---------------------


def lm_split(n=7, seed=0):
    """Ragged (source, target) rows: 2 to 9 scored tokens each, so examples and tokens weigh differently."""
    g = torch.Generator().manual_seed(seed)
    seqs, prompts = [], []
    for i in range(n):
        prompt, target = 2 + int(torch.randint(0, 6, (1,), generator=g)), (1, 8, 2, 6, 3, 9, 1)[i % 7]
        seqs.append([1] + torch.randint(5, 97, (prompt + target,), generator=g).tolist())
        prompts.append(prompt + 1)
    return LMSplit(seqs, prompts, pad_id=0)


def step_params(model, batch, objective, grad_accum):
    """(trainable parameters after one train_step, their gradients, the returned loss)."""
    opt = make_optimizer(model, TrainConfig(lr=1e-3, batch_size=8, weight_decay=0.01))
    loss, _ = train_step(model, opt, batch, torch.device("cpu"), objective=objective, grad_accum=grad_accum)
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return params, grads, loss


def assert_same_step(a, b):
    (pa, ga, la), (pb, gb, lb) = a, b
    assert set(pa) == set(pb) and len(pa) > 2
    for n in pa:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-5), n  # the accumulated gradient itself
        assert torch.allclose(pa[n], pb[n], atol=1e-6, rtol=0), n
    assert la == pytest.approx(lb, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 7])
def test_grad_accum_classification_equals_one_batch(n):
    """7 examples in 2, 3 (3+2+2: unequal pieces) or 7 micro-batches: the step of the whole batch."""
    batch = next(split(7, 4).batches(7))
    clf = classifier()
    clf.dropout.p = 0.0
    whole = step_params(copy.deepcopy(clf), batch, Classification(), 1)
    calls = []

    class Counted(Classification):
        def loss(self, model, b):
            calls.append(len(b.labels))
            return super().loss(model, b)
    assert_same_step(step_params(copy.deepcopy(clf), batch, Counted(), n), whole)
    assert calls == [len(p) for p in torch.tensor_split(torch.arange(7), n)]  # n forward passes really ran


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_grad_accum_causal_lm_weights_micro_batches_by_scored_tokens(n):
    data = lm_split()
    batch = next(data.batches(7))
    counts = (batch.labels != IGNORE).sum(1).tolist()
    assert len(set(counts)) > 3  # ragged: a mean per micro-batch would weigh tokens unequally
    model = tiny_model()
    model.train()
    whole = step_params(copy.deepcopy(model), batch, CausalLM(), 1)
    # the oracle of the whole batch: the mean cross-entropy over all its scored tokens
    logits, _ = copy.deepcopy(model)(batch.input_ids, batch.attention_mask)
    oracle = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE)
    assert whole[2] == pytest.approx(oracle.item(), abs=1e-6)
    assert_same_step(step_params(copy.deepcopy(model), batch, CausalLM(), n), whole)
    # and the token weighting is what makes it so: weighing micro-batches by examples would not match

    class ByExamples(CausalLM):
        weight = staticmethod(lambda b: len(b.labels))
    with pytest.raises(AssertionError):
        assert_same_step(step_params(copy.deepcopy(model), batch, ByExamples(), n), whole)


def test_micro_batches_split_rows_in_order():
    batch = next(split(7, 4).batches(7))
    pieces = micro_batches(batch, 3)
    assert [len(p.labels) for p in pieces] == [3, 2, 2]
    assert torch.equal(torch.cat([p.input_ids for p in pieces]), batch.input_ids)
    assert torch.equal(torch.cat([p.indices for p in pieces]), batch.indices)


def random_grads(seed, shapes=((5, 3), (7,), (2, 2, 2))):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 3
    return params


@pytest.mark.parametrize("max_norm", [0.5, 2.0, 1e3])
def test_clip_grad_norm_equals_torch(max_norm):
    ours, theirs = random_grads(0), random_grads(0)
    norm = clip_grad_norm(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-7)
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in ours)).item()
    assert after == pytest.approx(min(max_norm, expected.item()), rel=1e-5)


@pytest.mark.slow
def test_clipping_is_off_by_default_and_clips_the_step_when_asked():
    assert TrainConfig().max_grad_norm is None
    batch = next(split(8, 2).batches(8))
    base = classifier()
    base.dropout.p = 0.0
    norms = {}
    for max_norm in (None, 1e-3):
        clf = copy.deepcopy(base)
        opt = make_optimizer(clf, TrainConfig(lr=1e-3))
        train_step(clf, opt, batch, torch.device("cpu"), max_grad_norm=max_norm)
        norms[max_norm] = torch.sqrt(sum((p.grad ** 2).sum() for p in clf.parameters())).item()
    # the raw gradient's norm, from a plain backward on the same model
    clf = copy.deepcopy(base)
    Classification().loss(clf, batch)[0].backward()
    raw = torch.sqrt(sum((p.grad ** 2).sum() for p in clf.parameters())).item()
    assert raw > 0.01
    assert norms[None] == pytest.approx(raw, rel=1e-5)  # default: untouched
    assert norms[1e-3] == pytest.approx(1e-3, rel=1e-4)


def test_head_lr_moves_the_head_by_its_own_lr():
    """AdamW's first step moves every weight with a gradient well above eps by ~lr (m / sqrt(v) = sign g)."""
    batch = next(split(8, 2).batches(8))
    clf = classifier()
    clf.dropout.p = 0.0
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    opt = make_optimizer(clf, TrainConfig(lr=1e-4, head_lr=3e-2))
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 3e-2]
    train_step(clf, opt, batch, torch.device("cpu"))
    seen = set()
    for n, p in clf.named_parameters():
        big = p.grad.abs() > 1e-3
        if not big.any():
            continue
        moved = (p.detach() - before[n]).abs()[big]
        lr = 3e-2 if n.startswith("head.") else 1e-4
        assert torch.allclose(moved, torch.full_like(moved, lr), rtol=0.05), n
        seen.add(n.startswith("head."))
    assert seen == {True, False}
    # without head_lr: one group at lr
    assert [g["lr"] for g in make_optimizer(classifier(), TrainConfig(lr=1e-4)).param_groups] == [1e-4]


def closed_form(step, total, schedule, warmup):
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / (total - warmup)
    return {"constant": 1.0, "linear": 1.0 - t, "cosine": (1 + math.cos(math.pi * t)) / 2}[schedule]


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_factor_closed_forms(schedule, warmup):
    total = 12
    got = [lr_factor(s, total, schedule, warmup) for s in range(total)]
    assert got == pytest.approx([closed_form(s, total, schedule, warmup) for s in range(total)], abs=1e-12)
    if warmup:
        assert got[:warmup] == pytest.approx([1 / 3, 2 / 3, 1.0])
    if schedule != "constant":
        assert got[warmup] == 1.0 and 0 < got[-1] < got[-2]  # decays over the whole run, not per epoch
    # HF transformers' get_{linear,cosine}_schedule_with_warmup after the warm-up
    hf = {"constant": lambda s: 1.0, "linear": lambda s: max(0.0, (total - s) / max(1, total - warmup)),
          "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))}[schedule]
    assert got[warmup:] == pytest.approx([hf(s) for s in range(warmup, total)], abs=1e-12)


@pytest.mark.slow
def test_fit_uses_the_scheduled_lr_at_every_step(monkeypatch):
    """The lr each optimizer group holds when its step runs, over a 3-epoch fit (12 steps)."""
    seen = []
    real_step = train_mod.train_step

    def spy(model, optimizer, *args, **kwargs):
        seen.append([g["lr"] for g in optimizer.param_groups])
        return real_step(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", spy)
    train, dev = split(32, 0), split(8, 1)
    cfg = TrainConfig(epochs=3, lr=1e-3, head_lr=1e-2, batch_size=8, lr_schedule="cosine", warmup_steps=2)
    fit(classifier(), train, dev, cfg, RunConfig(progress=False), log=lambda s: None)
    total = 3 * 4
    assert len(seen) == total
    for s, lrs in enumerate(seen):
        f = closed_form(s, total, "cosine", 2)
        assert lrs == pytest.approx([1e-3 * f, 1e-2 * f], rel=1e-12), s
