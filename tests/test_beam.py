"""Beam search (minillama/beam.py) against transformers' generate(num_beams=k, early_stopping=True).

Facts checked: on the same weights minillama's beam search gives exactly
transformers' tokens, for length penalties 1, 0 and 2, without an eos id, with one
that ends hypotheses at many different lengths, and with two; a left-padded batch of
ragged prompts equals transformers on the same padded batch and on each prompt alone;
beam size 1 is greedy decoding; a text-initialised prefix (every mode) searches as the
base model does after reading that text; KVCache.reorder selects and repeats rows;
bad arguments raise a one-line MinillamaError."""
import warnings

import pytest
import torch

from conftest import tiny_model
from minillama.adapters import attach, make_config
from minillama.core.attention import KVCache
from minillama.fast.kv_cache import PreallocatedKVCache
from minillama.core.beam import beam_search
from minillama.errors import MinillamaError
from minillama.formats.hf import save_hf_dir
from minillama.core.sampling import generate

transformers = pytest.importorskip("transformers")

VOCAB, EOS, NEW = 97, 5, 20
LENGTHS = [7, 4, 2, 6, 7]  # ragged prompts, left-padded to 7


def peaked_model(seed: int = 3, eos_boost: float = 2.0, **overrides):
    """A tiny GQA Llama whose weights are large enough that next-token choices are clear
    (so no beam choice hinges on float rounding), with token EOS made likely on average:
    its output row points along the mean final hidden state, so its logit is about
    eos_boost, more or less depending on the context.  With 2.0 (and seed 3), the best
    hypotheses end after 1 to 20 tokens, or not at all, depending on the length penalty."""
    model = tiny_model(seed=seed, vocab_size=VOCAB, tie_embeddings=False, **overrides)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
        _, hidden = model(torch.randint(0, VOCAB, (8, model.config.max_seq_len), generator=g))
        mean = hidden.mean(dim=(0, 1))
        model.output.weight[EOS] = eos_boost * mean / mean.norm() ** 2
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(minillama model, transformers LlamaForCausalLM with the same weights)."""
    ours = peaked_model()
    path = tmp_path_factory.mktemp("hf") / "peaked"
    save_hf_dir(ours, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        theirs = transformers.LlamaForCausalLM.from_pretrained(str(path)).eval()
    theirs.generation_config.bos_token_id = theirs.generation_config.eos_token_id = None  # no hidden stop id
    return ours, theirs


def ragged_prompts(seed: int = 0):
    """Random prompts of LENGTHS, left-padded: ids [5, 7] (pad id 0), mask [5, 7]."""
    g = torch.Generator().manual_seed(seed)
    T = max(LENGTHS)
    ids = torch.randint(EOS + 1, VOCAB, (len(LENGTHS), T), generator=g)
    mask = (torch.arange(T)[None] >= T - torch.tensor(LENGTHS)[:, None]).long()
    return ids * mask, mask


def hf_beam(model, ids, mask, k, length_penalty, eos_id):
    """transformers' beam search; finished hypotheses are filled with the first eos id."""
    stop = [eos_id] if isinstance(eos_id, int) else eos_id
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=NEW, num_beams=k, do_sample=False,
                              length_penalty=length_penalty, early_stopping=True, eos_token_id=stop,
                              pad_token_id=stop[0] if stop else None)


def ended_at(row: torch.Tensor, eos_id) -> int:
    """Generated tokens up to and including the first eos (all of them if none)."""
    hits = torch.isin(row, torch.tensor(eos_id)).nonzero()
    return int(hits[0]) + 1 if len(hits) else len(row)


