"""`run_llama.py --task e2e` end to end (minillama/tasks/e2e.py) on a tiny model and slices
of the real E2E files: outputs per unique test MR, the five metrics, a trained prefix that
changes what generate writes, and bad input."""
import json
import os

import pytest
import torch

from conftest import asset, tiny_model, e2e_slice, e2e_argv
from minillama.adapters import load_adapter
from minillama.cli import main
from minillama.formats import save_checkpoint
from minillama.lm_data import prompt_ids
from minillama.pairs_data import group_references, read_pairs
from minillama.tokenizer import load_tokenizer

TOK = "llama2c/tok512.model"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=256), str(path))
    return str(path)


@pytest.mark.parametrize("option,extra", [("finetune", []), ("prefix", ["--prefix_length", "4"]),
                                          ("lora", ["--no_java"]),
                                          ("prefix", ["--prefix_mode", "adapter", "--prefix_length", "4"])])
@pytest.mark.slow
def test_cli_e2e_end_to_end(tmp_path, capsys, ckpt, option, extra):
    data = e2e_slice(tmp_path)
    out = str(tmp_path / "out")
    os.mkdir(out)
    saves = [] if option == "finetune" else ["--save_adapter", os.path.join(out, "adapter")]  # finetune saves none
    assert main(e2e_argv(option, ckpt, data, out, *saves, *extra)) == 0
    printed = capsys.readouterr().out
    assert "epoch 1: train loss ::" in printed and "dev loss ::" in printed and "BLEU:" in printed
    sources = [s for s, _ in group_references(read_pairs(data["testset_w_refs"]))]
    lines = open(os.path.join(out, "test.txt"), encoding="utf-8").read().split("\n")
    assert len(lines) == len(sources) + 1 and lines[-1] == ""  # one line per unique MR, in order
    report = json.load(open(os.path.join(out, "test-scores.json")))
    scores = report["scores"]["test"]
    assert set(scores) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    assert (scores["METEOR"] is None) == (option == "lora") and 0.0 <= scores["BLEU"] <= 1.0
    assert report["config"]["beam_size"] == 3 and report["config"]["lr_schedule"] == "linear"
    has_adapter = os.path.exists(os.path.join(out, "adapter.json"))
    assert has_adapter == (option != "finetune")


@pytest.mark.slow  # long training
def test_a_trained_prefix_changes_what_generate_writes(tmp_path, ckpt):
    """The prefix enters generation through minillama's own KV cache (no dropped prefix)."""
    data = e2e_slice(tmp_path)
    out = str(tmp_path / "out")
    os.mkdir(out)
    assert main(e2e_argv("prefix", ckpt, data, out, "--prefix_length", "4", "--lr", "0.1", "--no_java",
                         "--save_adapter", os.path.join(out, "adapter"))) == 0
    from minillama.formats import load_model
    base = load_model(ckpt, norm="rmsnorm")
    tok = load_tokenizer(asset(TOK))
    ids = torch.tensor([prompt_ids(tok, read_pairs(data["testset_w_refs"])[0].source)])
    plain = base.generate(ids, 12, beam_size=3, eos_id=tok.eos_id)
    tuned = load_adapter(base, os.path.join(out, "adapter")).generate(ids, 12, beam_size=3, eos_id=tok.eos_id)
    assert not torch.equal(plain, tuned)
    first = open(os.path.join(out, "test.txt"), encoding="utf-8").readline().rstrip("\n")
    from minillama.core.decoding import strip_after_stop
    assert first == tok.decode(strip_after_stop(tuned[0, ids.shape[1]:].tolist(), [tok.eos_id])).strip()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, ckpt, monkeypatch):
    data = e2e_slice(tmp_path)
    out = str(tmp_path / "out")
    os.mkdir(out)
    long_mr = str(tmp_path / "long.csv")
    open(long_mr, "w").write('mr,ref\n"' + "name[x], " * 200 + '",a text\n')
    no_header = str(tmp_path / "noheader.csv")
    open(no_header, "w").write('"name[x]",a text\n')
    empty_ref = str(tmp_path / "emptyref.csv")
    open(empty_ref, "w").write('mr,ref\n"name[x]",\n')
    cases = [
        (["--beam_size", "0"], "--beam_size must be a positive integer"),
        (["--test", long_mr], "long.csv:2: the source is"),
        (["--train", no_header], "noheader.csv:1: the header has no column 'mr'"),
        (["--dev", empty_ref], "emptyref.csv:2"),
        (["--test_out", os.path.join(out, "missing", "t.txt")], "does not exist"),
        (["--option", "prompt"], "--task e2e trains a generator"),
        (["--test_out", data["testset_w_refs"]], "--test and --test_out name the same file"),
    ]
    for extra, message in cases:
        assert main(e2e_argv("finetune", ckpt, data, out, "--no_java", *extra)) == 2, message
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert os.listdir(out) == [], (message, os.listdir(out))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH: said before any work, nothing written
    assert main(e2e_argv("finetune", ckpt, data, out)) == 2
    err = capsys.readouterr().err
    assert "need Java" in err and "--no_java" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(out) == []


