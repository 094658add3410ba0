"""The command line (minillama/cli.py): flags become typed configs, every default is the
config field's (argparse states none), and each (option, --task) reaches its task."""
import os

import pytest

from minillama.adapters import FullConfig, LoraConfig, PrefixConfig, PrefixTuningConfig, PromptTuningConfig
from minillama.cli import build_parser, main, parse
from minillama.mmlu import MMLUSettings
from minillama.runconfig import RunConfig
from minillama.tasks.classify import ClassifyConfig
from minillama.tasks.generate import GenerateConfig
from minillama.tasks.mmlu_eval import MMLUEvalConfig
from minillama.tasks.mmlu_prefix import MMLUPrefixConfig
from minillama.train import TrainConfig


@pytest.mark.parametrize("option", ["generate", "prompt", "finetune", "lora", "prefix", "mmlu"])
def test_argparse_states_no_default(option):
    """A flag not given is absent, so the config field's default is the only one."""
    assert vars(build_parser().parse_args(["--option", option])) == {"option": option}


def test_no_flags_give_the_config_defaults():
    assert parse(["--option", "generate"]) == ("generate", RunConfig(), GenerateConfig())
    assert parse(["--option", "prompt"]) == ("classify", RunConfig(), ClassifyConfig(option="prompt"))
    # the defaults written out: a wrong constant must fail here
    for option, method, head, lr in (("finetune", FullConfig(), "cls", 2e-5), ("lora", LoraConfig(), "cls", 2e-5),
                                     ("prefix", PrefixConfig(length=60, init="vocab"), "mean", 1e-2)):
        name, run, cfg = parse(["--option", option])
        assert (name, run, cfg) == ("classify", RunConfig(), ClassifyConfig(option=option, method=method))
        assert cfg.training.lr == lr and cfg.head == head
    assert LoraConfig().targets == ("wq", "wk", "wv", "wo", "w1", "w2", "w3") and LoraConfig().rank == 4
    e2e = {option: parse(["--option", option, "--task", "e2e"])[2] for option in ("finetune", "lora", "prefix")}
    assert [e2e[o].training.lr for o in ("finetune", "lora", "prefix")] == [3e-3, 3e-2, 3e-3]
    assert e2e["prefix"].method == PrefixTuningConfig(length=10, hidden=512, init="random")
    assert parse(["--option", "prefix", "--task", "e2e", "--prefix_mode", "ptuning2"])[2].training.lr == 0.3
    assert parse(["--option", "mmlu"]) == ("mmlu_eval", RunConfig(), MMLUEvalConfig())
    assert parse(["--option", "prefix", "--task", "mmlu"]) == ("mmlu_prefix", RunConfig(), MMLUPrefixConfig())
    assert ClassifyConfig(option="prefix", method=PrefixConfig()).training.lr == 1e-2
    assert ClassifyConfig(option="lora", method=LoraConfig()).training.lr == 2e-5


def test_probe_and_bottleneck_mmlu_defaults():
    """--option probe: a linear head at lr 1e-2 on the last token; --option bottleneck --task mmlu:
    the bottleneck config's defaults, saved as mmlu-bottleneck-adapter (the prefix's name unchanged)."""
    from minillama.adapters import BottleneckConfig, ProbeConfig
    name, run, cfg = parse(["--option", "probe"])
    assert (name, run, cfg) == ("classify", RunConfig(), ClassifyConfig(option="probe", method=ProbeConfig()))
    assert (cfg.method.head, cfg.head, cfg.training.lr, cfg.outputs["dev"]) == \
        ("linear", "cls", 1e-2, "cfimdb-dev-probe-output.txt")
    assert parse(["--option", "probe", "--probe_head", "mlp"])[2].method == ProbeConfig(head="mlp")
    name, _, m = parse(["--option", "bottleneck", "--task", "mmlu", "--reduction_factor", "4", "--mmlu_holdout", "0.3"])
    assert name == "mmlu_prefix" and m.option == "bottleneck" and m.method == BottleneckConfig(reduction_factor=4)
    assert (m.save_adapter, m.training.lr, m.holdout) == ("mmlu-bottleneck-adapter", 1e-3, 0.3)
    assert parse(["--option", "prefix", "--task", "mmlu"])[2].save_adapter == "mmlu-prefix-adapter"


