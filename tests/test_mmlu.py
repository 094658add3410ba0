"""MMLU: the CSV reader (real release and malformed files), the standard prompt,
letter-logit scoring vs a brute-force per-question oracle, answer parsing and
refusals, micro/macro arithmetic, and the CLI end to end (minillama/mmlu_data.py,
minillama/tasks/mmlu.py)."""
import csv
import json
import os

import pytest
import torch

from conftest import asset, tiny_model
from minillama import mmlu_data
from minillama.cli import main
from minillama.errors import MinillamaError
from minillama.formats import save_checkpoint
from minillama.mmlu_data import Question
from minillama.sampling import generate
from minillama.tasks import mmlu
from minillama.sampling import strip_after_stop as strip_stop
from minillama.tokenizer import load_tokenizer

# tok512 splits " A" into "▁" + "A": the approximation warning is expected here
pytestmark = pytest.mark.filterwarnings("ignore:this tokenizer splits")


# -- fixtures -------------------------------------------------------------------------------
def write_csv(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


FIX_TEST = {
    "alpha_beta": [["What is 2 + 2?", "3", "4", "5", "22", "B"],
                   ["Pick the colour, please: which one is red?", "blue", "green", "red, of course", "none", "C"],
                   ["A long question\nspanning two lines?", "x", "y", "z", "w", "A"]],
    "gamma": [["Q1?", "a", "b", "c", "d", "D"],
              ["Is this the second question of gamma, which is rather long compared with the others?",
               "yes", "no", "maybe", "unsure", "A"]],
}


def make_fixture(root, n_dev=5):
    for subject, rows in FIX_TEST.items():
        write_csv(os.path.join(root, "test", f"{subject}_test.csv"), rows)
        write_csv(os.path.join(root, "val", f"{subject}_val.csv"), rows[::-1])
        dev = [[f"Dev question {i} of {subject}?", "one", "two", "three", "four", "ABCD"[i % 4]]
               for i in range(n_dev)]
        write_csv(os.path.join(root, "dev", f"{subject}_dev.csv"), dev)
    return str(root)


@pytest.fixture(scope="module")
def tok512():
    return load_tokenizer(asset("llama2c/tok512.model"))


# -- the reader -----------------------------------------------------------------------------
def test_reader_on_the_real_release():
    root = asset("mmlu")
    counts = {}
    for split in mmlu_data.SPLITS:
        subjects = mmlu_data.list_subjects(root, split)
        assert len(subjects) == 57 and "abstract_algebra" in subjects and "world_religions" in subjects
        data = mmlu_data.load_split(root, split)
        counts[split] = sum(len(v) for v in data.values())
        assert all(q.answer in "ABCD" and len(q.choices) == 4 for qs in data.values() for q in qs)
    assert counts == {"dev": 285, "val": 1531, "test": 14042}
    dev = mmlu_data.load_split(root, "dev")
    assert {len(v) for v in dev.values()} == {5}
    first = dev["abstract_algebra"][0]
    assert first.question == "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field."
    assert first.choices == ("0", "1", "2", "3") and first.answer == "B" and first.label == 1


def test_reader_keeps_quoted_commas_and_newlines(tmp_path):
    root = make_fixture(tmp_path)
    data = mmlu_data.load_split(root, "test")
    assert list(data) == ["alpha_beta", "gamma"]
    q = data["alpha_beta"]
    assert q[1].choices[2] == "red, of course" and q[2].question == "A long question\nspanning two lines?"
    assert q[2].source.endswith("alpha_beta_test.csv:3")
    assert [len(v) for v in mmlu_data.load_split(root, "test", ["gamma"], limit=1).values()] == [1]


def test_malformed_files_name_file_and_line(tmp_path):
    bad = tmp_path / "test" / "broken_test.csv"
    write_csv(str(bad), [["q\nwith newline", "a", "b", "c", "d", "A"], ["q2", "a", "b", "c", "d", "E"]])
    with pytest.raises(MinillamaError, match=r"broken_test\.csv:3: answer 'E' is not one of A, B, C, D"):
        mmlu_data.load_split(str(tmp_path), "test")
    write_csv(str(bad), [["q", "a", "b", "c", "d", "A"], ["q2", "a", "b", "c", "B"]])
    with pytest.raises(MinillamaError, match=r"broken_test\.csv:2: expected 6 columns .* got 5"):
        mmlu_data.load_split(str(tmp_path), "test")
    with pytest.raises(MinillamaError, match="--mmlu_dir"):
        mmlu_data.load_split(str(tmp_path / "nowhere"), "test")
    with pytest.raises(MinillamaError, match="unknown MMLU subject"):
        mmlu_data.parse_subjects("broken,nope", ["broken"])


# -- prompts --------------------------------------------------------------------------------
def test_k_shot_prompt_layout_is_the_standard_one():
    shots = [Question("high_school_physics", "Shot one?", ("1", "2", "3", "4"), "C", "x:1"),
             Question("high_school_physics", "Shot two?", ("p", "q", "r", "s"), "A", "x:2")]
    q = Question("high_school_physics", "The question?", ("w", "x", "y", "z"), "D", "y:1")
    expected = ("The following are multiple choice questions (with answers) about  high school physics.\n\n"
                "Shot one?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: C\n\n"
                "Shot two?\nA. p\nB. q\nC. r\nD. s\nAnswer: A\n\n"
                "The question?\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert mmlu_data.build_prompt(q, shots) == expected
    assert mmlu_data.build_prompt(q) == expected[:expected.index("\n\n") + 2] + expected[expected.index("The q"):]
    chat = mmlu_data.build_chat_message(q, shots)
    assert chat == expected[:-len("\nAnswer:")] + "\n\n" + mmlu_data.CHAT_INSTRUCTION


def test_letter_token_ids_follow_answer_colon():
    sp = load_tokenizer(asset("llama2/tokenizer.model"))
    ids = mmlu.letter_token_ids(sp)
    for letter, i in zip("ABCD", ids):  # " A" is one sentencepiece token right after "Answer:"
        assert sp.encode(f"Answer: {letter}", bos=False) == sp.encode("Answer:", bos=False) + [i]
        assert sp.sp.id_to_piece(i) == f"\u2581{letter}"


def test_letter_token_ids_llama3_vs_hf_tokenizers():
    tokenizers = pytest.importorskip("tokenizers")
    oracle = tokenizers.Tokenizer.from_file(asset("llama3/tokenizer.json"))
    tok = load_tokenizer(asset("llama3/tokenizer.model"))
    want = [oracle.encode(f"Answer: {c}", add_special_tokens=False).ids[-1] for c in "ABCD"]
    assert mmlu.letter_token_ids(tok) == want
    assert [oracle.decode([i]) for i in want] == [" A", " B", " C", " D"]
    chat = mmlu.letter_token_ids(tok, chat=True)
    assert [oracle.decode([i]) for i in chat] == ["A", "B", "C", "D"]


def test_prompts_drop_shots_then_truncate_to_fit(tmp_path, tok512):
    data = mmlu_data.load_split(make_fixture(tmp_path), "test")
    dev = mmlu_data.load_split(str(tmp_path), "dev")
    qs = mmlu_data.flatten(data)
    full, stats = mmlu.encode_questions(tok512, qs, dev, 5, False, 10_000)
    assert stats == {"fewer_shots": 0, "truncated": 0}
    assert full[0] == tok512.encode(mmlu_data.build_prompt(qs[0], dev["alpha_beta"][:5]), bos=True)
    zero, _ = mmlu.encode_questions(tok512, qs, dev, 0, False, 10_000)
    limit = max(len(z) for z in zero) + 5  # room for every zero-shot prompt, not for five shots
    fitted, stats = mmlu.encode_questions(tok512, qs, dev, 5, False, limit)
    assert stats["fewer_shots"] == len(qs) and stats["truncated"] == 0 and max(map(len, fitted)) <= limit
    cut, stats = mmlu.encode_questions(tok512, qs, dev, 0, False, 12)
    assert stats["truncated"] == len(qs)
    assert all(c == [tok512.bos_id] + z[-11:] for c, z in zip(cut, zero))


# -- scoring --------------------------------------------------------------------------------
def test_letter_logits_equal_brute_force_per_question(tmp_path, tok512):
    """Batched, left-padded, last_only scoring == each prompt alone, every position's
    logits, the letter ids taken from encoding `prompt + ' X'`."""
    root = make_fixture(tmp_path)
    qs = mmlu_data.flatten(mmlu_data.load_split(root, "test"))
    dev = mmlu_data.load_split(root, "dev")
    model = tiny_model(vocab_size=512, max_seq_len=512)
    prompts, _ = mmlu.encode_questions(tok512, qs, dev, 1, False, 512)
    assert len(set(map(len, prompts))) == len(prompts)  # ragged: padding is exercised
    got = mmlu.score_logits(model, prompts, mmlu.letter_token_ids(tok512), tok512.pad_id, batch_size=3,
                            progress=False)
    for n, q in enumerate(qs):
        text = mmlu_data.build_prompt(q, dev[q.subject][:1])
        ids = tok512.encode(text, bos=True)
        logits, _ = model(torch.tensor([ids]))
        for c, letter in enumerate("ABCD"):
            letter_id = tok512.encode(text + " " + letter, bos=True)[-1]
            assert abs(got[n, c].item() - logits[0, -1, letter_id].item()) < 1e-5
    report, records = mmlu.evaluate(model, tok512, qs, dev, k_shot=1, batch_size=3, progress=False)
    assert [r["prediction"] for r in records] == ["ABCD"[i] for i in got.argmax(-1).tolist()]
    assert report["refusals"] == 0 and report["correct"] == sum(r["correct"] for r in records)


@pytest.mark.parametrize("reply,letter", [
    ("A", "A"), (" B\n\nThe following", "B"), ("(C) because", "C"), ("Answer: D", "D"),
    ("The answer is B.", "B"), ("The correct answer is (A).", "A"), ("**C**", "C"), ("  D) 42", "D"),
    ("I think it is option (B), since", "B"), ("Sure!\nC. red", "C"), ("answer: a", None),
    ("A cat sat on the mat", None), ("I cannot help with that.", None), ("", None), ("E", None),
    ("Because of Answer: C and (A)", "C"), ("B (blue)", "B"), ("A, since", "A"),
])
def test_parse_answer(reply, letter):
    assert mmlu.parse_answer(reply) == letter


class Biased(torch.nn.Module):
    """A model that strongly prefers one token: canned generations from a real forward."""

    def __init__(self, base, token, value=1e4):
        super().__init__()
        self.base, self.token, self.value = base, token, value
        self.config, self.input_room = base.config, base.input_room

    def new_cache(self, *a, **k):
        return self.base.new_cache(*a, **k)

    def forward(self, ids, mask=None, **kw):
        logits, hidden = self.base(ids, mask, **kw)
        logits = logits.clone()
        logits[..., self.token] += self.value
        return logits, hidden


def test_generate_mode_counts_refusals(tmp_path, tok512):
    root = make_fixture(tmp_path)
    qs = mmlu_data.flatten(mmlu_data.load_split(root, "test"))
    base = tiny_model(vocab_size=512, max_seq_len=256)
    b_id = tok512.encode("B", bos=False)[-1]
    report, records = mmlu.evaluate(Biased(base, b_id), tok512, qs, {}, mode="generate", batch_size=2,
                                    max_new_tokens=1, progress=False)
    assert all(r["reply"] == "B" and r["prediction"] == "B" for r in records) and report["refusals"] == 0
    assert report["correct"] == sum(q.answer == "B" for q in qs)
    colon = tok512.encode(":", bos=False)[-1]
    report, records = mmlu.evaluate(Biased(base, colon), tok512, qs, {}, mode="generate", batch_size=2,
                                    max_new_tokens=3, progress=False)
    assert report["refusals"] == len(qs) and report["refusal_rate"] == 1.0 and report["accuracy"] == 0.0
    assert all(r["reply"] == ":::" for r in records)
    # the plain model: batched replies equal greedy decoding of each prompt alone
    report, records = mmlu.evaluate(base, tok512, qs, {}, mode="generate", batch_size=2, max_new_tokens=4,
                                    progress=False)
    for q, r in zip(qs, records):
        ids = torch.tensor([tok512.encode(mmlu_data.build_prompt(q), bos=True)])
        alone = generate(base, ids, 4, eos_id=tok512.stop_ids)[0, ids.shape[1]:].tolist()
        assert r["reply"] == tok512.decode(strip_stop(alone, tok512.stop_ids))
        assert r["prediction"] == mmlu.parse_answer(r["reply"])
    assert report["refusals"] == sum(r["prediction"] is None for r in records)


def test_micro_and_macro_accuracy():
    q = lambda s, a: Question(s, "?", ("a", "b", "c", "d"), a, "-")  # noqa: E731
    qs = [q("x", "A"), q("y", "A"), q("y", "B"), q("y", "C")]
    report = mmlu.summarize(qs, ["A", "A", None, "D"])
    assert report["subjects"]["x"]["accuracy"] == 1.0 and report["subjects"]["y"]["accuracy"] == pytest.approx(1 / 3)
    assert report["micro_accuracy"] == report["accuracy"] == 0.5            # 2 of 4 questions
    assert report["macro_accuracy"] == pytest.approx((1.0 + 1 / 3) / 2)    # mean of subjects
    assert report["refusals"] == 1 and report["refusal_rate"] == 0.25
    assert report["subjects"]["y"]["refusal_rate"] == pytest.approx(1 / 3)
    table = mmlu.format_table(report)
    assert "micro (all questions)" in table and "0.667" in table


# -- the command line -----------------------------------------------------------------------
def test_cli_option_mmlu_end_to_end(tmp_path, capsys):
    root = make_fixture(tmp_path / "mmlu")
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), ckpt)
    common = ["--option", "mmlu", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
              "--norm", "rmsnorm", "--mmlu_dir", root, "--batch_size", "2"]
    out = str(tmp_path / "report.json")
    assert main(common + ["--k_shot", "2", "--mmlu_out", out, "--log_jsonl", str(tmp_path / "log.jsonl")]) == 0
    report = json.load(open(out))
    assert report["n"] == 5 and report["k_shot"] == 2 and set(report["subjects"]) == {"alpha_beta", "gamma"}
    assert "mmlu test acc ::" in capsys.readouterr().out
    assert json.loads(open(tmp_path / "log.jsonl").read())["n"] == 5
    lines = str(tmp_path / "report.jsonl")
    assert main(common + ["--subjects", "gamma", "--limit", "1", "--mmlu_mode", "generate",
                          "--mmlu_new_tokens", "2", "--mmlu_out", lines]) == 0
    rows = [json.loads(line) for line in open(lines)]
    assert len(rows) == 2 and rows[0]["subject"] == "gamma" and rows[1]["summary"]["n"] == 1
    # a malformed CSV: one error line, exit 2, no report written
    write_csv(os.path.join(root, "test", "gamma_test.csv"), [["q", "a", "b", "c", "d", "Z"]])
    bad_out = str(tmp_path / "bad.json")
    assert main(common + ["--mmlu_out", bad_out]) == 2
    err = capsys.readouterr().err
    assert "gamma_test.csv:1: answer 'Z'" in err and not os.path.exists(bad_out)


