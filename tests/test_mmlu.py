"""MMLU: the CSV reader (real release and malformed files), the standard prompt,
letter-logit scoring vs a brute-force per-question oracle, answer parsing and
refusals, micro/macro arithmetic, and the CLI end to end (minillama/mmlu_data.py,
minillama/mmlu.py, tasks/mmlu_eval.py, tasks/mmlu_prefix.py)."""

import pytest
import torch

from conftest import asset, tiny_model, make_fixture
from minillama import mmlu_data
from minillama.errors import MinillamaError
from minillama.mmlu_data import Question
from minillama.core.sampling import generate
from minillama import mmlu
from minillama.core.decoding import strip_after_stop as strip_stop
from minillama.tokenizer import load_tokenizer

# tok512 splits " A" into "▁" + "A": the approximation warning is expected here
pytestmark = pytest.mark.filterwarnings("ignore:this tokenizer splits")


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok512():
    return load_tokenizer(asset("llama2c/tok512.model"))


# -- the reader -----------------------------------------------------------------------------


# -- prompts --------------------------------------------------------------------------------


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


@pytest.mark.slow
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


# -- prefix training on MMLU ----------------------------------------------------------------


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


def test_agreement_counts_a_refusal_as_an_answer_of_its_own():
    from minillama.mmlu import agreement
    assert agreement(["A", "A", "A"]) == (True, 0.0)
    assert agreement(["A", "B"]) == (False, 1.0)
    assert agreement(["A", None, "A", None]) == (False, 1.0)
    assert agreement([None, None]) == (True, 0.0)
    agree, entropy = agreement(["A", "B", "C", "D"])
    assert not agree and abs(entropy - 2.0) < 1e-12