def test_flags_reach_their_fields():
    _, run, cfg = parse(["--option", "lora", "--pretrained-model-path", "m.bin", "--tokenizer", "t.model",
                         "--norm", "rmsnorm", "--use_sdpa", "--bf16", "--seed", "3", "--lora_rank", "8",
                         "--lora_alpha", "16", "--lora_targets", "wq,wk", "--lr", "1e-3", "--epochs", "2",
                         "--batch_size", "4", "--patience", "1", "--train", "a.txt", "--dev_out", "d.txt",
                         "--max_sentence_len", "30", "--hidden_dropout_prob", "0.1"])
    assert run == RunConfig(model_path="m.bin", tokenizer_path="t.model", norm="rmsnorm", use_sdpa=True, bf16=True,
                            seed=3)
    assert cfg.method == LoraConfig(rank=8, alpha=16.0, targets=("wq", "wk"))
    assert cfg.training == TrainConfig(epochs=2, lr=1e-3, batch_size=4, patience=1)
    assert (cfg.train, cfg.dev_out, cfg.max_sentence_len, cfg.hidden_dropout_prob) == ("a.txt", "d.txt", 30, 0.1)
    _, _, g = parse(["--option", "generate", "--temperature", "0.5", "--max_new_tokens", "9", "--prompt_text", "hi",
                     "--generated_sentence_low_temp_out", "lo.txt"])
    assert g == GenerateConfig(low_temp_out="lo.txt", prompt_text="hi", temperature=0.5, max_new_tokens=9)
    _, _, m = parse(["--option", "prefix", "--task", "mmlu", "--prefix_mode", "prompt", "--prefix_length", "4",
                     "--k_shot", "2", "--mmlu_mode", "generate", "--mmlu_holdout", "0.3", "--batch_size", "5"])
    assert m.method == PromptTuningConfig(length=4) and m.holdout == 0.3 and m.training.batch_size == 5
    assert m.settings == MMLUSettings(k_shot=2, mode="generate", batch_size=5)


def test_prefix_mode_adapter_flags_reach_their_fields():
    from minillama.adapters import LlamaAdapterConfig
    _, _, cfg = parse(["--option", "prefix", "--prefix_mode", "adapter", "--prefix_length", "7",
                       "--adapter_layers", "3", "--adapter_gate", "tanh"])
    assert cfg.method == LlamaAdapterConfig(length=7, layers=3, gate="tanh") and cfg.training.lr == 1e-2
    _, _, m = parse(["--option", "prefix", "--task", "mmlu", "--prefix_mode", "adapter"])
    assert m.method == LlamaAdapterConfig()


def test_export_peft_and_adapter_names_reach_their_fields():
    _, _, cfg = parse(["--option", "lora", "--export_peft", "out/peft"])
    assert cfg.export_peft == "out/peft"
    _, _, m = parse(["--option", "prefix", "--task", "mmlu", "--export_peft", "p"])
    assert m.export_peft == "p"
    _, _, cfg = parse(["--option", "prefix", "--load_adapter", "A", "B", "--adapter_names", "a, b",
                       "--dev", "a.txt,b.txt"])
    assert cfg.adapter_names == ["a", "b"] and cfg.load_adapter == ["A", "B"] and cfg.dev == "a.txt,b.txt"


