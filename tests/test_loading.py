"""minillama/loading.py: a model and the tokenizer that belongs to it, found from any
working directory; a tokenizer of another family or a smaller vocabulary is refused."""
import os
import shutil

import pytest

from conftest import asset, tiny_model
from minillama import MinillamaError, files, load_tokenizer
from minillama.formats import save_checkpoint
from minillama.loading import check_vocab_match, load_model_and_tokenizer


def test_tokenizer_of_another_family():
    llama3_model = tiny_model(vocab_size=128256, dim=16, n_heads=2, n_kv_heads=1, n_layers=1)
    with pytest.raises(MinillamaError, match="llama2 tokenizer"):
        check_vocab_match(llama3_model, load_tokenizer(asset("llama2/tokenizer.model")), "llama3-dir", "tok")
    stories = tiny_model(vocab_size=32000, dim=16, n_heads=2, n_kv_heads=1, n_layers=1)
    with pytest.raises(MinillamaError, match="128256 tokens"):
        check_vocab_match(stories, load_tokenizer(asset("llama3/tokenizer.model")), "stories", "tok")
    check_vocab_match(llama3_model, load_tokenizer(asset("llama3/tokenizer.model")), "llama3-dir", "tok")


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """A repository root holding what setup.sh downloads (a small stories42M.pt and tok512 as
    tokenizer.model), and a working directory elsewhere."""
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    shutil.copy(asset("llama2c/tok512.model"), repo / "tokenizer.model")
    save_checkpoint(tiny_model(seed=1, vocab_size=512), str(repo / "stories42M.pt"))
    monkeypatch.setattr(files, "REPO_ROOT", str(repo))
    monkeypatch.chdir(elsewhere)
    return repo


def test_defaults_are_found_in_the_repository_root_from_another_directory(fake_repo):
    model, tokenizer = load_model_and_tokenizer("stories42M.pt")  # the CLI's defaults, relative
    assert model.config.vocab_size == 512 and tokenizer.vocab_size == 512
    assert tokenizer.sp.vocab_size() == 512


@pytest.mark.parametrize("missing,what", [("stories42M.pt", "checkpoint"), ("tokenizer.model", "tokenizer")])
def test_not_found_names_both_places_looked(fake_repo, missing, what):
    os.remove(fake_repo / missing)
    with pytest.raises(MinillamaError, match=f"{what} not found") as e:
        load_model_and_tokenizer("stories42M.pt")
    message = str(e.value)
    assert os.path.join(os.getcwd(), missing) in message and str(fake_repo / missing) in message, message
    assert "setup.sh" in message and "\n" not in message
