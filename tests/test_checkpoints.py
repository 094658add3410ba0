"""Checkpoints: .pt/.bin round trips, detection from content, `_orig_mod.`,
corrupt and hostile files, and the genuinely pretrained stories260K.bin."""
import os
import struct

import pytest
import torch

from conftest import asset, tiny_model
from minillama import MinillamaError, load_model, load_tokenizer
from minillama.checkpoints import detect_format, save_checkpoint

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


@pytest.mark.parametrize("real,name", [("bin", "x.pt"), ("pt", "x.bin"), ("bin", "noext"), ("pt", "weights.dat")])
def test_format_detected_from_content_not_name(tmp_path, real, name):
    model = tiny_model(seed=5)
    path = str(tmp_path / name)
    save_checkpoint(model, path, fmt=real)
    assert detect_format(path) == f"llama2c_{real}"
    assert torch.equal(load_model(path, norm="rmsnorm")(IDS)[0], model(IDS)[0])


def test_bin_whose_header_starts_like_a_pickle_opcode_is_still_a_bin(tmp_path):
    """dim 640 is 0x280: the file begins with bytes 80 02, as a protocol-2 pickle does."""
    torch.manual_seed(0)
    from minillama.config import LlamaConfig
    from minillama.model import Llama
    model = Llama(LlamaConfig(dim=640, n_layers=1, n_heads=10, vocab_size=16, hidden_dim=8, max_seq_len=4)).eval()
    path = str(tmp_path / "wide.bin")
    save_checkpoint(model, path)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x02"
    assert detect_format(path) == "llama2c_bin"
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(load_model(path, norm="rmsnorm")(ids)[0], model(ids)[0])


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


@pytest.mark.parametrize("content", [b"", b"hello", os.urandom(4096), b"\x00" * 1000,
                                     struct.pack("<7i", 64, 172, 5, 8, 4, 512, 512) + b"\x00" * 100])
def test_garbage_file_raises(tmp_path, content):
    path = str(tmp_path / "garbage.bin")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(MinillamaError):
        load_model(path)


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


def test_load_model_dtype_bfloat16_keeps_tie_and_stays_close(tmp_path):
    model = tiny_model(seed=9)
    path = str(tmp_path / "m.bin")
    save_checkpoint(model, path)
    bf = load_model(path, norm="rmsnorm", dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in bf.parameters())
    assert bf.output.weight.data_ptr() == bf.tok_embeddings.weight.data_ptr()
    ref, _ = model(IDS)
    out, _ = bf(IDS)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=5e-2)
    with pytest.raises(MinillamaError):
        load_model(path, dtype="float8")


@pytest.mark.parametrize("name", ["llama2c/tok512.model", "llama2/tokenizer.model"])
def test_tokenizer_passed_as_checkpoint_raises(name):
    with pytest.raises(MinillamaError, match="not a llama2.c"):
        load_model(asset(name))


def test_directory_without_config_raises(tmp_path):
    with pytest.raises(MinillamaError, match="config.json"):
        load_model(str(tmp_path))
