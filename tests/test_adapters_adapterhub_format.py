"""AdapterHub directories (minillama/adapters/adapterhub_format.py): the layout adapters 1.3.0's
save_adapter writes (file names, tensor names, the full BnConfig), round trips, one-line refusals,
`--export_adapterhub` on the command line, and adapters 1.3.0 itself as the oracle: it loads
minillama's exports on a transformers LlamaForCausalLM with the same weights and gives the same
logits and beam-search outputs, and minillama loads what it saves with the same results.

adapters 1.3.0 pins transformers 4.57.6, so the oracle runs in its own environment
(tests/adapterhub_oracle.py, by the interpreter MINILLAMA_ADAPTERHUB_PYTHON names, default
.venv/adapterhub/bin/python; made with `python3 -m venv .venv/adapterhub &&
.venv/adapterhub/bin/pip install -r requirements-adapterhub.txt`, or `MINILLAMA_ADAPTERHUB=1 bash setup.sh`); without it that test is skipped, except in CI, where it fails."""
import json
import os
import subprocess

import pytest
import torch

from conftest import REPO_ROOT, course_argv, data_slice, tiny_model
from minillama.adapters import Bottleneck, BottleneckConfig, attach, load_adapter
from minillama.adapters.adapterhub_format import WEIGHTS_FILE, export_adapterhub, is_adapterhub_dir
from minillama.cli import main
from minillama.errors import MinillamaError
from minillama.formats.hf import save_hf_dir
from test_adapters_bottleneck import opened

ADAPTERHUB_PYTHON = os.environ.get("MINILLAMA_ADAPTERHUB_PYTHON") or os.path.join(
    REPO_ROOT, ".venv", "adapterhub", "bin", "python")

# What adapters 1.3.0's save_adapter wrote for "double_seq_bn" on a 2-layer, 64-wide Llama (its
# seq_bn differs in mh_adapter false, original_ln_before true, non_linearity relu); minillama's
# adapters start as AdapterHub's "mam_adapter" init does.
DOUBLE_SEQ_BN = {
    "adapter_residual_before_ln": False, "cross_adapter": False, "dropout": 0.0, "factorized_phm_W": True,
    "factorized_phm_rule": False, "hypercomplex_nonlinearity": "glorot-uniform", "init_weights": "mam_adapter",
    "init_weights_seed": None, "inv_adapter": None, "inv_adapter_reduction_factor": None, "is_parallel": False,
    "learn_phm": True, "leave_out": [], "ln_after": False, "ln_before": False, "mh_adapter": True,
    "non_linearity": "swish", "original_ln_after": True, "original_ln_before": False, "output_adapter": True,
    "phm_bias": True, "phm_c_init": "normal", "phm_dim": 4, "phm_init_range": 0.0001, "phm_layer": False,
    "phm_rank": 1, "reduction_factor": 16, "residual_before_ln": True, "scaling": 1.0, "shared_W_phm": False,
    "shared_phm_rule": True, "stochastic_depth": 0.0, "use_gating": False}


def exported(tmp_path, config="houlsby", n_layers=2, **settings):
    base = tiny_model(n_layers=n_layers)
    torch.manual_seed(7)
    model = opened(attach(base, BottleneckConfig(config=config, **settings)))
    directory = str(tmp_path / f"ah-{config}")
    export_adapterhub(model, directory)
    return base, model, directory


def test_export_writes_adapterhubs_layout(tmp_path):
    _, _, directory = exported(tmp_path)
    assert sorted(os.listdir(directory)) == ["adapter_config.json", "pytorch_adapter.bin"]
    tensors = torch.load(os.path.join(directory, WEIGHTS_FILE), weights_only=True)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        f"model.layers.{i}.{site}_adapters.adapters.bottleneck.{name}": shape
        for i in (0, 1) for site in ("attention", "output")
        for name, shape in (("adapter_down.0.weight", (4, 64)), ("adapter_down.0.bias", (4,)),
                            ("adapter_up.weight", (64, 4)), ("adapter_up.bias", (64,)))}
    config = json.load(open(os.path.join(directory, "adapter_config.json")))
    assert config["config"] == DOUBLE_SEQ_BN
    assert {k: config[k] for k in ("hidden_size", "model_type", "model_class", "name", "version")} == {
        "hidden_size": 64, "model_type": "llama", "model_class": "LlamaForCausalLM", "name": "bottleneck",
        "version": "adapters.1.3.0"}
    _, _, pfeiffer = exported(tmp_path, "pfeiffer", reduction_factor=8)
    seq_bn = json.load(open(os.path.join(pfeiffer, "adapter_config.json")))["config"]
    assert seq_bn == {**DOUBLE_SEQ_BN, "mh_adapter": False, "original_ln_before": True, "non_linearity": "relu",
                      "reduction_factor": 8}
    assert sorted(torch.load(os.path.join(pfeiffer, WEIGHTS_FILE), weights_only=True))[:2] == [
        "model.layers.0.output_adapters.adapters.bottleneck.adapter_down.0.bias",
        "model.layers.0.output_adapters.adapters.bottleneck.adapter_down.0.weight"]


