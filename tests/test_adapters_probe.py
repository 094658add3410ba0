"""Probing (minillama/adapters/probe.py, heads.FeatureCache): the base frozen and in eval mode,
only the head trains, the cached features are the uncached ones (and spare the backbone every
epoch), the heads' parameter counts, a learned task, files, the command line (outputs, save and
load, resume) and bad settings."""
import os

import pytest
import torch

from conftest import course_argv, data_slice, read_predictions, tiny_model, word_group_task
from minillama.adapters import Probe, ProbeConfig, attach, load_adapter, save_adapter
from minillama.cli import main
from minillama.data import Example, Split
from minillama.errors import MinillamaError
from minillama.heads import FeatureCache, HeadClassifier
from minillama.runconfig import RunConfig
from minillama.tasks.classify import cache_features
from minillama.train import TrainConfig, fit, predict


def probe_classifier(model, head="linear", cache=True, pool="last", dropout=0.0, num_labels=5, seed=0):
    probe = attach(model, ProbeConfig(head=head))
    torch.manual_seed(seed)
    return HeadClassifier(probe, model.config.dim, num_labels, dropout, pool=pool, head=probe.make_head(num_labels),
                          cache=FeatureCache() if cache else None)


def random_split(n, seed, vocab=97, num_labels=5, repeats=2):
    """Random sentences of 3..12 tokens after BOS; the last `repeats` rows repeat the first sentence."""
    g = torch.Generator().manual_seed(seed)
    ids = [[1] + torch.randint(3, vocab, (int(torch.randint(3, 13, (1,), generator=g)),), generator=g).tolist()
           for _ in range(n - repeats)]
    ids += [list(ids[0]) for _ in range(repeats)]
    labels = torch.randint(0, num_labels, (n,), generator=g).tolist()
    return Split([Example(y, f"s{i}", i + 1) for i, y in enumerate(labels)], ids, pad_id=0)


def counting_backbone(classifier):
    """Count the rows the backbone computes (wraps its forward)."""
    seen = []
    forward = classifier.backbone.forward

    def counted(ids, *args, **kwargs):
        seen.append(len(ids))
        return forward(ids, *args, **kwargs)
    classifier.backbone.forward = counted
    return seen


def test_the_base_is_frozen_and_only_the_head_trains():
    model = tiny_model(dropout=0.5)  # dropout on in the base: the probe must keep it off
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clf = probe_classifier(model, head="mlp", cache=False)
    assert clf.backbone.trainable_parameters() == {}
    assert sorted(n for n, p in clf.named_parameters() if p.requires_grad) == \
        ["head.hidden.bias", "head.hidden.weight", "head.out.bias", "head.out.weight"]
    clf.train()
    assert clf.training and not clf.backbone.training and not model.training  # the base stays in eval mode
    split = random_split(24, 1)
    batch = next(split.batches(24))
    a, b = clf.features(batch.input_ids, batch.attention_mask), clf.features(batch.input_ids, batch.attention_mask)
    assert torch.equal(a, b)  # no dropout in the features, though the classifier is in train mode
    loss = torch.nn.functional.cross_entropy(clf(batch.input_ids, batch.attention_mask), batch.labels)
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.head.parameters())
    fit(clf, split, split, TrainConfig(epochs=2, lr=1e-2, batch_size=8), RunConfig(progress=False), log=lambda s: None)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # bit for bit


def test_mlp_and_linear_parameter_counts():
    model = tiny_model()  # dim 64
    linear, mlp = probe_classifier(model, "linear"), probe_classifier(model, "mlp")
    assert sum(p.numel() for p in linear.head.parameters()) == 325      # 64 * 5 + 5
    assert sum(p.numel() for p in mlp.head.parameters()) == 4485        # 64 * 64 + 64 + 64 * 5 + 5
    assert {n: list(p.shape) for n, p in mlp.head.named_parameters()} == {
        "hidden.weight": [64, 64], "hidden.bias": [64], "out.weight": [5, 64], "out.bias": [5]}
    assert linear.backbone.num_parameters(trainable_only=True) == 0
    assert linear.backbone.describe() == "probe: the frozen model, a linear head"


@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_cached_logits_equal_uncached(head, pool):
    """Rows read in the batch that computed them: the same logits bit for bit; in other batches
    (shuffled, other padding widths, a few rows at a time, a repeated sentence): the same to float
    rounding (a batch's padding width may change the last bits), and the same predictions."""
    model = tiny_model()
    cached, plain = probe_classifier(model, head, True, pool), probe_classifier(model, head, False, pool)
    plain.head.load_state_dict(cached.head.state_dict())
    splits = {"train": random_split(40, 0, repeats=0), "dev": random_split(20, 1)}
    cache_features(cached, splits, 8, RunConfig(progress=False))
    assert len(cached.cache) == 58  # 40 + 18: dev's two repeats of its first sentence are that one entry
    for batch in splits["train"].batches(8):  # every row computed in this very batch
        with torch.no_grad():
            assert torch.equal(cached(batch.input_ids, batch.attention_mask),
                               plain(batch.input_ids, batch.attention_mask))
    for split in splits.values():
        g = torch.Generator().manual_seed(3)
        for batch in split.batches(5, shuffle=True, generator=g):
            with torch.no_grad():
                torch.testing.assert_close(cached(batch.input_ids, batch.attention_mask),
                                           plain(batch.input_ids, batch.attention_mask), rtol=0, atol=1e-6)
        assert torch.equal(predict(cached, split, 3, "cpu", progress=False),
                           predict(plain, split, 3, "cpu", progress=False))


