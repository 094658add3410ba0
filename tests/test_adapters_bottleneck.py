"""Bottleneck adapters (minillama/adapters/bottleneck.py): the base exactly at init, the
placement against a written-out forward (AdapterHub's DoubleSeqBnConfig / SeqBnConfig on a
pre-norm block), the parameter count, only the adapters train, the base object untouched, the
KV cache and generate, a learned task, files, the command line (classification, --task e2e,
resume) and bad settings."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import asset, course_argv, data_slice, e2e_argv, e2e_slice, padded_batch, read_predictions, tiny_model
from minillama.adapters import Bottleneck, BottleneckConfig, attach, load_adapter, save_adapter
from minillama.core.attention import Attention, attention_bias
from minillama.core.model import FeedForward, TransformerBlock
from minillama.core.optimizer import AdamW
from minillama.errors import MinillamaError
from minillama.cli import main


def opened(model: Bottleneck, seed=1, scale=0.3) -> Bottleneck:
    """Up-projections away from zero, so the adapters matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in model.adapters().values():
            a.up.weight.copy_(scale * torch.randn(a.up.weight.shape, generator=g))
            a.up.bias.copy_(scale * torch.randn(a.up.bias.shape, generator=g))
    return model


@pytest.mark.parametrize("config", ["houlsby", "pfeiffer"])
def test_at_init_equals_the_base_bit_for_bit(config):
    base = tiny_model(n_layers=3).requires_grad_(False)  # frozen as attach leaves it: the same kernels run
    ids, mask = padded_batch()
    want, want_last = base(ids, mask), base(ids, mask, last_only=True)
    model = attach(base, BottleneckConfig(config=config))
    got, got_last = model(ids, mask), model(ids, mask, last_only=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got_last[0], want_last[0]) and torch.equal(got_last[1], want_last[1])
    assert torch.equal(model.generate(ids, 6, attention_mask=mask), base.generate(ids, 6, attention_mask=mask))