@pytest.mark.slow
def test_load_two_adapters_with_interpolate(tmp_path, capsys, ckpt):
    """--task e2e --load_adapter A B --interpolate ALPHA decodes with alpha*A + (1-alpha)*B;
    alpha 1 writes what A alone writes."""
    data = e2e_slice(tmp_path, rows=(16, 8, 6))
    out = str(tmp_path / "out")
    os.mkdir(out)
    for name, seed in (("a", "1"), ("b", "2")):
        assert main(e2e_argv("prefix", ckpt, data, out, "--prefix_mode", "ptuning2", "--prefix_length", "3",
                             "--lr", "0.3", "--epochs", "1", "--no_java", "--seed", seed,
                             "--save_adapter", os.path.join(out, name), "--test_out", os.path.join(out, f"{name}.txt"))) == 0
    adapters = [os.path.join(out, "a"), os.path.join(out, "b")]

    def decode(alpha, name):
        argv = e2e_argv("prefix", ckpt, data, out, "--no_java", "--load_adapter", *adapters, "--interpolate", alpha,
                        "--test_out", os.path.join(out, name))
        capsys.readouterr()
        assert main(argv) == 0
        return capsys.readouterr().out, open(os.path.join(out, name), encoding="utf-8").read()

    printed, _ = decode("0.5", "half.txt")
    assert "interpolated 0.5 : 0.5" in printed
    _, alone_a = decode("1.0", "one.txt")
    assert alone_a == open(os.path.join(out, "a.txt"), encoding="utf-8").read()


def test_one_long_source_leaves_the_other_rows_their_new_tokens():
    """A batch holding a prompt that nearly fills the context: the other rows still get every
    new token asked (what decoding each alone gives), the long row what its context leaves."""
    from conftest import tiny_model
    from minillama.runconfig import RunConfig
    from minillama.tasks.e2e import E2EConfig, generate_rows
    from minillama.train import TrainConfig
    model = tiny_model(max_seq_len=32)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (4, 28, 6)]
    run = RunConfig(progress=False)
    for beam in (1, 3):
        cfg = E2EConfig(beam_size=beam, training=TrainConfig(batch_size=10))
        rows = generate_rows(model, prompts, 10, cfg, run, pad_id=0, eos_id=None)
        assert [len(r) for r in rows] == [10, 4, 10]  # the long row: 32 - 28 positions left
        for prompt, row in zip(prompts, rows):
            assert row == generate_rows(model, [prompt], 10, cfg, run, pad_id=0, eos_id=None)[0]


def test_decode_batches_groups_rows_short_of_room_by_length():
    from minillama.tasks.e2e import decode_batches
    # room 32, 10 new tokens: lengths 28, 28 and 25 leave fewer than 10, 4 and 6 leave enough
    assert decode_batches([4, 28, 6, 25, 28], batch_size=10, room=32, max_new=10) == [[1, 4], [3], [2, 0]]
    assert decode_batches([4, 6, 5], batch_size=2, room=32, max_new=10) == [[1, 2], [0]]


def test_a_source_short_of_room_is_noted_on_stderr_and_in_the_report(tmp_path, capsys, ckpt):
    data = e2e_slice(tmp_path, rows=(16, 8, 6))
    long_mr = "name[x], " * 41  # 248 tokens with its two bos: 8 of the 256 positions left
    with open(data["testset_w_refs"], encoding="utf-8") as f:
        header, *rows = f.readlines()
    open(data["testset_w_refs"], "w", encoding="utf-8").writelines([header, f'"{long_mr}",a text\n', *rows])
    out = str(tmp_path / "out")
    os.mkdir(out)
    assert main(e2e_argv("finetune", ckpt, data, out, "--no_java", "--epochs", "1")) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: 1 source(s) leave fewer")]
    assert len(notes) == 1 and f"{data['testset_w_refs']}:2 (248 tokens: 8 new)" in notes[0], err
    report = json.load(open(os.path.join(out, "test-scores.json")))
    assert report["short_of_room"] == {"test": [{"line": 2, "source_tokens": 248, "new_tokens": 8}]}


