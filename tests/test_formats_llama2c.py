"""llama2.c checkpoints (minillama/formats/llama2c.py): .pt/.bin round trips,
`_orig_mod.`, corrupt, malformed and hostile files (one line, exit 2, nothing
written, through the CLI too), and the genuinely pretrained stories260K.bin."""
import os

import pytest
import torch

from conftest import asset, tiny_model
from minillama import MinillamaError, load_model, load_tokenizer
from minillama.cli import main
from minillama.formats import detect_format, save_checkpoint

STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."

IDS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))

VARIANTS = {
    "tied_gqa": dict(tie_embeddings=True, n_kv_heads=2),
    "untied_gqa": dict(tie_embeddings=False, n_kv_heads=1),
    "untied_mha": dict(tie_embeddings=False, n_kv_heads=4),
}


def _perturb_norms(model):
    """Non-unit norm gains, so a loader that drops them is caught."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("fmt", ["pt", "bin"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_gives_identical_logits(tmp_path, fmt, variant):
    model = _perturb_norms(tiny_model(seed=3, **VARIANTS[variant]))
    path = str(tmp_path / f"model.{fmt}")
    save_checkpoint(model, path)
    assert detect_format(path) == f"llama2c_{fmt}"
    loaded = load_model(path, norm="rmsnorm")
    c, lc = model.config, loaded.config
    for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "max_seq_len",
                  "tie_embeddings"):
        assert getattr(lc, field) == getattr(c, field), field
    assert (loaded.output.weight.data_ptr() == loaded.tok_embeddings.weight.data_ptr()) == c.tie_embeddings
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    a, ha = model(IDS)
    b, hb = loaded(IDS)
    assert torch.equal(a, b) and torch.equal(ha, hb)
    assert not os.path.exists(path + ".tmp")


def test_layernorm_model_round_trip(tmp_path):
    model = _perturb_norms(tiny_model(seed=4, norm="layernorm"))
    path = str(tmp_path / "ln.pt")
    save_checkpoint(model, path)
    assert torch.equal(load_model(path, norm="layernorm")(IDS)[0], model(IDS)[0])
    assert load_model(path).config.norm == "layernorm"  # the course's default for stories checkpoints


def test_orig_mod_prefix_is_stripped(tmp_path):
    model = tiny_model(seed=6)
    c = model.config
    state = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    args = dict(dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                vocab_size=c.vocab_size, multiple_of=c.multiple_of, max_seq_len=c.max_seq_len, dropout=0.0)
    path = str(tmp_path / "compiled.pt")
    # llama2.c's train.py also stores training state beside the weights
    torch.save({"model_args": args, "model": state, "iter_num": 7, "best_val_loss": 1.5,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    loaded = load_model(path, norm="rmsnorm")
    assert torch.equal(loaded(IDS)[0], model(IDS)[0])


def test_truncated_bin_raises(tmp_path):
    path = str(tmp_path / "model.bin")
    save_checkpoint(tiny_model(seed=7), path)
    data = open(path, "rb").read()
    for cut in (len(data) - 4, len(data) // 2, 20):
        bad = str(tmp_path / f"cut{cut}.bin")
        with open(bad, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(MinillamaError):
            load_model(bad)


def test_truncated_pt_raises(tmp_path):
    path = str(tmp_path / "model.pt")
    save_checkpoint(tiny_model(seed=7), path)
    data = open(path, "rb").read()
    bad = str(tmp_path / "cut.pt")
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(MinillamaError):
        load_model(bad)


def test_missing_file_and_wrong_structure_raise(tmp_path):
    with pytest.raises(MinillamaError):
        load_model(str(tmp_path / "absent.pt"))
    path = str(tmp_path / "plain.pt")
    torch.save({"weights": torch.zeros(3)}, path)  # a valid zip pickle, but not a llama2.c checkpoint
    with pytest.raises(MinillamaError):
        load_model(path)


class _Hostile:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_hostile_pickle_is_refused_without_running(tmp_path, zipfile_format):
    marker = str(tmp_path / "PWNED")
    model = tiny_model(seed=8)
    path = str(tmp_path / "hostile.pt")
    payload = {"model_args": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, multiple_of=16,
                                  max_seq_len=64), "model": model.state_dict(), "evil": _Hostile(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=zipfile_format)
    assert not os.path.exists(marker)
    with pytest.raises(MinillamaError):
        load_model(path)
    assert not os.path.exists(marker), "the pickle's code ran"
    # sanity: the file really is hostile (a full unpickle would run it)
    torch.load(path, weights_only=False)["evil"].close()
    assert os.path.exists(marker)


@pytest.mark.slow
def test_stories260k_greedily_tells_the_manifest_story(tmp_path):
    model = load_model(asset("llama2c/stories260K.bin"), norm="rmsnorm")
    tok = load_tokenizer(asset("llama2c/tok512.model"))
    c = model.config
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len) == \
        (64, 172, 5, 8, 4, 512, 512)
    assert c.tie_embeddings and tok.vocab_size == 512
    bos = torch.tensor([[tok.bos_id]])
    out = model.generate(bos, max_new_tokens=40)
    text = tok.decode(out[0, 1:].tolist())
    assert text.startswith(STORY), text
    assert torch.equal(model.generate(bos, max_new_tokens=40, use_cache=False), out)
    # converted to .pt, it tells the same story
    path = str(tmp_path / "stories260K.pt")
    save_checkpoint(model, path)
    assert torch.equal(load_model(path, norm="rmsnorm").generate(bos, max_new_tokens=40), out)


# -- bad input through the CLI: one line, exit code 2, nothing written ----------------------
def generate_argv(ckpt_path, tokenizer, out_dir):
    return ["--option", "generate", "--pretrained-model-path", str(ckpt_path), "--tokenizer", str(tokenizer),
            "--max_new_tokens", "2", "--generated_sentence_low_temp_out", os.path.join(out_dir, "temp-0.txt"),
            "--generated_sentence_high_temp_out", os.path.join(out_dir, "temp-1.txt")]


def cli_error(tmp_path, ckpt_path, capsys) -> str:
    """The CLI's one-line error for ckpt_path, after checking exit code 2 and no output files."""
    out = tmp_path / "out"
    out.mkdir()
    assert main(generate_argv(ckpt_path, asset("llama2c/tok512.model"), str(out))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert os.listdir(out) == []
    return err


@pytest.mark.parametrize("field,value", [("dim", "64"), ("dim", 64.5), ("dim", None), ("n_layers", True),
                                         ("n_heads", 0), ("max_seq_len", "64"), ("norm_eps", "1e-5")])
def test_model_args_of_the_wrong_kind_are_named(tmp_path, capsys, field, value):
    model = tiny_model(seed=10)
    c = model.config
    args = dict(dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                vocab_size=c.vocab_size, multiple_of=c.multiple_of, max_seq_len=c.max_seq_len, norm_eps=1e-5)
    args[field] = value
    path = tmp_path / "odd.pt"
    torch.save({"model_args": args, "model": model.state_dict()}, path)
    err = cli_error(tmp_path, path, capsys)
    assert str(path) in err and "model_args" in err and repr(field) in err, err
    assert "must be a positive" in err or "lacks" in err, err


def test_inconsistent_model_args_are_one_line(tmp_path, capsys):
    """Each value fine alone, but 4 heads do not divide dim 62."""
    model = tiny_model(seed=10)
    args = dict(dim=62, n_layers=2, n_heads=4, vocab_size=97)
    path = tmp_path / "odd.pt"
    torch.save({"model_args": args, "model": model.state_dict()}, path)
    err = cli_error(tmp_path, path, capsys)
    assert str(path) in err and "not divisible" in err, err


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_hostile_pickle_message_refuses_and_never_advises_weights_only_false(tmp_path, capsys, zipfile_format):
    marker = str(tmp_path / "PWNED")
    path = tmp_path / "hostile.pt"
    torch.save({"model_args": dict(dim=64, n_layers=2, n_heads=4, vocab_size=97),
                "model": tiny_model(seed=8).state_dict(), "evil": _Hostile(marker)}, path,
               _use_new_zipfile_serialization=zipfile_format)
    err = cli_error(tmp_path, path, capsys)
    assert str(path) in err and "weights_only" not in err, err
    if zipfile_format:  # torch reads it and finds the code; the legacy format is refused before reading
        assert "refused" in err and "contains pickled code" in err and "io.open" in err, err
    else:
        assert "legacy" in err and "does not read" in err, err
    assert not os.path.exists(marker), "the pickle's code ran"