def test_filled_cache_spares_the_backbone_every_epoch():
    """After cache_features, training and predicting never run the frozen model; a row not cached
    is computed once, alone."""
    model = tiny_model()
    clf = probe_classifier(model, dropout=0.3)
    train, dev = random_split(32, 0), random_split(16, 1)
    seen = counting_backbone(clf)
    cache_features(clf, {"train": train, "dev": dev}, 8, RunConfig(progress=False))
    assert sum(seen) == 44  # 30 + 14: each split's two repeats of its first sentence are found, not computed
    seen.clear()
    fit(clf, train, dev, TrainConfig(epochs=3, lr=1e-2, batch_size=8), RunConfig(progress=False), log=lambda s: None)
    assert seen == []
    batch = next(random_split(4, 9).batches(4))  # two sentences, the first three times
    with torch.no_grad():
        clf(batch.input_ids, batch.attention_mask)
        clf(batch.input_ids, batch.attention_mask)
    assert seen == [2]  # the two sentences computed once, in one batch of their own


def test_a_cache_refuses_a_backbone_that_trains():
    model = tiny_model()
    with pytest.raises(ValueError, match="frozen backbone"):
        HeadClassifier(model.requires_grad_(True), 64, 5, cache=FeatureCache())


@pytest.mark.slow
def test_learns_a_task_above_chance():
    """Two groups of words: a linear probe on the last token's frozen features separates them."""
    (x_train, y_train), (x_test, y_test), _ = word_group_task(n_train=96, n_test=64)
    model = tiny_model(vocab_size=512)
    clf = probe_classifier(model, num_labels=2)
    split = lambda x, y: Split([Example(int(v), "", i) for i, v in enumerate(y)], x.tolist(), pad_id=0)  # noqa: E731
    train, test = split(x_train, y_train), split(x_test, y_test)
    fit(clf, train, test, TrainConfig(epochs=20, lr=3e-2, batch_size=16), RunConfig(progress=False), log=lambda s: None)
    acc = (predict(clf, test, 64, "cpu", progress=False) == test.labels).float().mean().item()
    assert acc >= 0.9, acc


def test_save_load_round_trip(tmp_path):
    """The file holds the head (head.*) and which head it is; loaded, the same logits."""
    model = tiny_model()
    clf = probe_classifier(model, "mlp")
    with torch.no_grad():
        clf.head.out.bias.add_(1.0)
    batch = next(random_split(6, 0).batches(6))
    with torch.no_grad():
        want = clf(batch.input_ids, batch.attention_mask)
    save_adapter(clf.backbone, str(tmp_path / "p"), ["a", "b", "c", "d", "e"], clf.head.state_dict())
    loaded = load_adapter(model, str(tmp_path / "p"))
    assert isinstance(loaded, Probe) and loaded.cfg == ProbeConfig(head="mlp")
    assert sorted(loaded.head_state) == ["hidden.bias", "hidden.weight", "out.bias", "out.weight"]
    again = HeadClassifier(loaded, 64, 5, head=loaded.make_head(5), cache=FeatureCache())
    again.head.load_state_dict(loaded.head_state)
    with torch.no_grad():
        assert torch.equal(again(batch.input_ids, batch.attention_mask), want)


def test_bad_probe_head_is_one_line():
    with pytest.raises(MinillamaError) as e:
        ProbeConfig(head="deep")
    assert str(e.value) == "--probe_head must be one of linear, mlp, got 'deep'"


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_probe_writes_outputs_saves_and_loads(tmp_path, monkeypatch, capsys, tiny_ckpt):
    """--option probe: the course's output files and acc lines, the features computed once, an
    mlp head saved and loaded (--load_adapter) with the same predictions."""
    data = data_slice(tmp_path, "sst", n=24)
    monkeypatch.chdir(tmp_path)
    assert main(course_argv("probe", tiny_ckpt, data, "--probe_head", "mlp", "--epochs", "2",
                            "--save_adapter", "sst-probe")) == 0
    printed = capsys.readouterr().out
    assert "probe: the frozen model, a mlp head: 0 adapter + 4,485 head parameters" in printed
    assert "features of the frozen model computed once: 72 distinct sentences of train (24), dev (24), test (24)" \
        in printed
    assert "epoch 1: train loss ::" in printed
    for split in ("dev", "test"):
        preds = read_predictions(tmp_path / f"sst-{split}-probe-output.txt")
        gold = read_predictions(data[split])
        assert [s for _, s in preds] == [s.strip() for _, s in gold] and len(preds) == 24
        acc = sum(p == g for (p, _), (g, _) in zip(preds, gold)) / 24
        assert f"{split} acc :: {acc:.3f}" in printed
    trained = {s: (tmp_path / f"sst-{s}-probe-output.txt").read_text() for s in ("dev", "test")}
    for s in ("dev", "test"):
        os.remove(tmp_path / f"sst-{s}-probe-output.txt")
    assert main(course_argv("probe", tiny_ckpt, data, "--load_adapter", "sst-probe")) == 0
    printed = capsys.readouterr().out
    assert "load adapter sst-probe: probe, head cls" in printed and "features of the frozen model" in printed
    assert {s: (tmp_path / f"sst-{s}-probe-output.txt").read_text() for s in ("dev", "test")} == trained