@pytest.mark.slow
@pytest.mark.parametrize("eos_id", [None, EOS, [EOS, 9]], ids=["no-eos", "eos", "two-eos"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_equals_transformers_on_padded_batch_and_on_each_prompt_alone(models, length_penalty, eos_id):
    ours_model, hf = models
    ids, mask = ragged_prompts()
    T, k = ids.shape[1], 4
    ours = beam_search(ours_model, ids, NEW, k, length_penalty, eos_id, mask)
    assert torch.equal(ours, hf_beam(hf, ids, mask, k, length_penalty, eos_id))
    for row, n in enumerate(LENGTHS):
        alone = hf_beam(hf, ids[row:row + 1, T - n:], None, k, length_penalty, eos_id)[0, n:]
        assert torch.equal(ours[row, T:T + len(alone)], alone), f"prompt {row}"
        if eos_id is not None:  # after its end a row holds the first eos id
            assert (ours[row, T + len(alone):] == ours.new_tensor(eos_id if isinstance(eos_id, int) else eos_id[0])).all()
    if eos_id is not None:  # the test covers hypotheses ending early, at different lengths
        ends = [ended_at(r, eos_id) for r in ours[:, T:]]
        assert min(ends) < NEW and len(set(ends)) >= 2, ends


def test_the_model_exercises_the_rules(models):
    """The test above would also pass for a search that ignored the length penalty or
    a second eos id, if no answer depended on them: make sure some do."""
    model, _ = models
    ids, mask = ragged_prompts()
    answers = {lp: beam_search(model, ids, NEW, 4, lp, EOS, mask) for lp in (0.0, 1.0, 2.0)}
    assert not torch.equal(answers[0.0], answers[1.0]) and not torch.equal(answers[1.0], answers[2.0])
    assert not torch.equal(answers[0.0], beam_search(model, ids, NEW, 4, 0.0, [EOS, 9], mask))


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 5])
def test_other_beam_sizes_equal_transformers(models, k):
    model, hf = models
    ids, mask = ragged_prompts(seed=1)
    assert torch.equal(beam_search(model, ids, NEW, k, 1.0, EOS, mask), hf_beam(hf, ids, mask, k, 1.0, EOS))


@pytest.mark.slow
@pytest.mark.parametrize("eos_id", [None, EOS])
def test_beam_size_1_is_greedy(models, eos_id):
    model, _ = models
    ids, mask = ragged_prompts()
    greedy = generate(model, ids, NEW, eos_id=eos_id, attention_mask=mask)
    assert torch.equal(beam_search(model, ids, NEW, 1, 1.0, eos_id, mask), greedy)
    assert torch.equal(model.generate(ids, NEW, eos_id=eos_id, attention_mask=mask, beam_size=1), greedy)


@pytest.mark.slow
def test_generate_dispatches_to_beam_search(models):
    model, _ = models
    ids, mask = ragged_prompts()
    expected = beam_search(model, ids, NEW, 3, 2.0, EOS, mask)
    assert torch.equal(model.generate(ids, NEW, eos_id=EOS, attention_mask=mask, beam_size=3, length_penalty=2.0),
                       expected)
    assert torch.equal(generate(model, ids, NEW, eos_id=EOS, attention_mask=mask, beam_size=3, length_penalty=2.0),
                       expected)


def test_stops_at_the_models_context():
    model = peaked_model(max_seq_len=16, eos_boost=0.0)
    out = beam_search(model, torch.randint(EOS + 1, VOCAB, (2, 5)), 1000, 3)
    assert out.shape == (2, 16)
    assert torch.equal(beam_search(model, out[:, :5], 0, 3), out[:, :5])  # nothing to add


def text_prompts(text, ids, mask):
    """The base model's view of a prefix that reads `text` first: each row's padding,
    then text, then the row's real tokens (ids, mask: [B, T] left-padded)."""
    pad = mask.new_zeros(len(text))
    rows = [torch.cat([row[m == 0], torch.tensor(text), row[m == 1]]) for row, m in zip(ids, mask)]
    masks = [torch.cat([m[m == 0], pad + 1, m[m == 1]]) for m in mask]
    return torch.stack(rows), torch.stack(masks)


@pytest.mark.parametrize("mode", ["prefix", "ptuning2", "prompt"])
def test_text_prefix_searches_like_the_base_after_reading_the_text(models, mode):
    base, _ = models
    text = [1, 17, 33, 8, 61, 40]
    model = attach(base, make_config(mode, length=len(text), init="text", init_ids=text))
    ids, mask = ragged_prompts()
    T, P = ids.shape[1], len(text)
    for lp in (1.0, 0.0):
        ours = beam_search(model, ids, NEW, 4, lp, EOS, mask)
        base_ids, base_mask = text_prompts(text, ids, mask)
        expected = beam_search(base, base_ids, NEW, 4, lp, EOS, base_mask)
        assert torch.equal(ours[:, :T], ids) and torch.equal(ours[:, T:], expected[:, P + T:])
    # the prefix takes its P positions from the context
    assert beam_search(model, ids, 1000, 2).shape[1] == base.config.max_seq_len - P


