"""The prefix family vs its oracle, the base model reading real text first: prefix
tuning, P-tuning v2 and prompt tuning (minillama/adapters/prefix.py, adapters/prompt.py)."""
import time

import pytest
import torch

from conftest import asset, tiny_model, word_group_task
from minillama.errors import MinillamaError
from minillama.core.optimizer import AdamW
from minillama.adapters import (PrefixConfig, PrefixModel, PrefixTuningConfig, PromptTuningConfig, attach,
                                parameter_counts)
from minillama.core.sampling import generate

CONFIGS = {"prefix": PrefixTuningConfig, "ptuning2": PrefixConfig, "prompt": PromptTuningConfig}
ALL = list(CONFIGS)
TEXT = [1, 17, 5, 42, 8, 23]  # the "text" a text-initialised prefix stands for


def ids(*rows):
    return torch.tensor(rows)


def mlp(method, hidden):
    """Prefix tuning's MLP width, as settings of `method`'s config (the others have no MLP)."""
    return {"hidden": hidden} if method == "prefix" else {}


@pytest.mark.parametrize("method", ALL)
def test_text_init_equals_reading_the_text_first(method):
    base = tiny_model()
    x = torch.randint(0, 97, (3, 7))
    full_logits, full_hidden = base(torch.cat([ids(TEXT).expand(3, -1), x], dim=1))
    model = attach(base, CONFIGS[method](length=len(TEXT), init="text", init_ids=TEXT))
    logits, hidden = model(x)
    assert logits.shape == (3, 7, 97) and hidden.shape == (3, 7, 64)
    torch.testing.assert_close(logits, full_logits[:, len(TEXT):], atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden, full_hidden[:, len(TEXT):], atol=1e-5, rtol=0)


def test_text_init_repeats_or_truncates_to_the_length():
    base = tiny_model()
    x = torch.randint(0, 97, (1, 5))
    for length in (4, 9):
        text = (TEXT * 2)[:length]
        want = base(torch.cat([ids(text), x], dim=1))[0][:, length:]
        for config in CONFIGS.values():
            got = attach(base, config(length=length, init="text", init_ids=TEXT))(x)[0]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


class WordTokenizer:
    def encode(self, text, bos=True, eos=False):
        return [1] * bos + [10 + len(w) for w in text.split()]


def test_text_init_from_a_tokenizer_and_vocab_init():
    base = tiny_model()
    x = torch.randint(0, 97, (1, 5))
    text_ids = [1, 13, 12, 15]  # WordTokenizer("the an three")
    want = base(torch.cat([ids(text_ids), x], dim=1))[0][:, 4:]
    got = attach(base, PrefixTuningConfig(length=4, init="text", init_text="the an three"), WordTokenizer())(x)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.manual_seed(3)
    vocab_ids = torch.randint(0, 97, (4,))
    want = base(torch.cat([vocab_ids[None], x], dim=1))[0][:, 4:]
    torch.manual_seed(3)
    torch.testing.assert_close(attach(base, PrefixConfig(length=4, init="vocab"))(x)[0], want, atol=1e-5, rtol=0)
    with pytest.raises(MinillamaError, match="prefix_init_text"):
        PrefixTuningConfig(length=4, init="text")


