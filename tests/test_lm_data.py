"""Conditional LM data (minillama/lm_data.py): the [bos] MR [bos] REF [eos] layout and a
loss that reads only REF and eos."""
import torch

from conftest import asset, tiny_model
from minillama.lm_data import LMSplit, pair_ids, prompt_ids
from minillama.pairs_data import Pair
from minillama.tokenizer import load_tokenizer
from minillama.train import IGNORE, lm_loss


def tok():
    return load_tokenizer(asset("llama2c/tok512.model"))


def test_layout_is_bos_source_bos_target_eos():
    t = tok()
    src, ref = "name[Aromi], food[Chinese]", "Aromi serves Chinese food."
    assert prompt_ids(t, src) == [t.bos_id] + t.encode(src, bos=False) + [t.bos_id]
    assert pair_ids(t, src, ref) == prompt_ids(t, src) + t.encode(ref, bos=False) + [t.eos_id]


def test_labels_are_the_next_target_token_and_eos_only():
    t = tok()
    pairs = [Pair("name[A]", "A is a pub.", 2), Pair("name[Blue Spice], area[riverside]", "Blue Spice.", 3)]
    split = LMSplit.from_pairs(t, pairs)
    batch = next(split.batches(2))
    for row, p in enumerate(pairs):
        ids, n_prompt = pair_ids(t, p.source, p.target), len(prompt_ids(t, p.source))
        labels = batch.labels[row].tolist()
        scored = [(i, l) for i, l in enumerate(labels) if l != IGNORE]
        # position t predicts ids[t + 1]: the first scored is the last prompt token (the 2nd bos)
        assert scored == [(i, ids[i + 1]) for i in range(n_prompt - 1, len(ids) - 1)]
        assert scored[-1][1] == t.eos_id and batch.input_ids[row, :len(ids)].tolist() == ids


def test_loss_ignores_the_source():
    """Changing an MR token changes what the model reads, but its own label is never
    scored: replacing the MR tokens' labels leaves the loss unchanged, while changing a
    REF token's label changes it."""
    t = tok()
    model = tiny_model(vocab_size=512, max_seq_len=128)
    split = LMSplit.from_pairs(t, [Pair("name[The Eagle], food[French]", "The Eagle serves French food.", 2)])
    batch = next(split.batches(1))
    logits, _ = model(batch.input_ids, batch.attention_mask)
    loss = lm_loss(logits, batch.labels)
    n_prompt = split.prompt_lengths[0]
    tampered = batch.labels.clone()
    tampered[0, : n_prompt - 1] = 7  # targets inside the MR: must stay unscored ...
    tampered_ignored = torch.where(batch.labels == IGNORE, batch.labels, tampered)
    assert torch.equal(lm_loss(logits, tampered_ignored), loss)
    manual = torch.nn.functional.cross_entropy(logits[0, n_prompt - 1:-1], batch.input_ids[0, n_prompt:])
    torch.testing.assert_close(loss, manual)  # ... and the loss is exactly the REF + eos cross-entropy
    ref_changed = batch.labels.clone()
    ref_changed[0, n_prompt] = (ref_changed[0, n_prompt] + 1) % 512
    assert not torch.equal(lm_loss(logits, ref_changed), loss)
