"""Next-token choice: greedy, temperature, epsilon sampling (statistical test), determinism, argument checks."""
import pytest
import torch

from conftest import tiny_model
from minillama.errors import MinillamaError
from minillama.core.sampling import check_sampling_args, sample_next_token

N_DRAWS = 2000


def _chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square goodness of fit; p = Q(df/2, stat/2) (upper regularised gamma)."""
    expected = probs.double() * counts.sum()
    stat = ((counts.double() - expected) ** 2 / expected).sum()
    df = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))


def test_temperature_zero_is_argmax():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next_token(logits, temperature=0.0), logits.argmax(-1))
    # epsilon and a generator do not change greedy decoding
    assert torch.equal(sample_next_token(logits, 0.0, epsilon=0.3), logits.argmax(-1))


def test_very_low_temperature_approaches_argmax():
    logits = torch.randn(32, 50, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next_token(logits, 1e-4, generator=g), logits.argmax(-1))


def _test_logits():
    # 12 tokens with a spread of probabilities, several below and several above epsilon
    return torch.tensor([3.0, 2.6, 2.2, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -4.0])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_epsilon_sampling_drops_rare_tokens_and_keeps_renormalised_frequencies(temperature):
    epsilon = 0.05
    logits = _test_logits()
    probs = torch.softmax(logits / temperature, dim=-1)
    kept = probs >= epsilon
    assert 2 <= int(kept.sum()) < len(logits) - 2  # the test is not trivial
    g = torch.Generator().manual_seed(1234)
    draws = sample_next_token(logits.expand(N_DRAWS, -1), temperature, epsilon, generator=g)
    assert draws.shape == (N_DRAWS,)
    # never a token below epsilon
    assert kept[draws].all(), f"sampled dropped tokens {draws[~kept[draws]].unique().tolist()}"
    # frequencies of the kept tokens match the renormalised probabilities
    counts = torch.bincount(draws, minlength=len(logits))[kept]
    renorm = probs[kept] / probs[kept].sum()
    p = _chi_square_pvalue(counts, renorm)
    assert p > 1e-3, f"chi-square p = {p}: counts {counts.tolist()} vs {(renorm * N_DRAWS).tolist()}"


def test_plain_temperature_sampling_matches_softmax_frequencies_and_reaches_rare_tokens():
    logits = _test_logits()[:6]
    probs = torch.softmax(logits / 1.5, dim=-1)
    g = torch.Generator().manual_seed(99)
    draws = sample_next_token(logits.expand(N_DRAWS, -1), 1.5, generator=g)
    counts = torch.bincount(draws, minlength=6)
    assert (counts > 0).all()
    assert _chi_square_pvalue(counts, probs) > 1e-3


def test_epsilon_above_every_probability_keeps_the_argmax():
    logits = torch.zeros(4, 10)
    logits[torch.arange(4), torch.tensor([1, 5, 7, 2])] = 0.1  # near-uniform: every p ~ 0.1
    g = torch.Generator().manual_seed(0)
    out = sample_next_token(logits, 1.0, epsilon=0.5, generator=g)
    assert out.tolist() == [1, 5, 7, 2]


def test_same_seed_same_samples():
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(2))
    a = sample_next_token(logits, 1.0, 0.02, generator=torch.Generator().manual_seed(7))
    b = sample_next_token(logits, 1.0, 0.02, generator=torch.Generator().manual_seed(7))
    c = sample_next_token(logits, 1.0, 0.02, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.slow
def test_generate_is_deterministic_under_a_seed():
    model = tiny_model()
    prompt = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(3))
    run = lambda seed, eps=None: model.generate(prompt, 15, temperature=1.0, epsilon=eps,
                                                generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(5), run(5))
    assert torch.equal(run(5, 0.01), run(5, 0.01))
    assert not torch.equal(run(5), run(6))
    # global seeding works as well (the CLI's --seed)
    torch.manual_seed(11)
    x = model.generate(prompt, 10, temperature=1.0)
    torch.manual_seed(11)
    assert torch.equal(x, model.generate(prompt, 10, temperature=1.0))


@pytest.mark.parametrize("temperature,epsilon", [(-0.1, None), (float("nan"), None), (None, None),
                                                 (1.0, -0.01), (1.0, 1.0), (1.0, 1.5), (1.0, float("nan"))])
def test_check_sampling_args_rejects_bad_values(temperature, epsilon):
    with pytest.raises(MinillamaError):
        check_sampling_args(temperature, epsilon)


def test_generate_rejects_bad_sampling_args():
    model = tiny_model()
    with pytest.raises(MinillamaError):
        model.generate(torch.ones(1, 3, dtype=torch.long), 2, temperature=1.0, epsilon=2.0)


@pytest.mark.parametrize("temperature,epsilon", [(0.0, None), (1.0, None), (0.5, 0.0), (1.0, 0.999)])
def test_check_sampling_args_accepts_valid_values(temperature, epsilon):
    check_sampling_args(temperature, epsilon)