def test_export_peft_writes_the_trained_e2e_adapter(tmp_path, capsys):
    """--task e2e --export_peft: the PEFT directory holds the LoRA weights minillama saved
    (read back by peft_format), and peft on the Hugging Face base gives minillama's logits."""
    from minillama.formats import load_model
    from minillama.formats.hf import save_hf_dir
    hf_dir = str(tmp_path / "base-hf")
    save_hf_dir(tiny_model(vocab_size=512, max_seq_len=256), hf_dir)
    data = e2e_slice(tmp_path, rows=(16, 8, 4))
    out = str(tmp_path / "out")
    os.mkdir(out)
    peft_dir, saved = os.path.join(out, "peft"), os.path.join(out, "a")
    assert main(e2e_argv("lora", hf_dir, data, out, "--no_java", "--epochs", "1", "--save_adapter", saved,
                         "--export_peft", peft_dir)) == 0
    assert f"exported the lora adapter as a PEFT adapter to {peft_dir}" in capsys.readouterr().out
    assert sorted(os.listdir(peft_dir)) == ["adapter_config.json", "adapter_model.safetensors"]
    ours = load_adapter(load_model(hf_dir), saved)
    exported = load_adapter(load_model(hf_dir), peft_dir)
    mine, back = ours.adapter_tensors(), exported.adapter_tensors()
    assert sorted(mine) == sorted(back) and len(mine) > 0
    for name in mine:
        assert torch.allclose(mine[name], back[name], atol=1e-6, rtol=0), name
    assert any(float(t.abs().max()) > 0 for n, t in mine.items() if n.endswith("lora_B"))  # it trained
    peft = pytest.importorskip("peft")
    from hf_oracle import transformers
    tok = load_tokenizer(asset(TOK))
    ids = torch.tensor([prompt_ids(tok, read_pairs(data["testset_w_refs"])[0].source)])
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(hf, peft_dir).eval()(input_ids=ids).logits.float()
        assert (ours.eval()(ids)[0].float() - theirs).abs().max().item() <= 1e-4


def test_export_peft_of_a_finetune_run_is_refused_before_loading(tmp_path, capsys, ckpt):
    data = e2e_slice(tmp_path, rows=(4, 4, 4))
    out = str(tmp_path / "out")
    os.mkdir(out)
    assert main(e2e_argv("finetune", ckpt, data, out, "--no_java", "--export_peft", os.path.join(out, "p"))) == 2
    err = capsys.readouterr().err
    assert "--export_peft: --option finetune trains no adapter" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(out) == []


@pytest.mark.parametrize("fails,unit,left", [
    ("a.json.tmp", ["a.safetensors", "a.json"], ["test-curves.png"]),
    ("test-scores.json.tmp", ["test.txt", "test-scores.json"],
     ["a.json", "a.safetensors", "peft/adapter_config.json", "peft/adapter_model.safetensors", "test-curves.png"]),
    ("adapter_config.json.tmp", ["peft/adapter_model.safetensors", "peft/adapter_config.json"],
     ["a.json", "a.safetensors", "test-curves.png"]),
])
def test_a_full_disk_is_one_line_naming_what_was_kept(tmp_path, capsys, monkeypatch, ckpt, fails, unit, left):
    """The second file of an output fails as a full disk does: exit 2, one line naming the
    output and what this run had written, none of that output's files (nor an empty
    --export_peft directory) left."""
    from conftest import disk_full_on
    data = e2e_slice(tmp_path, rows=(16, 8, 4))
    out = str(tmp_path / "out")
    os.mkdir(out)
    disk_full_on(monkeypatch, fails)
    argv = e2e_argv("lora", ckpt, data, out, "--no_java", "--epochs", "1", "--save_adapter", os.path.join(out, "a"),
                    "--export_peft", os.path.join(out, "peft"))
    assert main(argv) == 2
    printed = capsys.readouterr().err  # the progress bars of training come first
    err = printed.strip().splitlines()[-1].split("\r")[-1]
    assert "Traceback" not in printed and sum("error:" in line for line in printed.splitlines()) == 1, printed
    named = " and ".join(os.path.join(out, f) for f in unit)
    assert err.startswith(f"error: no space left on device writing {named}: none of them was written and no "
                          f"partial file remains; kept from this run: "), err
    assert sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs) == left
    assert os.path.isdir(os.path.join(out, "peft")) == ("peft/adapter_config.json" in left)
    for kept in left:
        assert os.path.join(out, kept) in err