@pytest.mark.parametrize("cache_type", [KVCache, PreallocatedKVCache])
def test_cache_reorder_selects_and_repeats_rows(cache_type):
    cache = cache_type(n_layers=2, batch=3, n_kv_heads=2, head_dim=4, capacity=8)
    g = torch.Generator().manual_seed(0)
    keys = [torch.randn(3, 2, 5, 4, generator=g) for _ in range(2)]
    values = [torch.randn(3, 2, 5, 4, generator=g) for _ in range(2)]
    cache.append_mask(torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]))
    for layer in range(2):
        cache.write(layer, keys[layer], values[layer], start=0)
    cache.length = 5
    index = torch.tensor([2, 2, 0, 1])
    expected_mask, capacity = cache.mask[index].clone(), cache.keys[0].shape[2]  # 8 when preallocated
    cache.reorder(index)
    assert cache.batch == 4 and torch.equal(cache.mask, expected_mask)
    for layer in range(2):
        assert torch.equal(cache.keys[layer][:, :, :5], keys[layer][index])
        assert torch.equal(cache.values[layer][:, :, :5], values[layer][index])
        assert cache.keys[layer].shape[2] == capacity  # preallocated: capacity kept, later steps write in place
    k, v = cache.write(0, torch.ones(4, 2, 1, 4), torch.ones(4, 2, 1, 4), start=5)
    assert k.shape == (4, 2, 6, 4) and torch.equal(k[:, :, :5], keys[0][index])


@pytest.mark.parametrize("index", [[0, 0, 2], [2, 1, 2], [1, 0, 2], [0, 1, 2]],
                         ids=["in-place", "in-place", "swap", "identity"])
@pytest.mark.parametrize("cache_type", [KVCache, PreallocatedKVCache])
def test_cache_reorder_in_place_equals_indexing(index, cache_type):
    """Same batch size: rows that change are copied in place when none of them is read by
    another; a swap (rows read by each other) takes the copying path.  Both = indexing."""
    g = torch.Generator().manual_seed(1)
    cache = cache_type(n_layers=1, batch=3, n_kv_heads=2, head_dim=4, capacity=6)
    keys, values = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    cache.append_mask(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]]))
    cache.write(0, keys, values, start=0)
    cache.length = 4
    index = torch.tensor(index)
    expected_mask = cache.mask[index].clone()
    cache.reorder(index)
    assert torch.equal(cache.keys[0][:, :, :4], keys[index]) and torch.equal(cache.values[0][:, :, :4], values[index])
    assert torch.equal(cache.mask, expected_mask)


def test_settle_keeps_first_children_in_their_parents_rows():
    from minillama.fast.kv_cache import settle
    parent = torch.randint(0, 5, (200, 5), generator=torch.Generator().manual_seed(0))
    order = settle(parent)
    assert torch.equal(order.sort(dim=1).values, torch.arange(5).expand(200, 5))  # a permutation per prompt
    settled = parent.gather(1, order)  # the parent of the beam in each slot
    for row, new in zip(parent.tolist(), settled.tolist()):
        assert [s for s in range(5) if new[s] == s] == sorted(set(row))  # every parent's line stays in place


@pytest.mark.parametrize("call,needle", [
    (lambda m, x: beam_search(m, x, 4, beam_size=0), "beam size"),
    (lambda m, x: beam_search(m, x, 4, beam_size=-2), "beam size"),
    (lambda m, x: m.generate(x, 4, beam_size=0), "beam size"),
    (lambda m, x: m.generate(x, 4, beam_size=3, temperature=1.0), "deterministic"),
    (lambda m, x: beam_search(m, x, 4, length_penalty=float("nan")), "length penalty"),
    (lambda m, x: beam_search(m, x, -1), "max_new_tokens"),
    (lambda m, x: beam_search(m, torch.zeros(1, 200, dtype=torch.long), 4), "does not fit"),
])
def test_bad_arguments_raise_one_line(models, call, needle):
    model, _ = models
    with pytest.raises(MinillamaError) as err:
        call(model, torch.randint(EOS + 1, VOCAB, (2, 3)))
    assert needle in str(err.value) and "\n" not in str(err.value)
