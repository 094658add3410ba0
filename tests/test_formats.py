"""minillama/formats/__init__.py: the format from the content (never the name),
one save_checkpoint for all four formats, and load_model's dtype and device checks."""
import os
import struct

import pytest
import torch

from conftest import asset, tiny_model
from minillama import MinillamaError, load_model
from minillama.formats import check_dtype_on_device, detect_format, read_checkpoint, save_checkpoint

IDS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
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
    from minillama.core.config import LlamaConfig
    from minillama.core.model import Llama
    model = Llama(LlamaConfig(dim=640, n_layers=1, n_heads=10, vocab_size=16, hidden_dim=8, max_seq_len=4)).eval()
    path = str(tmp_path / "wide.bin")
    save_checkpoint(model, path)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x02"
    assert detect_format(path) == "llama2c_bin"
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(load_model(path, norm="rmsnorm")(ids)[0], model(ids)[0])


@pytest.mark.parametrize("content", [b"", b"hello", os.urandom(4096), b"\x00" * 1000,
                                     struct.pack("<7i", 64, 172, 5, 8, 4, 512, 512) + b"\x00" * 100])
def test_garbage_file_raises(tmp_path, content):
    path = str(tmp_path / "garbage.bin")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(MinillamaError):
        load_model(path)


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
    with pytest.raises(MinillamaError, match="no config.json"):
        load_model(str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("fmt,detected", [("pt", "llama2c_pt"), ("bin", "llama2c_bin"), ("hf", "hf_dir"),
                                          ("meta", "meta_dir")])
def test_save_checkpoint_writes_every_format_back_to_the_same_logits(tmp_path, fmt, detected):
    pytest.importorskip("safetensors")
    model = tiny_model(seed=11, tie_embeddings=False)
    path = str(tmp_path / f"model.{fmt}")
    save_checkpoint(model, path, fmt=fmt)
    assert detect_format(path) == detected
    loaded = load_model(path, norm="rmsnorm")
    torch.testing.assert_close(loaded(IDS)[0], model(IDS)[0], rtol=0, atol=1e-6)


def test_read_checkpoint_converts_while_reading(tmp_path):
    path = str(tmp_path / "m.pt")
    save_checkpoint(tiny_model(seed=12), path)
    config, state = read_checkpoint(path, torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert config.tie_embeddings and state["output.weight"] is state["tok_embeddings.weight"]


def test_unknown_save_format_is_one_clear_error(tmp_path):
    with pytest.raises(MinillamaError, match="unknown checkpoint format 'gguf'"):
        save_checkpoint(tiny_model(), str(tmp_path / "m.gguf"), fmt="gguf")
    assert os.listdir(tmp_path) == []


def test_missing_checkpoint_is_not_found(tmp_path):
    with pytest.raises(MinillamaError, match="checkpoint not found.*check the path given to --pretrained-model-path"):
        detect_format(str(tmp_path / "absent.pt"))


def test_missing_checkpoint_hint_names_what_was_asked_for(tmp_path):
    """The hint is about the checkpoint asked for: a Llama 3.2 directory is not told about stories42M."""
    with pytest.raises(MinillamaError) as e:
        detect_format(str(tmp_path / "Llama-3.2-1B-Instruct"))
    assert "MINILLAMA_LLAMA32=1 bash setup.sh` downloads Llama-3.2-1B-Instruct" in str(e.value)
    assert "stories42M" not in str(e.value)
    with pytest.raises(MinillamaError) as e:
        detect_format(str(tmp_path / "stories42M.pt"))
    assert "--pretrained-model-path assets/stories260K/stories260K.bin --tokenizer " \
           "assets/stories260K/tok512.model --norm rmsnorm" in str(e.value)


def test_unusable_device_is_one_clear_error(tmp_path):
    with pytest.raises(MinillamaError, match="not supported on device|not available"):
        check_dtype_on_device(torch.bfloat16, "no_such_device")
    if not torch.cuda.is_available():
        path = str(tmp_path / "m.pt")
        save_checkpoint(tiny_model(), path)
        with pytest.raises(MinillamaError, match="CUDA is not available"):
            load_model(path, device="cuda")
    check_dtype_on_device(torch.bfloat16, "cpu")  # bf16 runs on CPU