@pytest.mark.parametrize("config,settings", [("houlsby", {}), ("pfeiffer", {"non_linearity": "gelu"})])
def test_round_trip_bit_for_bit_from_the_bin_and_from_safetensors(tmp_path, config, settings):
    from safetensors.torch import save_file
    base, model, directory = exported(tmp_path, config, **settings)
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids)[0]
        loaded = load_adapter(base, directory)
        assert isinstance(loaded, Bottleneck) and loaded.cfg == model.cfg and not loaded.trainable_parameters()
        assert torch.equal(loaded(ids)[0], want)
        bin_path = os.path.join(directory, WEIGHTS_FILE)
        save_file(torch.load(bin_path, weights_only=True), os.path.join(directory, "adapter.safetensors"))
        os.remove(bin_path)
        assert torch.equal(load_adapter(base, directory)(ids)[0], want)


def rewrite_config(directory, top=None, **fields):
    """Change fields of the BnConfig, and top-level entries (None: removed)."""
    path = os.path.join(directory, "adapter_config.json")
    config = json.load(open(path))
    config["config"].update(fields)
    for key, value in (top or {}).items():
        config[key] = value
        if value is None:
            del config[key]
    json.dump(config, open(path, "w"))


@pytest.mark.parametrize("fields,top,message", [
    (dict(is_parallel=True), {}, "config field is_parallel=True is not what seq_bn / double_seq_bn have"),
    (dict(scaling=4.0), {}, "config field scaling=4.0 is not what"),
    (dict(architecture="lora"), {}, "an AdapterHub lora adapter; minillama reads bottleneck adapters"),
    (dict(mh_adapter=False), {}, "mh_adapter=False, original_ln_before=False is neither double_seq_bn"),
    (dict(reduction_factor={"default": 16}), {}, "reduction_factor {'default': 16}: minillama reads one whole-number"),
    (dict(non_linearity="tanh"), {}, "non_linearity 'tanh': minillama has relu, gelu, swish"),
    ({}, dict(model_type="mistral"), "an adapter for a mistral model"),
    ({}, dict(minillama_base=None, hidden_size=128), "an adapter for hidden_size 128, but this model's width is 64")])
def test_a_config_minillama_cannot_follow_is_one_line(tmp_path, fields, top, message):
    base, _, directory = exported(tmp_path)
    rewrite_config(directory, top, **fields)
    with pytest.raises(MinillamaError, match=message) as e:
        load_adapter(base, directory)
    assert "\n" not in str(e.value)


def test_other_base_missing_weights_and_pickled_code_are_one_line(tmp_path):
    _, _, directory = exported(tmp_path, n_layers=3)
    with pytest.raises(MinillamaError, match="n_layers=3.*n_layers=2"):  # minillama's identity key
        load_adapter(tiny_model(n_layers=2), directory)
    rewrite_config(directory, {"minillama_base": None})  # as adapters writes it: the tensors decide
    with pytest.raises(MinillamaError, match="tensor layers.2.attention_adapter.down.bias has no place on this 2-layer"):
        load_adapter(tiny_model(n_layers=2), directory)
    with pytest.raises(MinillamaError, match="lacks the tensor of layers.3.attention_adapter"):
        load_adapter(tiny_model(n_layers=4), directory)

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))
    torch.save({"x": Evil()}, os.path.join(directory, WEIGHTS_FILE))
    with pytest.raises(MinillamaError, match="refused: the file contains pickled code"):
        load_adapter(tiny_model(n_layers=3), directory)
    os.remove(os.path.join(directory, WEIGHTS_FILE))
    with pytest.raises(MinillamaError, match="neither pytorch_adapter.bin nor adapter.safetensors found") as e:
        load_adapter(tiny_model(n_layers=3), directory)
    assert "\n" not in str(e.value)


