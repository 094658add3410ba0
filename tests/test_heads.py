"""Answer readers (minillama/heads.py) against brute force: the cls head reads the last
real token (values and gradients), the verbalizer equals the per-label likelihoods."""
import pytest
import torch
import torch.nn.functional as F

from conftest import asset, tiny_model
from minillama.data import Example, Split
from minillama.adapters import PrefixConfig, attach
from minillama.adapters.multi import MultiAdapter
from minillama.heads import HeadClassifier, RowReader, VerbalizerClassifier
from minillama.tasks.classify import course_prompt
from minillama.tokenizer import load_tokenizer
from minillama.train import predict


def test_head_classifier_reads_last_real_token_with_full_gradients():
    """HeadClassifier (left-pad + last_only: the last block computes one position)
    equals the head on a full forward's last real token, values and gradients."""
    model = tiny_model()
    clf = HeadClassifier(model, 64, 3)
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 8, 0, 0, 0]])
    mask = (ids != 0).long()
    out = clf(ids, mask)
    out.square().sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in clf.named_parameters()}
    clf.zero_grad()
    _, hidden = model(ids, mask)  # every position, right-padded
    last = mask.sum(1) - 1
    expected = clf.head(hidden[torch.arange(3), last])
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for n, p in clf.named_parameters():
        torch.testing.assert_close(fast_grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def brute_force_scores(model, prompts, label_ids):
    """log P(label | prompt), one unpadded sequence per (prompt, label)."""
    scores = torch.zeros(len(prompts), len(label_ids))
    for i, p in enumerate(prompts):
        for k, lab in enumerate(label_ids):
            seq = torch.tensor([p + lab])
            logits, _ = model(seq)
            logp = F.log_softmax(logits[0].double(), dim=-1)
            scores[i, k] = sum(logp[len(p) - 1 + j, t] for j, t in enumerate(lab))
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("names", [["awful", "bad", "average", "good", "excellent"], ["bad", "good"]])
def test_verbalizer_equals_brute_force_likelihood(names):
    tok = load_tokenizer(asset("llama2c/tok512.model"))
    model = tiny_model(vocab_size=512, max_seq_len=128)
    label_ids = [tok.encode(n, bos=False) for n in names]
    assert max(len(ids) for ids in label_ids) > 1  # the multi-token path is exercised
    texts = ["a lovely film", "dull and far too long , honestly", "meh"]
    prompts = [tok.encode(f"{t} {course_prompt(names)}", bos=True) for t in texts]
    split = Split([Example(0, t, i + 1) for i, t in enumerate(texts)], prompts, tok.pad_id)
    clf = VerbalizerClassifier(model, label_ids)
    batch = next(split.batches(3))
    with torch.no_grad():
        scores = clf(batch.input_ids, batch.attention_mask)
        expected = brute_force_scores(model, prompts, label_ids)
    assert torch.allclose(scores, expected, atol=1e-4)
    assert predict(clf, split, 2, torch.device("cpu"), progress=False).tolist() == expected.argmax(1).tolist()


def test_verbalizer_single_token_path_equals_brute_force():
    model = tiny_model()
    label_ids = [[11], [12], [13]]  # one token each: a single forward pass scores them all
    prompts = [[1, 40, 41, 42], [1, 50], [1, 60, 61]]
    split = Split([Example(0, "", i + 1) for i in range(3)], prompts, pad_id=0)
    batch = next(split.batches(3))
    with torch.no_grad():
        scores = VerbalizerClassifier(model, label_ids)(batch.input_ids, batch.attention_mask)
        assert torch.allclose(scores, brute_force_scores(model, prompts, label_ids), atol=1e-4)


def base_and_two_prefixes(seed: int, length_a: int, length_b: int):
    """A tiny base and two deep prefixes on it, at random values (not zero: rows must differ)."""
    torch.manual_seed(seed)
    base = tiny_model()
    a, b = attach(base, PrefixConfig(length=length_a)).eval(), attach(base, PrefixConfig(length=length_b)).eval()
    with torch.no_grad():
        a.kv.normal_()
        b.kv.normal_()
    return base, a, b


def test_row_reader_equals_each_rows_own_classifier():
    """One mixed batch, rows of two prefix adapters (a cls head; label names of one to three
    tokens) and of the base alone: each row's scores equal its own classifier's on it alone."""
    base, a, b = base_and_two_prefixes(0, 4, 2)
    head = torch.nn.Linear(64, 3)
    names_b, names_base = [[5], [6, 7], [8, 9, 10]], [[11], [12, 13]]
    reader = RowReader(MultiAdapter(base, {"a": a, "b": b}), {"a": head, "b": names_b, None: names_base})
    own = {"a": HeadClassifier(a, 64, 3), "b": VerbalizerClassifier(b, names_b), None: VerbalizerClassifier(base, names_base)}
    own["a"].head = head
    ids = torch.tensor([[1, 20, 21, 22, 0], [1, 30, 31, 0, 0], [1, 40, 41, 42, 43], [1, 50, 0, 0, 0]])
    mask = (ids != 0).long()
    rows = ["a", "b", None, "b"]  # None: the base alone
    with torch.no_grad():
        scores = reader(ids, mask, rows)
        for r, name in enumerate(rows):
            n = int(mask[r].sum())
            want = own[name](ids[r:r + 1, :n], mask[r:r + 1, :n])[0]
            torch.testing.assert_close(scores[r], want, atol=1e-5, rtol=0)


def test_mean_head_reads_the_mean_of_the_real_tokens():
    """pool "mean": the head on the average final hidden state of each row's real tokens,
    right padding ignored (each row equals itself unpadded), values and gradients."""
    torch.manual_seed(0)
    model = tiny_model()
    clf = HeadClassifier(model, 64, 3, pool="mean")
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 8, 0, 0, 0]])
    mask = (ids != 0).long()
    out = clf(ids, mask)
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in clf.named_parameters()}
    clf.zero_grad()
    expected = []
    for r in range(3):
        n = int(mask[r].sum())
        _, hidden = model(ids[r:r + 1, :n])  # the row alone, no padding
        expected.append(clf.head(hidden[0].mean(dim=0)))
    expected = torch.stack(expected)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for n, p in clf.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)
    last = clf.head(model(ids, mask)[1][torch.arange(3), mask.sum(1) - 1])
    assert not torch.allclose(out, last, atol=1e-3)  # a different reading from the last token's


def test_row_reader_mean_head_equals_the_rows_own_classifier():
    base, a, b = base_and_two_prefixes(1, 3, 5)
    head_a, head_b = torch.nn.Linear(64, 2), torch.nn.Linear(64, 4)
    reader = RowReader(MultiAdapter(base, {"a": a, "b": b}), {"a": head_a, "b": head_b}, {"a": "mean", "b": "last"})
    own = {"a": HeadClassifier(a, 64, 2, pool="mean"), "b": HeadClassifier(b, 64, 4)}
    own["a"].head, own["b"].head = head_a, head_b
    ids = torch.tensor([[1, 20, 21, 22, 0], [1, 30, 31, 0, 0], [1, 40, 41, 42, 43]])
    mask = (ids != 0).long()
    rows = ["a", "b", "a"]
    with torch.no_grad():
        scores = reader(ids, mask, rows)
        for r, name in enumerate(rows):
            n = int(mask[r].sum())
            torch.testing.assert_close(scores[r], own[name](ids[r:r + 1, :n], mask[r:r + 1, :n])[0], atol=1e-5, rtol=0)