@pytest.mark.parametrize("method", ALL)
def test_padded_batch_equals_unpadded_singles(method):
    base = tiny_model()
    torch.manual_seed(1)
    model = attach(base, CONFIGS[method](length=5, init="random"))
    seqs = [torch.randint(2, 97, (n,)) for n in (6, 3, 8)]
    singles = [model(s[None])[0][0] for s in seqs]
    for side in ("right", "left"):
        batch = torch.zeros(3, 8, dtype=torch.long)
        mask = torch.zeros(3, 8, dtype=torch.long)
        for i, s in enumerate(seqs):
            span = slice(0, len(s)) if side == "right" else slice(8 - len(s), 8)
            batch[i, span], mask[i, span] = s, 1
        logits = model(batch, mask)[0]
        for i, s in enumerate(seqs):
            span = slice(0, len(s)) if side == "right" else slice(8 - len(s), 8)
            torch.testing.assert_close(logits[i, span], singles[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ALL)
def test_only_the_prefix_trains_and_base_stays_bit_identical(method):
    base = tiny_model()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = attach(base, CONFIGS[method](length=4, **mlp(method, 32)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(not p.requires_grad for p in base.parameters())
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    start = model.prefix_tensor().detach().clone()
    x = torch.randint(0, 97, (2, 6))
    for _ in range(3):
        loss = model(x)[0].logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
        assert all(p.grad is None for p in base.parameters())
        opt.step()
    assert not torch.equal(model.prefix_tensor(), start)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    counts = parameter_counts(model)
    assert counts["base"] == base.num_parameters() and counts["trainable"] == sum(p.numel() for p in trainable)


def test_fold_keeps_outputs_and_leaves_only_the_prefix():
    base = tiny_model()
    torch.manual_seed(2)
    model = attach(base, PrefixTuningConfig(length=5, hidden=32))
    opt = AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 97, (2, 6))
    model(x)[0].square().mean().backward()
    opt.step()  # move away from the init, so MLP(P') is not just the offset
    before = model(x)[0]
    model.finalize()  # folds the MLP away
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["kv"]
    assert parameter_counts(model)["trainable"] == 2 * 2 * 2 * 5 * 16  # L * (k, v) * KV * P * hd
    torch.testing.assert_close(model(x)[0], before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ALL)
def test_generate_with_cache_equals_without_and_equals_reading_the_text(method):
    base = tiny_model(max_seq_len=24)
    model = attach(base, CONFIGS[method](length=len(TEXT), init="text", init_ids=TEXT))
    prompt = torch.randint(2, 97, (2, 4))
    cached = generate(model, prompt, 12)
    assert torch.equal(cached, generate(model, prompt, 12, use_cache=False))
    assert torch.equal(cached, model.generate(prompt, 12))
    from_text = generate(base, torch.cat([ids(TEXT).expand(2, -1), prompt], dim=1), 12)
    assert torch.equal(cached, from_text[:, len(TEXT):])
    # the prefix takes room from the context: generation stops at the base's max_seq_len
    assert generate(model, prompt, 1000).shape[1] == 24 - len(TEXT)


@pytest.mark.slow  # long training
def test_prefix_tuning_learns_a_task_with_a_verbalizer():
    """A frozen pretrained stories260K reads word_group_task's sequences and must answer
    with the group's label token.  Trained on 32 sequences, the prefix must classify 64
    unseen ones well above chance (0.5)."""
    from minillama.formats import load_model
    base = load_model(asset("llama2c/stories260K.bin"), norm="rmsnorm")
    (x, y), (x_test, y_test), label_ids = word_group_task()  # label k is answered by token label_ids[k]
    torch.manual_seed(0)
    model = attach(base, PrefixTuningConfig(length=8, hidden=128))
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    start = time.time()
    for _ in range(40):
        scores = model(x, last_only=True)[0][:, -1, label_ids]  # LM logits of the label tokens [32, 2]
        loss = torch.nn.functional.cross_entropy(scores, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model(x_test, last_only=True)[0][:, -1, label_ids].argmax(-1) == y_test).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f} after 40 steps, {time.time() - start:.1f}s")
    assert accuracy >= 0.85, f"prefix tuning stayed near chance: {accuracy:.3f} (loss {loss.item():.3f})"


@pytest.mark.parametrize("length", [0, -3, True, 2.0])
def test_a_prefix_length_below_one_is_refused_by_the_config(length):
    for config in (PrefixConfig, PrefixTuningConfig, PromptTuningConfig):
        with pytest.raises(MinillamaError, match=r"^--prefix_length must be a positive number of virtual tokens, got "):
            config(length=length)


def test_a_prefix_as_long_as_the_context_is_refused_by_its_config():
    PrefixConfig(length=63).check_fits(64)
    with pytest.raises(MinillamaError, match=r"^--prefix_length must be below the model's context of 64, got 64$"):
        PrefixConfig(length=64).check_fits(64)


def test_prefix_model_is_attach_by_mode():
    """PrefixModel(base, mode, length, ...), the earlier releases' constructor, builds what attach does."""
    base = tiny_model()
    x = torch.randint(0, 97, (2, 5))
    text = dict(init="text", init_ids=TEXT)
    for (mode, length), kw, cfg in [
            (("prefix", 4), dict(prefix_hidden=32), PrefixTuningConfig(length=4, hidden=32)),
            (("prefix", 4), dict(reparam=False, **text), PrefixConfig(length=4, **text)),  # P-tuning v2
            (("ptuning2", 3), dict(prefix_hidden=32), PrefixConfig(length=3)),  # no MLP to size
            (("prompt", 3), dict(init="vocab"), PromptTuningConfig(length=3, init="vocab"))]:
        torch.manual_seed(5)
        old = PrefixModel(base, mode, length, **kw)
        torch.manual_seed(5)
        new = attach(base, cfg)
        assert type(old) is type(new) and old.cfg == new.cfg
        assert torch.equal(old(x)[0], new(x)[0])
    with pytest.raises(MinillamaError, match="unknown adaptation method 'deep'"):
        PrefixModel(base, "deep", 4)