ACTIVATIONS = {"swish": lambda z: z * torch.sigmoid(z), "relu": lambda z: z.clamp(min=0),
               "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))}


def written_out(model: Bottleneck, ids: torch.Tensor) -> torch.Tensor:
    """The logits of an unpadded batch, every block and adapter written out from the base's
    modules and the adapter tensors (AdapterHub's Llama layer with residual_before_ln=True):
    houlsby  h = x + s + A(s),  y = h + f + A(f);   pfeiffer  y = (h + f) + A(h + f)."""
    base, cfg, t = model.base, model.cfg, model.adapter_tensors()
    act = ACTIVATIONS[cfg.non_linearity]

    def A(name, z):
        down = F.linear(z, t[f"{name}.down.weight"], t[f"{name}.down.bias"])
        return F.linear(act(down), t[f"{name}.up.weight"], t[f"{name}.up.bias"])

    B, T = ids.shape
    cos, sin = (table[:T].expand(B, T, -1) for table in base.rope_table(ids.device))
    bias = attention_bias(torch.ones(B, T, dtype=torch.bool), T, torch.float32)
    x = base.tok_embeddings(ids)
    for i, block in enumerate(base.layers):
        s = block.attention(block.attention_norm(x), cos, sin, bias, None, i)
        h = x + s + A(f"layers.{i}.attention_adapter", s) if cfg.config == "houlsby" else x + s
        f = block.feed_forward(block.ffn_norm(h))
        x = h + f + A(f"layers.{i}.output_adapter", f) if cfg.config == "houlsby" else \
            (h + f) + A(f"layers.{i}.output_adapter", h + f)
    return base.output(base.norm(x))


@pytest.mark.parametrize("config,non_linearity", [("houlsby", None), ("pfeiffer", None), ("houlsby", "gelu"),
                                                  ("pfeiffer", "swish")])
def test_placement_equals_the_written_out_blocks(config, non_linearity):
    base = tiny_model(n_layers=3)
    torch.manual_seed(3)
    model = opened(attach(base, BottleneckConfig(config=config, reduction_factor=8, non_linearity=non_linearity)))
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, want = model(ids)[0], written_out(model, ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - base(ids)[0]).abs().max() > 1e-2  # the adapters do change the output


def test_defaults_follow_adapterhub():
    assert BottleneckConfig() == BottleneckConfig(config="houlsby", reduction_factor=16, non_linearity="swish")
    assert BottleneckConfig(config="pfeiffer").non_linearity == "relu"
    assert BottleneckConfig(config="pfeiffer", non_linearity="gelu").non_linearity == "gelu"


def test_parameter_count_names_and_the_base_object_untouched():
    base = tiny_model(n_layers=3)  # dim 64
    blocks = list(base.layers)
    houlsby = attach(base, BottleneckConfig())
    # per adapter: down 64*4 + 4, up 4*64 + 64 = 580; two per block, three blocks
    assert houlsby.width == 4 and houlsby.num_parameters(trainable_only=True) == 3480
    assert sorted(houlsby.trainable_parameters()) == sorted(
        f"adapted.layers.{i}.{part}.adapter.{lin}.{p}" for i in range(3) for part in ("attention", "feed_forward")
        for lin in ("down", "up") for p in ("weight", "bias"))
    pfeiffer = attach(base, BottleneckConfig(config="pfeiffer", reduction_factor=8))
    # per adapter: 64*8 + 8 + 8*64 + 64 = 1096; one per block
    assert pfeiffer.width == 8 and pfeiffer.num_parameters(trainable_only=True) == 3288
    assert sorted(pfeiffer.adapter_tensors()) == sorted(
        f"layers.{i}.output_adapter.{lin}.{p}" for i in range(3) for lin in ("down", "up") for p in ("weight", "bias"))
    # the base keeps its own blocks and plain modules; the adapted ones share their tensors
    assert list(base.layers) == blocks and all(type(b) is TransformerBlock and type(b.attention) is Attention
                                               and type(b.feed_forward) is FeedForward for b in base.layers)
    assert houlsby.adapted.layers[0] is not base.layers[0]
    assert houlsby.adapted.layers[0].attention.module is base.layers[0].attention
    assert houlsby.adapted.layers[0].feed_forward.module is base.layers[0].feed_forward
    assert houlsby.adapted.layers[0].attention_norm is base.layers[0].attention_norm
    assert pfeiffer.adapted.layers[1].module is base.layers[1]
    assert houlsby.adapted.tok_embeddings is base.tok_embeddings and houlsby.adapted.output is base.output
    assert houlsby.num_parameters() == base.num_parameters() + 3480


@pytest.mark.parametrize("config", ["houlsby", "pfeiffer"])
def test_only_the_adapters_train_and_the_base_stays_bit_identical(config):
    base = tiny_model(n_layers=2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = attach(base, BottleneckConfig(config=config))
    opt = AdamW(list(model.trainable_parameters().values()), lr=1e-2)
    ids, mask = padded_batch()
    for step in range(2):
        opt.zero_grad()
        model(ids, mask)[0].float().pow(2).mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert set(grads) == set(model.trainable_parameters())
        ups = [g for n, g in grads.items() if ".up." in n]
        downs = [g for n, g in grads.items() if ".down." in n]
        assert all(g.abs().max() > 0 for g in ups)
        # step 0: up = 0 blocks the down-projection's gradient exactly; from step 1 on it flows
        assert all((g.abs().max() > 0) == (step > 0) for g in downs)
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert (model(ids, mask)[0] - base(ids, mask)[0]).abs().max() > 0


@pytest.mark.parametrize("config", ["houlsby", "pfeiffer"])
def test_padding_last_only_cached_decoding_and_generate(config):
    base = tiny_model(n_layers=3)
    torch.manual_seed(2)
    model = opened(attach(base, BottleneckConfig(config=config, reduction_factor=8))).eval()
    ids, mask = padded_batch(T=8)
    with torch.no_grad():
        logits, hidden = model(ids, mask)
        real = mask[1].bool()  # a padded row equals the row alone
        torch.testing.assert_close(logits[1, real], model(ids[1:2, real])[0][0], atol=1e-5, rtol=0)
        last = model(ids, mask, last_only=True)
        torch.testing.assert_close(last[0][:, 0], logits[:, -1], atol=1e-5, rtol=0)
        cache = model.new_cache(3, 12)
        steps = [model(ids[:, :5], mask[:, :5], cache=cache)[0]]
        for t in range(5, 8):
            steps.append(model(ids[:, t:t + 1], mask[:, t:t + 1], cache=cache)[0])
        torch.testing.assert_close(torch.cat(steps, dim=1)[mask.bool()], logits[mask.bool()], atol=1e-5, rtol=0)
    assert cache.length == 8
    cached = model.generate(ids, 5, attention_mask=mask)
    assert torch.equal(cached, model.generate(ids, 5, attention_mask=mask, use_cache=False))
    assert not torch.equal(cached, base.generate(ids, 5, attention_mask=mask))


@pytest.mark.slow
@pytest.mark.parametrize("config", ["houlsby", "pfeiffer"])
def test_learns_a_task_above_chance(config):
    """The word-group task (conftest.word_group_task) on the frozen pretrained stories260K: trained
    on 32 sequences, the adapters must classify 64 unseen ones well above chance."""
    from minillama.formats import load_model
    from conftest import word_group_task
    base = load_model(asset("llama2c/stories260K.bin"), norm="rmsnorm")
    (x, y), (x_test, y_test), label_ids = word_group_task()
    torch.manual_seed(0)
    model = attach(base, BottleneckConfig(config=config, reduction_factor=4))
    opt = AdamW(list(model.trainable_parameters().values()), lr=1e-2)
    for _ in range(40):
        loss = F.cross_entropy(model(x, last_only=True)[0][:, -1, label_ids], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(x_test, last_only=True)[0][:, -1, label_ids].argmax(-1) == y_test).float().mean().item()
    assert acc >= 0.85, f"the adapters stayed near chance: {acc:.3f} (loss {loss.item():.3f})"


@pytest.mark.parametrize("config", ["houlsby", "pfeiffer"])
def test_save_load_round_trip(tmp_path, config):
    base = tiny_model(n_layers=3)
    torch.manual_seed(5)
    model = opened(attach(base, BottleneckConfig(config=config, reduction_factor=8)))
    ids, mask = padded_batch()
    with torch.no_grad():
        want = model(ids, mask)[0]
    save_adapter(model, str(tmp_path / "a"))
    loaded = load_adapter(base, str(tmp_path / "a"))
    assert isinstance(loaded, Bottleneck) and not loaded.trainable_parameters()
    assert loaded.cfg == BottleneckConfig(config=config, reduction_factor=8,
                                          non_linearity={"houlsby": "swish", "pfeiffer": "relu"}[config])
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask)[0], want)
    with pytest.raises(MinillamaError, match="n_layers=3.*n_layers=4"):
        load_adapter(tiny_model(n_layers=4), str(tmp_path / "a"))


