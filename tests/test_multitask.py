"""One deep prefix per task, trained in one run (minillama/tasks/multitask.py, adapters/multi.TaskPrefixes):
each row of a mixed batch equals the row alone through its task's [shared | own] prefix and its own
head; the shared positions are one parameter that both tasks' rows train; the batches hold every task
in proportion; two tasks learn together; the saved per-task adapters, loaded by the single-task
evaluation, reproduce the run's predictions; bad input is one line, exit 2, nothing written.
(Resume: tests/test_resume.py; torchrun: tests/test_distributed.py.)"""
import os

import pytest
import torch

from conftest import asset, course_argv, data_slice, left_padded_rows, multitask_argv, read_predictions, tiny_model
from minillama.adapters import (LlamaAdapterConfig, LoraConfig, PrefixConfig, PrefixTuningConfig,
                               PromptTuningConfig, attach)
from minillama.adapters.multi import TaskPrefixes
from minillama.cli import main
from minillama.data import Example, Split
from minillama.errors import MinillamaError
from minillama.heads import HeadClassifier, RowReader
from minillama.runconfig import RunConfig
from minillama.tasks import multitask
from minillama.tasks.multitask import MultitaskConfig, OneTask, PerTask, TaskMix
from minillama.train import TrainConfig, accuracy, fit, predict

ROWS = ["a", "b", "a", "c", "b", "c"]


def prefixes_of(base, cfg, shared):
    """Three tasks' prefixes on `base`, folded, at values of a real model's scale (the 0.02
    init barely shows)."""
    torch.manual_seed(0)
    prefixes = TaskPrefixes(base, cfg, ["a", "b", "c"], shared_length=shared).finalize()
    with torch.no_grad():
        for p in prefixes.parameters():
            if p.requires_grad:
                p.normal_(0.0, 1.0)
    return prefixes.eval()


@pytest.mark.parametrize("cfg,shared", [(PrefixConfig(length=3), 2), (PrefixTuningConfig(length=2, hidden=8), 3),
                                        (PrefixConfig(length=4), 0)])