# -- prefix training on MMLU ----------------------------------------------------------------
def prefix_mmlu_argv(tmp_path, root, ckpt, mode, *extra):
    return ["--option", "prefix", "--task", "mmlu", "--pretrained-model-path", ckpt,
            "--tokenizer", asset("llama2c/tok512.model"), "--norm", "rmsnorm", "--mmlu_dir", root,
            "--epochs", "3", "--lr", "0.05", "--batch_size", "2", "--mmlu_holdout", "0.5", "--weight_decay", "0.01",
            "--prefix_mode", mode, "--prefix_length", "3", "--save_adapter", str(tmp_path / mode),
            "--log_jsonl", str(tmp_path / f"{mode}.jsonl"), "--mmlu_out", str(tmp_path / f"report-{mode}.json"),
            *extra]


@pytest.mark.parametrize("mode", ["prefix", "prompt", "ptuning2"])
def test_prefix_task_mmlu_end_to_end(tmp_path, mode):
    from minillama.prefix import load_adapter
    root = make_fixture(tmp_path / "mmlu")
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_model(vocab_size=512, max_seq_len=512), ckpt)
    extra = ["--mmlu_mode", "generate", "--mmlu_new_tokens", "2"] if mode == "prefix" else []
    assert main(prefix_mmlu_argv(tmp_path, root, ckpt, mode, *extra)) == 0  # run_llama.py --option prefix --task mmlu
    report = json.load(open(tmp_path / f"report-{mode}.json"))
    assert report["data"]["n_train"] == 2 and report["data"]["n_heldout"] == 3 and report["data"]["n_test"] == 5
    losses = [h["train_loss"] for h in report["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the answer-letter loss goes down
    log = [json.loads(line) for line in open(tmp_path / f"{mode}.jsonl")]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [0, 1, 2]
    modes = ["logits", "generate"] if mode == "prefix" else ["logits"]
    assert {(r["model"], r["mode"]) for r in log if r["event"] == "test"} == \
        {(w, m) for w in ("baseline", "tuned") for m in modes}
    for m in modes:
        assert set(report["baseline"][m]) >= {"micro_accuracy", "macro_accuracy", "refusal_rate"}
    # the prefix changes the letter scores; the saved adapter reproduces the tuned ones
    tok = load_tokenizer(asset("llama2c/tok512.model"))
    qs = mmlu_data.flatten(mmlu_data.load_split(root, "test"))
    base = tiny_model(vocab_size=512, max_seq_len=512)
    prompts, _ = mmlu.encode_questions(tok, qs, {}, 0, False, 509)
    ids = mmlu.letter_token_ids(tok)
    before = mmlu.score_logits(base, prompts, ids, tok.pad_id, progress=False)
    after = mmlu.score_logits(load_adapter(base, str(tmp_path / mode)), prompts, ids, tok.pad_id, progress=False)
    assert (before - after).abs().max() > 1e-3
    assert report["tuned"]["logits"]["correct"] == sum(
        "ABCD"[i] == q.answer for i, q in zip(after.argmax(-1).tolist(), qs))
    # --load_adapter: no training, the saved prefix evaluated against the baseline
    assert main(prefix_mmlu_argv(tmp_path, root, ckpt, mode, "--load_adapter", str(tmp_path / mode))) == 0
    again = json.load(open(tmp_path / f"report-{mode}.json"))
    assert again["history"] == [] and again["tuned"]["logits"]["correct"] == report["tuned"]["logits"]["correct"]
    out = str(tmp_path / "eval.json")  # --option mmlu evaluates the adapter too
    assert main(["--option", "mmlu", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
                 "--norm", "rmsnorm", "--mmlu_dir", root, "--load_adapter", str(tmp_path / mode),
                 "--mmlu_out", out]) == 0
    assert json.load(open(out))["correct"] == report["tuned"]["logits"]["correct"]


def test_holdout_split_is_per_subject_disjoint_and_seeded():
    q = lambda s, i: Question(s, f"{s}{i}?", ("a", "b", "c", "d"), "A", f"{s}:{i}")  # noqa: E731
    data = {"x": [q("x", i) for i in range(10)], "y": [q("y", i) for i in range(3)], "z": [q("z", 0)]}
    train, held = mmlu.split_holdout(data, 0.2, seed=7)
    assert sorted(h.subject for h in held) == ["x", "x", "y"]  # round(0.2 n), at least one; "z" too small
    assert not set(train) & set(held) and set(train) | set(held) == set(mmlu_data.flatten(data))
    assert mmlu.split_holdout(data, 0.2, seed=7) == (train, held) and mmlu.split_holdout(data, 0.2, 8) != (train, held)
    with pytest.raises(MinillamaError, match="--mmlu_holdout"):
        mmlu.split_holdout(data, 1.0, 0)


def test_chat_prompts_and_scoring_with_the_llama3_tokenizer(tmp_path):
    tok = load_tokenizer(asset("llama3/tokenizer.model"))
    root = make_fixture(tmp_path)
    qs = mmlu_data.flatten(mmlu_data.load_split(root, "test", ["gamma"]))
    dev = mmlu_data.load_split(root, "dev")
    prompts, _ = mmlu.encode_questions(tok, qs, dev, 1, True, 10_000)
    message = mmlu_data.build_chat_message(qs[0], dev["gamma"][:1])
    assert prompts[0] == tok.format_chat([{"role": "user", "content": message}], add_generation_prompt=True)
    assert tok.decode(prompts[0]).endswith(mmlu_data.CHAT_INSTRUCTION +
                                           "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    model = tiny_model(vocab_size=tok.vocab_size, max_seq_len=512)
    report, records = mmlu.evaluate(model, tok, qs, dev, k_shot=1, chat=True, progress=False)
    chat_ids = mmlu.letter_token_ids(tok, chat=True)
    for p, r in zip(prompts, records):  # "A".."D" opening the assistant turn, read after the header
        want = model(torch.tensor([p]))[0][0, -1, chat_ids]
        assert r["scores"] == pytest.approx(want.tolist(), abs=1e-4)  # records keep 4 decimals
    with pytest.raises(MinillamaError, match="--chat needs a Llama 3 tokenizer"):
        mmlu.encode_questions(load_tokenizer(asset("llama2c/tok512.model")), qs, dev, 0, True, 100)


def test_wandb_is_optional(capsys, monkeypatch):
    import argparse
    import sys
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: `import wandb` raises ImportError
    assert mmlu.open_wandb(argparse.Namespace(wandb=True), "test") is None
    assert "wandb package is not installed" in capsys.readouterr().err
    assert mmlu.open_wandb(argparse.Namespace(wandb=False), "test") is None
