"""The shared training loop: best-dev restore, early stopping, repeatability, bf16 autocast."""
import torch

from conftest import tiny_model
from minillama.data import Example, Split
from minillama.heads import HeadClassifier
from minillama.runconfig import RunConfig
from minillama.train import TrainConfig, accuracy, count_parameters, describe_trainable, fit, predict


def split(n, seed):
    g = torch.Generator().manual_seed(seed)
    examples = [Example(int(torch.randint(0, 2, (1,), generator=g)), "", i + 1) for i in range(n)]
    ids = [[1] + torch.randint(5, 97, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
           for _ in range(n)]
    return Split(examples, ids, pad_id=0)


def classifier(seed=0):
    torch.manual_seed(seed)
    return HeadClassifier(tiny_model(), 64, 2, dropout=0.2)


def test_best_dev_weights_are_restored():
    train, dev = split(48, 0), split(32, 1)
    clf = classifier()
    history = fit(clf, train, dev, TrainConfig(epochs=4, lr=3e-3, batch_size=8), RunConfig(progress=False), log=lambda s: None)
    final = accuracy(predict(clf, dev, 8, torch.device("cpu"), progress=False), dev.labels)
    assert final == max(r.dev_acc for r in history)
    assert len({round(r.dev_acc, 6) for r in history}) > 1  # the epochs really differ


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