def test_each_row_of_a_mixed_batch_equals_the_row_alone_through_its_tasks_prefix(cfg, shared):
    """The oracle: a plain P-tuning v2 adapter of shared + own positions whose keys/values are
    the shared ones then the task's own, run on the row alone, unpadded."""
    base = tiny_model()
    prefixes = prefixes_of(base, cfg, shared)
    ids, mask = left_padded_rows(len(ROWS))
    with torch.no_grad():
        logits, hidden = prefixes(ids, mask, adapter=ROWS)
        for row, name in enumerate(ROWS):
            oracle = attach(base, PrefixConfig(length=shared + cfg.length))
            parts = ([prefixes.shared.kv] if shared else []) + [prefixes.tasks[name].kv]
            oracle.kv.copy_(torch.cat(parts, dim=3))
            real = mask[row].bool()
            alone = oracle(ids[row:row + 1, real])
            torch.testing.assert_close(logits[row, real], alone[0][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(hidden[row, real], alone[1][0], atol=1e-5, rtol=0)
            saved = prefixes.task_adapter(name)  # what the task's adapter file holds
            assert saved.length == shared + cfg.length
            torch.testing.assert_close(saved(ids[row:row + 1, real])[0], alone[0], atol=1e-6, rtol=0)
        # the prefixes matter: one row under each task gives other logits
        under = [prefixes(ids[:1], mask[:1], adapter=[name])[0] for name in "abc"]
        assert min((x - y).abs().max() for i, x in enumerate(under) for y in under[i + 1:]) > 1e-2


def test_each_row_answers_through_its_own_tasks_head():
    """RowReader over the task prefixes: row b's scores == HeadClassifier(its task alone, its head)."""
    base = tiny_model()
    prefixes = prefixes_of(base, PrefixConfig(length=2), 3)
    torch.manual_seed(1)
    heads = {"a": torch.nn.Linear(64, 3), "b": torch.nn.Linear(64, 2), "c": torch.nn.Linear(64, 5)}
    ids, mask = left_padded_rows(len(ROWS), seed=2)
    right, right_mask = ids.flip(1), mask.flip(1)  # RowReader reads right-padded rows
    for pool in ("mean", "last"):
        reader = RowReader(prefixes, heads, {name: pool for name in heads}).eval()
        with torch.no_grad():
            scores = reader(right, right_mask, ROWS)
            for row, name in enumerate(ROWS):
                own = HeadClassifier(prefixes.task_adapter(name), 64, heads[name].out_features, pool=pool).eval()
                own.head = heads[name]
                n = int(right_mask[row].sum())
                torch.testing.assert_close(scores[row], own(right[row:row + 1, :n], right_mask[row:row + 1, :n])[0],
                                           atol=1e-5, rtol=0)


def test_the_shared_positions_are_one_parameter_trained_by_every_tasks_rows():
    base = tiny_model()
    torch.manual_seed(0)
    prefixes = TaskPrefixes(base, PrefixConfig(length=2), ["a", "b"], shared_length=3)
    heads = {"a": torch.nn.Linear(64, 3), "b": torch.nn.Linear(64, 2)}
    reader = RowReader(prefixes, heads, {"a": "mean", "b": "mean"})
    trained = {n: tuple(p.shape) for n, p in reader.named_parameters() if p.requires_grad}
    assert trained == {"multi.shared.kv": (2, 2, 2, 3, 16), "multi.tasks.a.kv": (2, 2, 2, 2, 16),
                       "multi.tasks.b.kv": (2, 2, 2, 2, 16), "heads.a.weight": (3, 64), "heads.a.bias": (3,),
                       "heads.b.weight": (2, 64), "heads.b.bias": (2,)}
    ids, mask = left_padded_rows(4, seed=3)
    labels = torch.tensor([2, 1, 0, 1])
    rows = ["a", "b", "a", "b"]

    def grads(keep):
        """Gradients of the summed cross-entropy of the rows of the tasks in `keep`."""
        reader.zero_grad()
        scores = reader(ids, mask, rows)
        sum(torch.nn.functional.cross_entropy(s[None], y[None]) for s, y, t in zip(scores, labels, rows)
            if t in keep).backward()
        return {n: p.grad.clone() for n, p in reader.named_parameters() if p.requires_grad}

    only_a, only_b, both = grads({"a"}), grads({"b"}), grads({"a", "b"})
    assert only_a["multi.shared.kv"].abs().sum() > 0 and only_b["multi.shared.kv"].abs().sum() > 0
    torch.testing.assert_close(both["multi.shared.kv"], only_a["multi.shared.kv"] + only_b["multi.shared.kv"],
                               atol=1e-6, rtol=1e-5)
    # a task's own positions and head learn from its rows alone (zero, not missing, from the other's:
    # every trainable tensor takes part in every step, as DistributedDataParallel needs)
    for own, other in (("a", only_b), ("b", only_a)):
        assert other[f"multi.tasks.{own}.kv"].abs().sum() == 0 and other[f"heads.{own}.weight"].abs().sum() == 0
    assert only_a["multi.tasks.a.kv"].abs().sum() > 0 and only_b["multi.tasks.b.kv"].abs().sum() > 0
    # the saved adapter of each task holds the same shared positions
    a, b = prefixes.task_adapter("a").kv, prefixes.task_adapter("b").kv
    assert torch.equal(a[..., :3, :], prefixes.shared.kv.detach()) and torch.equal(b[..., :3, :], a[..., :3, :])


def split_of(labels, start=0):
    return Split([Example(y, f"s{start + i}", i + 1) for i, y in enumerate(labels)],
                 [[1, 10 + i] for i in range(len(labels))], pad_id=0)


def test_every_batch_holds_every_task_in_proportion():
    mix = TaskMix({"a": split_of([0] * 6), "b": split_of([1] * 2)})
    assert mix.task_of == ["a"] * 6 + ["b"] * 2
    # places a: 1/12, 3/12, ... 11/12; b: 1/4, 3/4 (file order when not shuffled)
    assert mix.order().tolist() == [0, 1, 6, 2, 3, 4, 7, 5]
    g = torch.Generator().manual_seed(0)
    batches = list(mix.batches(4, shuffle=True, generator=g))
    assert [sorted(mix.task_of[i] for i in b.indices.tolist()) for b in batches] == [["a", "a", "a", "b"]] * 2
    assert sorted(i for b in batches for i in b.indices.tolist()) == list(range(8))
    again = list(mix.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [b.indices.tolist() for b in again] == [b.indices.tolist() for b in batches]


def marked(n, seed, marks):
    """Random sentences; label k is marked by token marks[k] at a random position."""
    g = torch.Generator().manual_seed(seed)
    examples, ids = [], []
    for i in range(n):
        label = int(torch.randint(0, len(marks), (1,), generator=g))
        seq = torch.randint(20, 97, (8,), generator=g).tolist()
        seq[int(torch.randint(0, 8, (1,), generator=g))] = marks[label]
        examples.append(Example(label, "", i + 1))
        ids.append([1] + seq)
    return Split(examples, ids, pad_id=0)


@pytest.mark.slow  # long training
def test_two_tasks_learn_together_through_their_prefixes_and_heads():
    """Task a's labels are marked by tokens 3, 4, 5; task b's by 6, 7: one run learns both."""
    train = {"a": marked(192, 0, [3, 4, 5]), "b": marked(96, 1, [6, 7])}
    dev = {"a": marked(64, 2, [3, 4, 5]), "b": marked(64, 3, [6, 7])}
    torch.manual_seed(0)
    prefixes = TaskPrefixes(tiny_model(), PrefixConfig(length=4), ["a", "b"], shared_length=2)
    reader = RowReader(prefixes, {"a": torch.nn.Linear(64, 3), "b": torch.nn.Linear(64, 2)}, {"a": "mean", "b": "mean"})
    mix = TaskMix(train)
    fit(reader, mix, dev, TrainConfig(epochs=6, lr=3e-2, batch_size=16), RunConfig(progress=False),
        log=lambda s: None, objective=PerTask(mix.task_of))
    for name, split in dev.items():
        preds = predict(OneTask(reader, name), split, 32, torch.device("cpu"), progress=False)
        assert accuracy(preds, split.labels) >= 0.9, name


# -- bad input -------------------------------------------------------------------------------------
LISTS = dict(name="sst,cfimdb", train="s-train.txt,c-train.txt", dev="s-dev.txt,c-dev.txt",
             test="s-test.txt,c-test.txt", label_names="s.json,c.json")  # TaskConfig's flags, as given


@pytest.mark.parametrize("lists,settings,message", [
    ({"train": "s-train.txt"}, {}, "--train: give one file per task (2, for sst,cfimdb), comma-separated; got 's-train.txt'"),
    ({"dev": "s-dev.txt,c-dev.txt,x.txt"}, {}, "--dev: give one file per task (2, for sst,cfimdb)"),
    ({"test": None}, {}, "--test: give one file per task (2, for sst,cfimdb), comma-separated; got None"),
    ({"label_names": "s.json"}, {}, "--label-names: give one file per task (2, for sst,cfimdb)"),
    ({"name": "sst"}, {}, "--train: give one file per task (1, for sst)"),
    ({"dev_out": "a.txt"}, {}, "--dev_out: give one file per task (2, for sst,cfimdb)"),
    ({"save_adapter": "a,"}, {}, "--save_adapter: give one file per task (2, for sst,cfimdb), comma-separated; got 'a,'"),
    ({"name": "sst,sst"}, {}, "--task_names: 'sst' is named twice: give each task its own name"),
    ({"name": "sst,a/b"}, {}, "--task_names: 'a/b' cannot name output files"),
    ({}, {"shared_length": -1}, "--shared_prefix_length must be a number of positions >= 0, got -1"),
    ({}, {"export_peft": "d"}, "--export_peft converts one adapter, and --task_names writes one per task"),
    ({}, {"load_adapter": ["a"]}, "--load_adapter evaluates saved adapters (several: --adapter_names)"),
])
def test_bad_lists_and_settings_are_one_line(lists, settings, message):
    with pytest.raises(MinillamaError) as e:
        MultitaskConfig.from_lists({**LISTS, **lists}, method=PrefixConfig(), **settings)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_lists_make_one_config_per_task():
    cfg = MultitaskConfig.from_lists({**LISTS, "save_adapter": "a/s,b/c"}, method=PrefixConfig(), shared_length=4)
    assert [(t.name, t.train, t.label_names, t.outputs["dev"], t.adapter_path) for t in cfg.tasks] == \
        [("sst", "s-train.txt", "s.json", "sst-dev-prefix-output.txt", "a/s"),
         ("cfimdb", "c-train.txt", "c.json", "cfimdb-dev-prefix-output.txt", "b/c")]
    assert (cfg.shared_length, cfg.head, cfg.training.lr) == (4, "mean", 1e-2)  # ptuning2's classification lr


@pytest.mark.parametrize("cfg,method", [(PromptTuningConfig(), "prompt"), (LlamaAdapterConfig(), "adapter"),
                                        (LoraConfig(), "lora")])
def test_only_deep_prefixes_train_per_task(cfg, method):
    """Prompt tuning's input embeddings and LLaMA-Adapter's gated prompts are not per-row keys and values."""
    with pytest.raises(MinillamaError) as e:
        MultitaskConfig.from_lists(LISTS, method=cfg)
    assert str(e.value) == ("--task_names trains a deep prefix per task, whose rows mix in one batch: "
                            f"--prefix_mode ptuning2 or prefix, not {method}")
    with pytest.raises(MinillamaError, match=f"one prefix per task mixes deep prefixes .* not {method}"):
        TaskPrefixes(tiny_model(), cfg, ["a", "b"])


def test_labels_that_do_not_fit_a_tasks_head_are_refused_before_the_model_loads(tmp_path):
    """SST's labels (0..4) read against CFIMDB's two names: file:line, before anything loads."""
    sst, imdb = data_slice(tmp_path, "sst", n=8), data_slice(tmp_path, "cfimdb", n=8)
    cfg = MultitaskConfig.from_lists(dict(name="sst,cfimdb", train=f"{sst['train']},{imdb['train']}",
                                          dev=f"{sst['dev']},{imdb['dev']}", test=f"{sst['test']},{imdb['test']}",
                                          label_names=f"{imdb['labels']},{imdb['labels']}",
                                          dev_out=f"{tmp_path}/o1.txt,{tmp_path}/o2.txt"), method=PrefixConfig())
    with pytest.raises(MinillamaError) as e:
        multitask.run(RunConfig(model_path=str(tmp_path / "no-model.pt")), cfg)
    first_big = next(i for i, line in enumerate(open(sst["train"]), 1) if int(line.split(" ||| ")[0]) >= 2)
    assert str(e.value).startswith(f"{sst['train']}:{first_big}: label ") and "outside the 2 label names" in str(e.value)
    assert not any(f.startswith("o") for f in os.listdir(tmp_path))


# -- end to end through the CLI ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode,head", [("ptuning2", "mean"), ("prefix", "verbalizer")])
def test_cli_trains_every_task_and_each_saved_adapter_reproduces_its_predictions(tmp_path, capsys, tiny_ckpt,
                                                                                   mode, head):
    """SST (5 labels) and CFIMDB (2) in one run, 2 shared + 3 own positions; then each saved
    adapter alone (--load_adapter, the single-task evaluation) and both in one mixed pass
    (--adapter_names) write the multi-task run's predictions again."""
    sst, imdb = data_slice(tmp_path, "sst", n=24), data_slice(tmp_path, "cfimdb", n=12)
    out = tmp_path / "out"
    out.mkdir()
    argv = multitask_argv(tiny_ckpt, sst, imdb, out, "--prefix_mode", mode, "--prefix_head", head,
                          "--shared_prefix_length", "2", "--prefix_length", "3", "--lr", "0.05",
                          "--log_jsonl", str(out / "log.jsonl"))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(["cfimdb-prefix-adapter.json", "cfimdb-prefix-adapter.safetensors",
                                              "imdb-dev.txt", "imdb-test.txt", "log.jsonl", "sst-dev.txt",
                                              "sst-prefix-adapter.json", "sst-prefix-adapter.safetensors",
                                              "sst-test.txt", "sst-cfimdb-multitask-curves.png"])
    assert f"each row reading [2 shared | 3 own] positions, head {head}" in printed
    for name in ("sst", "cfimdb"):
        assert f"{name}: dev acc :: " in printed and f"{name}: test acc :: " in printed
    assert len(read_predictions(out / "sst-dev.txt")) == 24 and len(read_predictions(out / "imdb-test.txt")) == 12
    import json
    meta = json.load(open(out / "sst-prefix-adapter.json"))
    assert (meta["method"], meta["config"]["length"], meta["shared_prefix_length"], meta["prefix_head"]) == \
        (mode, 5, 2, head)
    for name, data, short in (("sst", sst, "sst"), ("cfimdb", imdb, "imdb")):
        alone = course_argv("prefix", tiny_ckpt, data, "--load_adapter", str(out / f"{name}-prefix-adapter"),
                            "--max_sentence_len", "40", "--dev_out", str(tmp_path / f"{name}-dev-alone.txt"),
                            "--test_out", str(tmp_path / f"{name}-test-alone.txt"))
        assert main(alone) == 0
        for split in ("dev", "test"):
            assert read_predictions(tmp_path / f"{name}-{split}-alone.txt") == \
                read_predictions(out / f"{short}-{split}.txt"), (name, split)
    mixed = ["--option", "prefix", "--pretrained-model-path", tiny_ckpt, "--norm", "rmsnorm",
             "--tokenizer", asset("llama2c/tok512.model"), "--load_adapter", str(out / "sst-prefix-adapter"),
             str(out / "cfimdb-prefix-adapter"), "--adapter_names", "s,i", "--dev", f"{sst['dev']},{imdb['dev']}",
             "--test", f"{sst['test']},{imdb['test']}", "--max_sentence_len", "40", "--batch_size", "5",
             "--dev_out", f"{tmp_path}/s-mixed.txt,{tmp_path}/i-mixed.txt",
             "--test_out", f"{tmp_path}/s-mixed-test.txt,{tmp_path}/i-mixed-test.txt"]
    assert main(mixed) == 0
    assert read_predictions(tmp_path / "s-mixed.txt") == read_predictions(out / "sst-dev.txt")
    assert read_predictions(tmp_path / "i-mixed-test.txt") == read_predictions(out / "imdb-test.txt")


@pytest.mark.slow
@pytest.mark.parametrize("case,message", [
    ("lengths", "--test: give one file per task (2, for sst,cfimdb), comma-separated"),
    ("twice", "--task_names: 'sst' is named twice: give each task its own name"),
    ("labels", "is outside the 2 label names (0..1): does --label-names belong to this data set?"),
    ("prompt", "--task_names trains a deep prefix per task, whose rows mix in one batch: --prefix_mode ptuning2 or "
               "prefix, not prompt"),
    ("lora", "--task_names does nothing with --option lora: drop it"),
    ("shared_alone", "--shared_prefix_length shares prefix positions between the tasks of --task_names"),
    ("same_out", "--dev_out (sst) and --dev_out (cfimdb) name the same file"),
])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, tiny_ckpt, case, message):
    sst, imdb = data_slice(tmp_path, "sst", n=8), data_slice(tmp_path, "cfimdb", n=8)
    out = tmp_path / "out"
    out.mkdir()
    argv = multitask_argv(tiny_ckpt, sst, imdb, out, "--shared_prefix_length", "2", "--prefix_length", "3")
    at = {flag: argv.index(flag) + 1 for flag in ("--test", "--task_names", "--label-names", "--dev_out")}
    if case == "lengths":
        argv[at["--test"]] = sst["test"]
    elif case == "twice":
        argv[at["--task_names"]] = "sst,sst"
    elif case == "labels":
        argv[at["--label-names"]] = f"{imdb['labels']},{imdb['labels']}"
    elif case == "prompt":
        argv += ["--prefix_mode", "prompt"]
    elif case == "lora":
        argv[1] = "lora"
    elif case == "shared_alone":
        i = argv.index("--task_names")
        del argv[i:i + 2]
    elif case == "same_out":
        argv[at["--dev_out"]] = f"{out}/d.txt,{out}/d.txt"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert os.listdir(out) == []