@pytest.mark.parametrize("settings,message", [
    (dict(config="compacter"), "--bottleneck_config must be one of houlsby, pfeiffer, got 'compacter'"),
    (dict(reduction_factor=0), "--reduction_factor must be a positive integer .*got 0"),
    (dict(reduction_factor=-4), "--reduction_factor must be a positive integer .*got -4"),
    (dict(reduction_factor=2.5), "--reduction_factor must be a positive integer .*got 2.5"),
    (dict(non_linearity="tanh"), "--non_linearity must be one of relu, gelu, swish, got 'tanh'")])
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(MinillamaError, match=message) as e:
        BottleneckConfig(**settings)
    assert "\n" not in str(e.value)


def test_reduction_factor_above_the_model_width_is_one_line():
    with pytest.raises(MinillamaError, match="--reduction_factor 65 is above the model's width 64: choose 1..64") as e:
        attach(tiny_model(), BottleneckConfig(reduction_factor=65))
    assert "\n" not in str(e.value)
    assert attach(tiny_model(), BottleneckConfig(reduction_factor=64)).width == 1


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_classification_trains_saves_and_loads(tmp_path, capsys, tiny_ckpt):
    data = data_slice(tmp_path, "sst", n=24)
    out = lambda name: str(tmp_path / name)  # noqa: E731
    argv = course_argv("bottleneck", tiny_ckpt, data, "--bottleneck_config", "pfeiffer", "--reduction_factor", "8",
                       "--non_linearity", "gelu", "--save_adapter", out("bn"), "--dev_out", out("dev.txt"),
                       "--test_out", out("test.txt"))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert ("bottleneck adapters (pfeiffer): width 8 (= 64 / 8), gelu, after the feed-forward of each of 2 layers: "
            "2,192 adapter + 325 head parameters") in printed  # 2 * 1096; a cls head over SST's 5 labels: 64*5+5
    assert len(read_predictions(out("dev.txt"))) == 24
    assert main(course_argv("bottleneck", tiny_ckpt, data, "--load_adapter", out("bn"), "--dev_out", out("dev2.txt"),
                            "--test_out", out("test2.txt"))) == 0
    assert "load adapter" in capsys.readouterr().out
    assert open(out("dev2.txt")).read() == open(out("dev.txt")).read()
    assert open(out("test2.txt")).read() == open(out("test.txt")).read()


@pytest.mark.slow
def test_cli_e2e_trains_saves_and_decodes_with_the_saved_adapter(tmp_path, tiny_ckpt):
    data = e2e_slice(tmp_path, rows=(16, 4, 6))
    adapter = str(tmp_path / "bn")
    assert main(e2e_argv("bottleneck", tiny_ckpt, data, str(tmp_path), "--epochs", "1", "--no_java",
                         "--save_adapter", adapter)) == 0
    trained = open(tmp_path / "test.txt").read()
    assert len(trained.splitlines()) == 3  # the test slice's distinct sources
    os.remove(tmp_path / "test.txt")
    assert main(e2e_argv("bottleneck", tiny_ckpt, data, str(tmp_path), "--no_java", "--load_adapter", adapter)) == 0
    assert open(tmp_path / "test.txt").read() == trained