def test_peft_directories_are_not_taken_for_adapterhubs(tmp_path):
    peft_dir = tmp_path / "peft"
    peft_dir.mkdir()
    (peft_dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "config": {}}))
    _, _, directory = exported(tmp_path)
    assert is_adapterhub_dir(directory) and not is_adapterhub_dir(str(peft_dir))


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_exports_a_trained_adapter_and_converts_a_loaded_one(tmp_path, capsys, tiny_ckpt):
    data = data_slice(tmp_path, "sst", n=16)
    out = lambda name: str(tmp_path / name)  # noqa: E731
    assert main(course_argv("bottleneck", tiny_ckpt, data, "--bottleneck_config", "pfeiffer", "--save_adapter",
                            out("bn"), "--export_adapterhub", out("ah"), "--dev_out", out("dev.txt"),
                            "--test_out", out("test.txt"))) == 0
    printed = capsys.readouterr().out
    assert f"exported the bottleneck adapter in AdapterHub's layout to {out('ah')}" in printed
    assert "note: the classification head is left out of the AdapterHub export" in printed
    saved = load_adapter(tiny_model(vocab_size=512, max_seq_len=256), out("bn"))
    from_hub = load_adapter(tiny_model(vocab_size=512, max_seq_len=256), out("ah"))
    assert all(torch.equal(saved.adapter_tensors()[k], t) for k, t in from_hub.adapter_tensors().items())
    assert main(course_argv("bottleneck", tiny_ckpt, data, "--load_adapter", out("bn"), "--export_adapterhub",
                            out("ah2"), "--dev_out", out("dev2.txt"), "--test_out", out("test2.txt"))) == 0
    assert open(os.path.join(out("ah2"), WEIGHTS_FILE), "rb").read() == open(os.path.join(out("ah"), WEIGHTS_FILE),
                                                                            "rb").read()


@pytest.mark.parametrize("option,extra,message", [
    ("lora", [], "error: --export_adapterhub: AdapterHub's saved-adapter layout is written for bottleneck adapters "
                 "(--option bottleneck), not lora"),
    ("prompt", [], "error: --export_adapterhub converts one bottleneck adapter"),
    ("prefix", ["--task", "mmlu"], "error: --export_adapterhub does nothing with --option prefix --task mmlu")])
def test_cli_export_refusals_are_one_line_and_write_nothing(tmp_path, capsys, tiny_ckpt, option, extra, message):
    data = data_slice(tmp_path, "sst", n=8)
    before = set(os.listdir(tmp_path))
    argv = (course_argv(option, tiny_ckpt, data, "--dev_out", str(tmp_path / "dev.txt"), "--test_out",
                        str(tmp_path / "test.txt"), "--export_adapterhub", str(tmp_path / "ah"))
            if not extra else ["--option", option, *extra, "--pretrained-model-path", tiny_ckpt,
                               "--export_adapterhub", str(tmp_path / "ah")])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err
    assert set(os.listdir(tmp_path)) == before


# -- adapters 1.3.0 as the oracle -----------------------------------------------------------------
@pytest.mark.slow
def test_adapters_loads_minillamas_exports_and_minillama_loads_adapters_saves(tmp_path):
    if not os.path.isfile(ADAPTERHUB_PYTHON):
        message = f"no adapters 1.3.0 environment at {ADAPTERHUB_PYTHON}: MINILLAMA_ADAPTERHUB=1 bash setup.sh builds it"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI builds it (.ci/run): never skipped there
        pytest.skip(message)
    base = tiny_model(n_layers=2)
    hf_dir = str(tmp_path / "hf")
    save_hf_dir(base, hf_dir)
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    ours, exports = {}, []
    for i, (config, settings) in enumerate((("houlsby", {}), ("pfeiffer", {}), ("houlsby", {"non_linearity": "gelu",
                                                                                           "reduction_factor": 8}))):
        torch.manual_seed(i)
        model = opened(attach(base, BottleneckConfig(config=config, **settings)), seed=i)
        directory = str(tmp_path / f"export-{i}")
        export_adapterhub(model, directory)
        ours[directory], exports = model, exports + [directory]
    made = [{"dir": str(tmp_path / f"made-{c}"), "config": c, "seed": 3} for c in ("double_seq_bn", "seq_bn")]
    torch.save({"ids": ids}, tmp_path / "inputs.pt")
    job = {"hf_dir": hf_dir, "inputs": str(tmp_path / "inputs.pt"), "new_tokens": 5, "beams": 3, "load": exports,
           "save": made, "out": str(tmp_path / "theirs.pt")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = subprocess.run([ADAPTERHUB_PYTHON, os.path.join(REPO_ROOT, "tests", "adapterhub_oracle.py"),
                           str(tmp_path / "job.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = torch.load(tmp_path / "theirs.pt", weights_only=True)
    for spec in made:  # what adapters saved, loaded by minillama
        ours[spec["dir"]] = load_adapter(base, spec["dir"])
        assert ours[spec["dir"]].cfg.config == {"double_seq_bn": "houlsby", "seq_bn": "pfeiffer"}[spec["config"]]
    for directory, model in ours.items():
        with torch.no_grad():
            logits = model(ids)[0]
        torch.testing.assert_close(logits, theirs[directory]["logits"], atol=1e-4, rtol=0)
        assert (logits - base(ids)[0]).abs().max() > 1e-2, directory  # the adapter matters
        assert torch.equal(model.generate(ids, 5, beam_size=3), theirs[directory]["beams"]), directory