@pytest.mark.slow
def test_cli_interrupted_run_resumes_exactly(tmp_path, capsys, monkeypatch, tiny_ckpt):
    """Stopped (Ctrl-C) right after its first checkpoint, then --resume: the same head and
    predictions, byte for byte, as the run never interrupted."""
    from minillama import resume
    data = data_slice(tmp_path, "sst", n=16)

    def run(name, *extra):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        return main(course_argv("probe", tiny_ckpt, data, "--epochs", "2", "--batch_size", "8",
                                "--save_adapter", str(d / "p"), "--dev_out", str(d / "dev.txt"),
                                "--test_out", str(d / "test.txt"), *extra))

    assert run("ref") == 0
    real_save = resume.save

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(resume, "save", save_then_stop)
    ck = str(tmp_path / "ck")
    assert run("res", "--checkpoint_dir", ck, "--save_every", "1") == 130
    monkeypatch.setattr(resume, "save", real_save)
    assert not os.path.exists(tmp_path / "res" / "p.safetensors")
    assert run("res", "--checkpoint_dir", ck, "--save_every", "1", "--resume") == 0
    assert "resumed from" in capsys.readouterr().out
    for name in ("p.safetensors", "dev.txt", "test.txt"):
        assert (tmp_path / "res" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    # another head is another run: refused naming the setting
    assert run("res", "--checkpoint_dir", ck, "--resume", "--probe_head", "mlp") == 2
    assert "method" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--probe_head", "deep"], "error: argument --probe_head: invalid choice: 'deep'"),
    (["--prefix_head", "verbalizer"], "error: --option probe trains a head on the frozen model's features, and the "
                                      "verbalizer has none"),
    (["--lora_rank", "4"], "error: --lora_rank does nothing with --option probe: drop it"),
    (["--export_peft", "peft-dir"], "error: --export_peft: probe has no PEFT adapter"),
    (["--export_adapterhub", "hub-dir"], "error: --export_adapterhub: AdapterHub's saved-adapter layout is written "
                                         "for bottleneck adapters (--option bottleneck), not probe")])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, tiny_ckpt, extra, message):
    data = data_slice(tmp_path, "sst", n=8)
    before = set(os.listdir(tmp_path))
    code = 2
    try:
        code = main(course_argv("probe", tiny_ckpt, data, "--dev_out", str(tmp_path / "dev.txt"),
                                "--test_out", str(tmp_path / "test.txt"), *extra))
    except SystemExit as e:  # argparse's own choices
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message) and "\n" not in err, err
    assert set(os.listdir(tmp_path)) == before


def test_cli_probe_flags_and_tasks(capsys):
    assert main(["--option", "lora", "--probe_head", "mlp"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --probe_head does nothing with --option lora: drop it "
                                               "(it is read by --option probe when training (no --load_adapter))")
    assert main(["--option", "probe", "--task", "e2e"]) == 2
    assert "--task e2e trains a generator: use --option finetune, lora, prefix or bottleneck, not --option probe" \
        in capsys.readouterr().err
    assert main(["--option", "probe", "--task", "mmlu"]) == 2
    assert "not --option probe" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:this tokenizer splits")
def test_mmlu_refuses_a_probe_adapter_in_one_line(tmp_path, capsys):
    """A probe leaves the language model unchanged: --option mmlu --load_adapter would score the
    base under the adapter's name, so it is refused before the model loads."""
    from conftest import asset, make_fixture
    root = make_fixture(tmp_path / "mmlu")
    clf = probe_classifier(tiny_model(vocab_size=512))
    save_adapter(clf.backbone, str(tmp_path / "p"), None, clf.head.state_dict())
    assert main(["--option", "mmlu", "--pretrained-model-path", str(tmp_path / "absent.pt"),
                 "--tokenizer", asset("llama2c/tok512.model"), "--mmlu_dir", root,
                 "--load_adapter", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --load_adapter {tmp_path / 'p'}: a probe adapter is a classification head on the "
                   "unchanged model, which --option mmlu does not read: evaluate it with --option probe on its "
                   "classification files")