@pytest.mark.slow
def test_cli_interrupted_run_resumes_exactly(tmp_path, capsys, monkeypatch, tiny_ckpt):
    """Stopped (Ctrl-C) right after its first checkpoint, then --resume: the same adapter and
    predictions, byte for byte, as the run never interrupted."""
    from minillama import resume
    data = data_slice(tmp_path, "sst", n=16)

    def run(name, *extra):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        return main(course_argv("bottleneck", tiny_ckpt, data, "--epochs", "2", "--batch_size", "8",
                                "--save_adapter", str(d / "bn"), "--dev_out", str(d / "dev.txt"),
                                "--test_out", str(d / "test.txt"), *extra))

    assert run("ref") == 0
    real_save = resume.save

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(resume, "save", save_then_stop)
    ck = str(tmp_path / "ck")
    assert run("res", "--checkpoint_dir", ck, "--save_every", "1") == 130
    monkeypatch.setattr(resume, "save", real_save)
    assert not os.path.exists(tmp_path / "res" / "bn.safetensors")
    assert run("res", "--checkpoint_dir", ck, "--save_every", "1", "--resume") == 0
    assert "resumed from" in capsys.readouterr().out
    for name in ("bn.safetensors", "dev.txt", "test.txt"):
        assert (tmp_path / "res" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


@pytest.mark.parametrize("extra,message", [
    (["--reduction_factor", "0"], "error: --reduction_factor must be a positive integer"),
    (["--reduction_factor", "65"], "error: --reduction_factor 65 is above the model's width 64"),
    (["--bottleneck_config", "compacter"], "error: argument --bottleneck_config: invalid choice: 'compacter'"),
    (["--non_linearity", "tanh"], "error: argument --non_linearity: invalid choice: 'tanh'"),
    (["--lora_rank", "4"], "error: --lora_rank does nothing with --option bottleneck: drop it"),
    (["--export_peft", "peft-dir"], "error: --export_peft")])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, tiny_ckpt, extra, message):
    data = data_slice(tmp_path, "sst", n=8)
    before = set(os.listdir(tmp_path))
    code = 2
    try:
        code = main(course_argv("bottleneck", tiny_ckpt, data, "--dev_out", str(tmp_path / "dev.txt"),
                                "--test_out", str(tmp_path / "test.txt"), *extra))
    except SystemExit as e:  # argparse's own choices
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message) and "\n" not in err, err
    assert set(os.listdir(tmp_path)) == before


def test_cli_flags_belong_to_option_bottleneck(tmp_path, capsys, tiny_ckpt):
    data = data_slice(tmp_path, "sst", n=8)
    assert main(course_argv("lora", tiny_ckpt, data, "--reduction_factor", "4")) == 2
    assert capsys.readouterr().err.strip() == ("error: --reduction_factor does nothing with --option lora: drop it "
                                               "(it is read by --option bottleneck when training (no --load_adapter))")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:this tokenizer splits")
def test_cli_mmlu_evaluates_a_saved_bottleneck_adapter(tmp_path, capsys):
    """--option mmlu --load_adapter reads a bottleneck adapter: the report differs from the
    base model's when the adapter is not zero, and equals it when it is (up = 0 at init)."""
    import json
    from conftest import make_fixture
    from minillama.formats import save_checkpoint
    root = make_fixture(tmp_path / "mmlu")
    base = tiny_model(vocab_size=512, max_seq_len=512)
    ckpt = str(tmp_path / "tiny.pt")
    save_checkpoint(base, ckpt)
    save_adapter(attach(base, BottleneckConfig(reduction_factor=8)), str(tmp_path / "zero"))
    save_adapter(opened(attach(base, BottleneckConfig(reduction_factor=8)), scale=3.0), str(tmp_path / "open"))
    common = ["--option", "mmlu", "--pretrained-model-path", ckpt, "--tokenizer", asset("llama2c/tok512.model"),
              "--norm", "rmsnorm", "--mmlu_dir", root, "--batch_size", "2"]
    scores = {}
    for name in ("base", "zero", "open"):
        out = str(tmp_path / f"{name}.jsonl")
        assert main(common + ["--mmlu_out", out] + ([] if name == "base" else ["--load_adapter", str(tmp_path / name)])) == 0
        scores[name] = [json.loads(line).get("scores") for line in open(out)][:-1]
    assert scores["zero"] == scores["base"] and scores["open"] != scores["base"]
