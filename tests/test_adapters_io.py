"""Adapter files (minillama/adapters/io.py): round trips for every method, files of the
previous release, base-identity checks, interpolation, and damaged files."""
import json
import os
import warnings

import pytest
import torch

from conftest import tiny_model
from minillama.adapters import (LoraConfig, PrefixConfig, PrefixTuningConfig, PromptTuningConfig, attach,
                                interpolate, load_adapter, save_adapter)
from minillama.errors import MinillamaError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ALL = [PrefixTuningConfig(length=3, hidden=32), PrefixConfig(length=3), PromptTuningConfig(length=3)]
TEXT = [1, 17, 5, 42, 8, 23]


@pytest.mark.parametrize("cfg", ALL, ids=lambda cfg: cfg.method)
def test_save_load_round_trip(tmp_path, cfg):
    base = tiny_model()
    torch.manual_seed(4)
    model = attach(base, cfg)
    head = {"weight": torch.randn(5, 64), "bias": torch.randn(5)}
    path = str(tmp_path / "adapter")
    nbytes = save_adapter(model, path, label_names=["a", "b", "c", "d", "e"], head_state=head)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    model_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    assert nbytes < model_bytes / 10
    loaded = load_adapter(base, path)
    x = torch.randint(0, 97, (2, 6))
    assert torch.equal(loaded(x)[0], model(x)[0])
    assert loaded.adapter_meta["label_names"][0] == "a" and torch.equal(loaded.head_state["bias"], head["bias"])
    with pytest.raises(MinillamaError, match="n_layers=2.*n_layers=3"):
        load_adapter(tiny_model(n_layers=3), path)
    with pytest.warns(UserWarning, match=r"different base model of the same shape \(other weights: the embeddings differ\)"):
        load_adapter(tiny_model(seed=1), path)  # same shape, other weights: allowed, but flagged
    with pytest.warns(UserWarning, match="settings differ: norm 'rmsnorm' there, 'layernorm' here"):
        load_adapter(tiny_model(norm="layernorm"), path)  # same weights, the other norm: named
    with pytest.raises(MinillamaError, match="not found"):
        load_adapter(base, path + "-missing")


def test_interpolation(tmp_path):
    base = tiny_model()
    a = attach(base, PrefixConfig(length=4, init="text", init_ids=TEXT))
    b = attach(base, PrefixConfig(length=4, init="vocab"))
    x = torch.randint(0, 97, (2, 6))
    assert torch.equal(interpolate(a, b, 1.0)(x)[0], a(x)[0])
    assert torch.equal(interpolate(a, b, 0.0)(x)[0], b(x)[0])
    mid = interpolate(a, b, 0.25).prefix_tensor()
    torch.testing.assert_close(mid, 0.25 * a.kv + 0.75 * b.kv)
    with pytest.raises(MinillamaError, match="interpolate"):
        interpolate(a, attach(base, PrefixConfig(length=5)), 0.5)