def test_no_reparam_is_ptuning2(capsys):
    _, _, cfg = parse(["--option", "prefix", "--prefix_mode", "prefix", "--no_reparam", "--prefix_length", "3"])
    assert cfg.method == PrefixConfig(length=3) and cfg.method.method == "ptuning2"
    assert "ptuning2" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--option", "finetune", "--task", "mmlu"], "--task mmlu trains a prefix"),
    (["--option", "lora", "--lora_rank", "0"], "--lora_rank"),
    (["--option", "finetune", "--epochs", "0"], "--epochs"),
    (["--option", "mmlu", "--k_shot", "6"], "--k_shot"),
    (["--option", "prefix", "--load_adapter", "a", "b"], "--interpolate"),
    (["--option", "prefix", "--prefix_mode", "adapter", "--prefix_init", "vocab"], "--prefix_init does nothing"),
    (["--option", "prefix", "--prefix_mode", "prefix", "--adapter_gate", "tanh"],
     "--adapter_gate does nothing with --prefix_mode prefix"),
    (["--option", "prefix", "--prefix_mode", "adapter", "--adapter_layers", "0"], "--adapter_layers must be"),
    (["--option", "prefix", "--load_adapter", "A", "B", "--adapter_names", "a"], "--adapter_names needs one distinct"),
    (["--option", "prefix", "--task", "mmlu", "--adapter_names", "a"],
     "--adapter_names does nothing with --option prefix --task mmlu"),
    (["--option", "prompt", "--export_peft", "d"], "--export_peft: --option prompt trains no adapter"),
])
def test_bad_flag_values_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_nothing_outside_cli_reads_the_namespace():
    """tasks take typed configs: no module but cli.py reads argparse's Namespace."""
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[1] / "minillama"
    offenders = [f"{p}:{n}" for p in root.rglob("*.py") if p.name != "cli.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"getattr\(args|\bargs\.[a-z_]+", line)]
    assert offenders == []


def test_one_default_per_setting_for_classification_prefixes():
    """--option prefix alone and --option prefix --prefix_mode ptuning2 train the same thing
    (P-tuning v2, 60 vocabulary-initialised tokens, mean head, lr 1e-2); each flag given wins its
    field; --prefix_hidden alone names prefix tuning's MLP."""
    default, named = parse(["--option", "prefix"])[2], parse(["--option", "prefix", "--prefix_mode", "ptuning2"])[2]
    assert default == named
    assert (type(named.method), named.method.length, named.method.init, named.head, named.training.lr) == \
        (PrefixConfig, 60, "vocab", "mean", 1e-2)
    _, _, cfg = parse(["--option", "prefix", "--prefix_length", "7"])
    assert cfg.method == PrefixConfig(length=7, init="vocab")
    _, _, cfg = parse(["--option", "prefix", "--prefix_mode", "prefix"])
    assert cfg.method == PrefixTuningConfig(length=10, init="random") and cfg.head == "mean"
    _, _, cfg = parse(["--option", "prefix", "--prefix_hidden", "64"])  # the MLP's width: prefix tuning
    assert cfg.method == PrefixTuningConfig(hidden=64)
    _, _, cfg = parse(["--option", "prefix", "--prefix_head", "cls"])
    assert cfg.head == "cls"
    assert parse(["--option", "prefix", "--task", "e2e"])[2].method == PrefixTuningConfig()


def test_absent_default_model_gives_the_bundled_command(tmp_path, monkeypatch, capsys):
    """No --pretrained-model-path and no stories42M.pt: one line with the exact command that runs
    the same job on the bundled stories260K (only the flags not already given are added)."""
    monkeypatch.setattr("minillama.runconfig.resolve_repo_path", lambda path: path)  # as if setup.sh never ran
    monkeypatch.chdir(tmp_path)
    assert main(["--option", "generate", "--max_new_tokens", "4", "--norm", "rmsnorm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(the default --pretrained-model-path) not found: `bash setup.sh` downloads it" in err[0]
    assert err[0].startswith("error: stories42M.pt (the default")
    assert err[0].endswith("offline: .venv/bin/python run_llama.py --option generate --max_new_tokens 4 --norm rmsnorm "
                           "--pretrained-model-path assets/stories260K/stories260K.bin "
                           "--tokenizer assets/stories260K/tok512.model")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_package_imports_from_any_directory(tmp_path):
    """setup.sh installs minillama editable: the public API and `python -m minillama.metrics`
    work outside the repository root."""
    import subprocess
    import sys
    from conftest import REPO_ROOT
    found = subprocess.run([sys.executable, "-c", "import minillama; print(minillama.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == os.path.join(REPO_ROOT, "minillama", "__init__.py")
    usage = subprocess.run([sys.executable, "-m", "minillama.metrics", "--help"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: python -m minillama.metrics")


def test_flag_mistake_is_one_line_with_the_help_hint(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--option", "generate", "--no_such_flag"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: unrecognized arguments: --no_such_flag "
                                       "(run_llama.py --help lists every flag)\n")


def test_no_fast_runs_the_plain_core_and_refuses_sdpa_with_it(tmp_path, capsys):
    assert parse(["--option", "generate"])[1].fast is True  # the CLI's default: minillama.fast
    assert parse(["--option", "generate", "--no_fast"])[1].fast is False
    assert main(["--option", "generate", "--no_fast", "--use_sdpa", "--pretrained-model-path",
                 str(tmp_path / "absent.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --use_sdpa is one of the fast paths and --no_fast turns them off: drop one of the two"


@pytest.mark.parametrize("argv,message", [
    (["--option", "lora", "--k_shot", "2"], "--k_shot does nothing with --option lora: drop it "
                                            "(it is read by --option prompt; --option mmlu and --option prefix|bottleneck --task mmlu)"),
    (["--option", "finetune", "--k_shot", "0"], "--k_shot does nothing with --option finetune"),  # given = counted
    (["--option", "prompt", "--k_shot", "-1"], "--k_shot must be a non-negative number of examples, got -1"),
    (["--option", "prompt", "--checkpoint_dir", "ck", "--resume"], "--checkpoint_dir does nothing with --option prompt"),
    (["--option", "prefix", "--load_adapter", "A", "--checkpoint_dir", "ck", "--resume"],
     "--checkpoint_dir does nothing with --load_adapter (it evaluates saved adapters; nothing trains)"),
    (["--option", "lora", "--load_adapter", "A", "--lora_rank", "2"], "--lora_rank does nothing with --load_adapter"),
    (["--option", "prefix", "--load_adapter", "A", "--save_adapter", "B"], "--save_adapter does nothing with --load_adapter"),
    (["--option", "generate", "--bf16"], "--bf16 does nothing with --option generate"),
    (["--option", "generate", "--batch_size", "4"], "--batch_size does nothing with --option generate"),
    (["--option", "mmlu", "--temperature", "0.5"], "--temperature does nothing with --option mmlu"),
    (["--option", "mmlu", "--mmlu_holdout", "0.3"], "--mmlu_holdout does nothing with --option mmlu"),
    (["--option", "mmlu", "--label-names", "l.json"], "--label-names does nothing with --option mmlu"),
    (["--option", "lora", "--task", "e2e", "--label-names", "l.json"],
     "--label-names does nothing with --option lora --task e2e"),
    (["--option", "finetune", "--task", "e2e", "--save_adapter", "a"],
     "--save_adapter does nothing with --option finetune --task e2e"),
    (["--option", "prefix", "--task", "e2e", "--head_lr", "1e-3"], "--head_lr does nothing with --option prefix --task e2e"),
    (["--option", "lora", "--prefix_length", "3"], "--prefix_length does nothing with --option lora"),
    (["--option", "prefix", "--prefix_mode", "ptuning2", "--prefix_hidden", "8"],
     "--prefix_hidden does nothing with --prefix_mode ptuning2: drop it"),
    (["--option", "prefix", "--no_reparam"],
     "--no_reparam does nothing with --prefix_mode ptuning2 (the default of --option prefix --task classify)"),
    (["--option", "prefix", "--load_adapter", "A", "B", "--adapter_names", "a,b", "--log_jsonl", "l.jsonl"],
     "--log_jsonl does nothing with --adapter_names"),
    (["--option", "prefix", "--load_adapter", "A", "B", "--adapter_names", "a,b", "--train", "t.txt"],
     "--train does nothing with --adapter_names"),
    (["--option", "prompt", "--prefix_head", "verbalizer"], "--prefix_head does nothing with --option prompt"),
    (["--option", "prompt", "--hidden_dropout_prob", "0.1"], "--hidden_dropout_prob does nothing with --option prompt"),
])
def test_a_flag_the_run_does_not_read_is_refused(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message) and len(err.strip().splitlines()) == 1


def test_every_flag_has_its_readers():
    """Every flag of the parser is read by some runs, so none escapes the does-nothing check."""
    from minillama.cli import readers_of_flags
    dests = {a.dest for a in build_parser()._actions if a.option_strings} - {"help"}
    table = readers_of_flags()
    assert dests - set(table) == set() and set(table) - dests == set()


README_COMMANDS = [  # the README's commands, their optional parts included
    "--option generate --norm rmsnorm --epsilon 0.05 --max_new_tokens 75",
    "--option prompt --batch_size 10 --train data/sst-train.txt --dev data/sst-dev.txt --test data/sst-test.txt "
    "--label-names data/sst-label-mapping.json --dev_out sst-dev-prompting-output.txt "
    "--test_out sst-test-prompting-output.txt --use_gpu",
    "--option finetune --epochs 5 --lr 2e-5 --batch_size 80 --train data/sst-train.txt --dev data/sst-dev.txt "
    "--test data/sst-test.txt --label-names data/sst-label-mapping.json --dev_out sst-dev-finetuning-output.txt "
    "--test_out sst-test-finetuning-output.txt",
    "--option lora --epochs 5 --lr 2e-5 --batch_size 10 --train data/cfimdb-train.txt --dev data/cfimdb-dev.txt "
    "--test data/cfimdb-test.txt --label-names data/cfimdb-label-mapping.json --lora_rank 4 --lora_alpha 1.0",
    "--option prefix --train data/sst-train.txt --dev data/sst-dev.txt --test data/sst-test.txt "
    "--label-names data/sst-label-mapping.json --prefix_mode prompt",
    "--option generate --pretrained-model-path assets/Llama-3.2-1B-Instruct --chat "
    "--prompt_text haiku --dtype bfloat16",
    "--option mmlu --pretrained-model-path assets/Llama-3.2-1B-Instruct --chat --dtype bfloat16 --batch_size 32 "
    "--mmlu_out mmlu.json",
    "--option prefix --task mmlu --pretrained-model-path assets/Llama-3.2-1B-Instruct --chat --dtype float32 --bf16 "
    "--prefix_length 10 --epochs 10 --lr 5e-3 --batch_size 16 --weight_decay 0.01 --patience 3 --mmlu_mode generate "
    "--log_jsonl mmlu-prefix.jsonl --mmlu_out mmlu-prefix.json --save_adapter mmlu-prefix",
    "--option prefix --task e2e --prefix_length 10",
    "--option finetune --task e2e --max_train_rows 20000 --epochs 1 --beam_size 5",
    "--option lora --task e2e --train my.csv --dev my-dev.csv --test my-test.csv --source_column table "
    "--target_column text",
    "--option prefix --load_adapter sst-prefix-adapter imdb-prefix-adapter --adapter_names sst,imdb "
    "--dev data/sst-dev.txt,data/cfimdb-dev.txt --test data/sst-test.txt,data/cfimdb-test.txt",
    "--option prefix --prefix_mode adapter --adapter_layers 1 --adapter_gate tanh --prefix_head verbalizer",
    "--option lora --checkpoint_dir ck --save_every 5 --resume --warmup_steps 2 --lr_schedule cosine",
]


@pytest.mark.parametrize("command", README_COMMANDS)
def test_the_readme_commands_still_parse(command):
    name, _, cfg = parse(command.split())
    assert name in ("generate", "classify", "mmlu_eval", "mmlu_prefix", "e2e") and cfg is not None
