"""run_llama.py --option generate on small checkpoints written by the tests.

Facts checked: the greedy file equals an independent full-forward argmax
decode in the course's format (decoded prompt + continuation, no newline);
sampling is reproducible under --seed; decoding stops at the tokenizer's stop
ids; --chat wraps the prompt in the Llama 3 format; every bad input gives exit
code 2, one line on stderr and no output files."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, asset, run_unprivileged, tiny_model
from minillama.cli import main
from minillama.formats import save_checkpoint
from minillama.tasks.generate import COURSE_PROMPT
from minillama.tokenizer import load_tokenizer

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tok512():
    return asset("llama2c/tok512.model")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    save_checkpoint(tiny_model(seed=3, vocab_size=512, max_seq_len=128), path)
    return path


def eos_model(vocab_size: int, stop_id: int, **overrides):
    """A model whose every next token is stop_id: layers output zero, so the final
    hidden state is the normalised embedding, whose first coordinate is made
    positive, and only the output row of stop_id reads that coordinate."""
    model = tiny_model(vocab_size=vocab_size, tie_embeddings=False, **overrides)
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.wo.weight.zero_()
            layer.feed_forward.w2.weight.zero_()
        model.tok_embeddings.weight[:, 0] = 1.0
        model.output.weight.zero_()
        model.output.weight[stop_id, 0] = 10.0
    return model


def generate_argv(ckpt_path, tokenizer, out_dir, *extra):
    return ["--option", "generate", "--pretrained-model-path", str(ckpt_path), "--tokenizer", str(tokenizer),
            "--norm", "rmsnorm", "--max_new_tokens", str(NEW_TOKENS),
            "--generated_sentence_low_temp_out", os.path.join(out_dir, "temp-0.txt"),
            "--generated_sentence_high_temp_out", os.path.join(out_dir, "temp-1.txt"), *extra]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def greedy_oracle(ckpt_path, tokenizer, prompt_ids):
    """Argmax decoding with a full forward per step (no KV cache), stopping at eos."""
    from minillama import load_model

    model = load_model(ckpt_path, norm="rmsnorm")
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits, _ = model(torch.tensor([ids]))
            nxt = int(logits[0, -1].argmax())
            if nxt in tokenizer.stop_ids:
                break
            ids.append(nxt)
    return ids


@pytest.mark.slow
def test_generate_writes_course_files(ckpt, tok512, tmp_path, capsys):
    assert main(generate_argv(ckpt, tok512, str(tmp_path))) == 0
    low, high = read(tmp_path / "temp-0.txt"), read(tmp_path / "temp-1.txt")
    tokenizer = load_tokenizer(tok512)
    expected = tokenizer.decode(greedy_oracle(ckpt, tokenizer, tokenizer.encode(COURSE_PROMPT, bos=True)))
    assert low == expected
    assert low.startswith(COURSE_PROMPT) and high.startswith(COURSE_PROMPT)
    assert len(high) > len(COURSE_PROMPT) and not high.endswith("\n")
    out = capsys.readouterr().out
    assert "Temperature is 0.0" in out and "Temperature is 1.0" in out and high in out
    assert sorted(os.listdir(tmp_path)) == ["temp-0.txt", "temp-1.txt"]  # no temporary files left


@pytest.mark.slow
def test_same_seed_same_text(ckpt, tok512, tmp_path):
    texts = {}
    for run, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = tmp_path / run
        out.mkdir()
        assert main(generate_argv(ckpt, tok512, str(out), "--seed", seed, "--temperature", "1.0")) == 0
        assert not (out / "temp-0.txt").exists()  # one temperature asked: one file
        texts[run] = read(out / "temp-1.txt")
    assert texts["a"] == texts["b"]
    assert texts["a"] != texts["c"]


@pytest.mark.slow
def test_sampled_file_is_named_after_its_temperature(ckpt, tok512, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--option", "generate", "--pretrained-model-path", str(ckpt), "--tokenizer", str(tok512),
            "--norm", "rmsnorm", "--max_new_tokens", "3"]
    assert main(argv + ["--temperature", "0.7"]) == 0
    assert os.listdir(tmp_path) == ["generated-sentence-temp-0.7.txt"]
    assert "Wrote generated sentence to generated-sentence-temp-0.7.txt." in capsys.readouterr().out
    os.remove("generated-sentence-temp-0.7.txt")
    assert main(argv) == 0  # the course's pair keeps the course's names
    assert sorted(os.listdir(tmp_path)) == ["generated-sentence-temp-0.txt", "generated-sentence-temp-1.txt"]


def test_both_temperatures_into_one_file_is_refused(ckpt, tok512, tmp_path, capsys):
    same = str(tmp_path / "same.txt")
    argv = generate_argv(ckpt, tok512, str(tmp_path))
    argv[argv.index("--generated_sentence_low_temp_out") + 1] = same
    argv[argv.index("--generated_sentence_high_temp_out") + 1] = same
    assert main(argv) == 2
    assert ("--generated_sentence_low_temp_out and --generated_sentence_high_temp_out name the same file"
            in capsys.readouterr().err)
    assert os.listdir(tmp_path) == []


def test_epsilon_and_prompt_text(ckpt, tok512, tmp_path):
    assert main(generate_argv(ckpt, tok512, str(tmp_path), "--prompt_text", "Once upon a time",
                              "--epsilon", "0.05")) == 0
    assert read(tmp_path / "temp-1.txt").startswith("Once upon a time")


def test_stops_at_eos(tok512, tmp_path):
    tokenizer = load_tokenizer(tok512)
    path = str(tmp_path / "eos.pt")
    save_checkpoint(eos_model(512, tokenizer.eos_id, max_seq_len=64), path)
    assert main(generate_argv(path, tok512, str(tmp_path), "--prompt_text", "Once upon a time")) == 0
    assert read(tmp_path / "temp-0.txt") == "Once upon a time"
    assert read(tmp_path / "temp-1.txt") == "Once upon a time"


@pytest.mark.slow
def test_chat_wraps_prompt_and_stops_at_eot(tmp_path):
    tok = asset("llama3/tokenizer.model")
    tokenizer = load_tokenizer(tok)
    eot = tokenizer.format_chat([{"role": "user", "content": "x"}])  # noqa: F841 (format exists)
    eot_id = tokenizer.eot_id
    path = str(tmp_path / "chat.pt")
    save_checkpoint(eos_model(tokenizer.vocab_size, eot_id, dim=16, n_heads=2, n_kv_heads=1,
                              max_seq_len=64), path)
    assert main(generate_argv(path, tok, str(tmp_path), "--chat", "--temperature", "0")) == 0
    assert read(tmp_path / "temp-0.txt") == ""  # the reply only; it ended at once with <|eot_id|>

    # a model that never says <|eot_id|>: the reply is the argmax continuation of the chat prompt
    path2 = str(tmp_path / "chat2.pt")
    save_checkpoint(tiny_model(vocab_size=tokenizer.vocab_size, dim=16, n_heads=2, n_kv_heads=1,
                               max_seq_len=96), path2)
    assert main(generate_argv(path2, tok, str(tmp_path), "--chat", "--temperature", "0")) == 0
    prompt_ids = tokenizer.format_chat([{"role": "user", "content": COURSE_PROMPT}], add_generation_prompt=True)
    ids = greedy_oracle(path2, tokenizer, prompt_ids)
    assert read(tmp_path / "temp-0.txt") == tokenizer.decode(ids[len(prompt_ids):])


def bad_inputs(tmp_path, ckpt, tok512):
    """(name, argv) of every bad input, with the files they need."""
    truncated = tmp_path / "truncated.pt"
    with open(ckpt, "rb") as f:
        truncated.write_bytes(f.read()[: os.path.getsize(ckpt) // 2])
    text_file = tmp_path / "notes.pt"
    text_file.write_text("not a checkpoint\n" * 20)
    small_vocab = tmp_path / "vocab97.pt"
    save_checkpoint(tiny_model(vocab_size=97), str(small_vocab))
    out = str(tmp_path / "out")
    os.makedirs(out, exist_ok=True)
    return out, [
        ("missing checkpoint", generate_argv(tmp_path / "nope.pt", tok512, out), "check the path given to --pretrained-model-path"),
        ("missing tokenizer", generate_argv(ckpt, tmp_path / "nope.model", out), "setup.sh"),
        ("truncated checkpoint", generate_argv(truncated, tok512, out), "truncated"),
        ("wrong format", generate_argv(text_file, tok512, out), "not a llama2.c"),
        ("tokenizer is not a sentencepiece model", generate_argv(ckpt, text_file, out), "sentencepiece"),
        ("vocab mismatch", generate_argv(small_vocab, tok512, out), "512 tokens"),
        ("prompt too long", generate_argv(ckpt, tok512, out, "--prompt_text", "hello world " * 100), "max_seq_len"),
        ("epsilon >= 1", generate_argv(ckpt, tok512, out, "--epsilon", "1.5"), "epsilon"),
        ("epsilon < 0", generate_argv(ckpt, tok512, out, "--epsilon", "-0.1"), "epsilon"),
        ("negative temperature", generate_argv(ckpt, tok512, out, "--temperature", "-1"), "temperature"),
        ("nan temperature", generate_argv(ckpt, tok512, out, "--temperature", "nan"), "temperature"),
        ("infinite temperature", generate_argv(ckpt, tok512, out, "--temperature", "inf"), "temperature"),
        ("no new tokens", generate_argv(ckpt, tok512, out, "--max_new_tokens", "0"), "--max_new_tokens"),
        ("chat without a chat tokenizer", generate_argv(ckpt, tok512, out, "--chat"), "--chat"),
        ("missing output directory", generate_argv(ckpt, tok512, str(tmp_path / "no" / "dir")), "does not exist"),
    ]


def test_bad_inputs_one_line_exit_2_no_files(ckpt, tok512, tmp_path, capsys):
    out, cases = bad_inputs(tmp_path, ckpt, tok512)
    for name, argv, needle in cases:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.startswith("error:") and "\n" not in err, f"{name}: {err!r}"
        assert needle in err, f"{name}: {err!r}"
        assert os.listdir(out) == [], f"{name} left files: {os.listdir(out)}"


@pytest.mark.slow
def test_exit_code_through_run_llama(ckpt, tok512, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    argv = [str(a) for a in generate_argv(tmp_path / "nope.pt", tok512, str(tmp_path))]
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run_llama.py"), *argv],
                          capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "checkpoint not found" in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_read_only_output_directory_fails_before_any_file_is_written(ckpt, tok512, tmp_path):
    """Both outputs are checked by writing a probe before the model loads, so a directory
    the user may not write gives one line and neither temp-0 nor temp-1 appears."""
    work = str(tmp_path)
    shutil.copy(ckpt, os.path.join(work, "model.pt"))
    out = os.path.join(work, "out")
    os.mkdir(out)
    proc = run_unprivileged(generate_argv(os.path.join(work, "model.pt"), tok512, out), out)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "is not writable" in proc.stderr, proc.stderr
    assert os.listdir(out) == []