@pytest.mark.parametrize("mode", ["prefix", "prompt"])
def test_adapters_saved_by_the_previous_release_still_load(mode):
    """tests/fixtures/legacy-*: written by the release before adapters/ (JSON {"mode",
    "length", "base"} with the old config hash), on tiny_model(seed=0); the logits it
    gave on [[1, 5, 7, 9]] are stored beside it."""
    base = tiny_model(seed=0)
    path = os.path.join(FIXTURES, f"legacy-{mode}-adapter")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same base: no "different base model" warning
        loaded = load_adapter(base, path)
    want = torch.load(os.path.join(FIXTURES, f"legacy-{mode}-logits.pt"), weights_only=True)
    with torch.no_grad():
        got = loaded(torch.tensor([[1, 5, 7, 9]]))[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert loaded.method == mode and loaded.length == 3
    if mode == "prefix":
        assert loaded.head_state["weight"].shape == (2, 64) and loaded.adapter_meta["label_names"] == ["bad", "good"]


def test_lora_adapter_round_trip(tmp_path):
    """A LoRA adapter file holds A and B; loading injects and merges them into a fresh base."""
    torch.manual_seed(0)
    model = attach(tiny_model(), LoraConfig(rank=2, alpha=4.0, targets=("wq", "wv", "w2")))
    with torch.no_grad():
        for m in model.injected:
            m.lora_B.normal_()  # as if trained: B = 0 would make the test vacuous
    x = torch.randint(0, 97, (2, 6))
    want = model(x)[0]
    save_adapter(model, str(tmp_path / "lora"))
    meta = json.load(open(tmp_path / "lora.json"))
    assert meta["method"] == "lora" and meta["config"]["rank"] == 2 and meta["config"]["targets"] == ["wq", "wv", "w2"]
    loaded = load_adapter(tiny_model(), str(tmp_path / "lora"))
    assert all(m.merged for m in loaded.injected) and loaded.num_parameters(trainable_only=True) == 0
    torch.testing.assert_close(loaded(x)[0], want, atol=1e-5, rtol=0)
    assert not torch.allclose(tiny_model()(x)[0], want, atol=1e-3)


def saved_prefix(tmp_path):
    base = tiny_model()
    path = str(tmp_path / "adapter")
    save_adapter(attach(base, PrefixConfig(length=3)), path)
    return base, path


def test_truncated_safetensors_is_one_line_error(tmp_path):
    base, path = saved_prefix(tmp_path)
    data = open(path + ".safetensors", "rb").read()
    open(path + ".safetensors", "wb").write(data[: len(data) // 2])
    with pytest.raises(MinillamaError, match="truncated or corrupt") as e:
        load_adapter(base, path)
    assert "\n" not in str(e.value) and "adapter.safetensors" in str(e.value)


def test_tensor_shape_disagreeing_with_its_json_is_one_line_error(tmp_path):
    base, path = saved_prefix(tmp_path)
    meta = json.load(open(path + ".json"))
    meta["config"]["length"] = meta["length"] = 4  # the tensors hold 3 virtual tokens
    json.dump(meta, open(path + ".json", "w"))
    with pytest.raises(MinillamaError, match=r"tensor 'prefix' has shape \(2, 2, 2, 3, 16\).*implies \(2, 2, 2, 4, 16\)"):
        load_adapter(base, path)


@pytest.mark.parametrize("damage,message", [
    (lambda m: m.pop("base"), "not a minillama adapter config"),
    (lambda m: m["base"].pop("dim"), "not a minillama adapter config"),
    (lambda m: m.update(method="mystery", mode="mystery"), "unknown adapter method 'mystery'"),
])
def test_damaged_json_is_one_line_error(tmp_path, damage, message):
    base, path = saved_prefix(tmp_path)
    meta = json.load(open(path + ".json"))
    damage(meta)
    json.dump(meta, open(path + ".json", "w"))
    with pytest.raises(MinillamaError, match=message):
        load_adapter(base, path)


def test_a_full_disk_while_saving_leaves_no_half_adapter(tmp_path, monkeypatch):
    """The JSON (the second file) fails: neither file of the new adapter lands, an older
    adapter at that path stays whole and loadable."""
    from conftest import disk_full_on
    base, path = saved_prefix(tmp_path)
    before = {s: open(path + s, "rb").read() for s in (".safetensors", ".json")}
    disk_full_on(monkeypatch, ".json.tmp")
    with pytest.raises(MinillamaError, match="no space left on device writing .*adapter.safetensors and "
                                             ".*adapter.json: none of them was written"):
        save_adapter(attach(base, PrefixConfig(length=5)), path)
    assert sorted(os.listdir(tmp_path)) == ["adapter.json", "adapter.safetensors"]
    assert {s: open(path + s, "rb").read() for s in before} == before
    fresh = str(tmp_path / "fresh")
    with pytest.raises(MinillamaError):
        save_adapter(attach(base, PrefixConfig(length=5)), fresh)
    assert sorted(os.listdir(tmp_path)) == ["adapter.json", "adapter.safetensors"]
    assert load_adapter(base, path).length == 3


def test_safetensors_without_its_json_is_named_as_an_incomplete_save(tmp_path):
    base, path = saved_prefix(tmp_path)
    os.remove(path + ".json")
    with pytest.raises(MinillamaError) as e:
        load_adapter(base, path)
    assert str(e.value) == (f"adapter {path}.safetensors has no {path}.json beside it: that adapter was not saved "
                            "completely (its run stopped while writing it); train and save it again")


def test_a_non_finite_tensor_is_refused_naming_it(tmp_path):
    from safetensors.torch import load_file, save_file
    base = tiny_model()
    path = str(tmp_path / "adapter")
    save_adapter(attach(base, PrefixConfig(length=3)), path, label_names=["a", "b"],
                 head_state={"weight": torch.zeros(2, 64), "bias": torch.zeros(2)})
    tensors = load_file(path + ".safetensors")
    tensors["head.bias"][1] = float("inf")
    save_file(tensors, path + ".safetensors")
    with pytest.raises(MinillamaError, match=r"adapter.safetensors: tensor 'head.bias' holds 1 non-finite values "
                                             r"\(NaN or inf\) of 2"):
        load_adapter(base, path)


def test_the_base_mismatch_warning_is_a_minillama_warning(tmp_path):
    """The CLI shows MinillamaWarning as one line (errors.show_one_line)."""
    from minillama.errors import MinillamaWarning
    path = str(tmp_path / "adapter")
    save_adapter(attach(tiny_model(), PrefixConfig(length=3)), path)
    with pytest.warns(MinillamaWarning, match="settings differ: norm 'rmsnorm' there, 'layernorm' here"):
        load_adapter(tiny_model(norm="layernorm"), path)
