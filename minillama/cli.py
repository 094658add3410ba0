"""The command line of run_llama.py: flags -> typed configs -> one task's `run`.

Flag names follow the course's run_llama.py; options add their own groups.  This is
the only module that reads argparse's Namespace.  Every flag's default lives on its
config field (a flag not given is simply absent here, so the dataclass default
applies); the help texts read them from there.  User mistakes (MinillamaError)
print one line and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shlex
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from . import distributed, files, flags
from .adapters.registry import REGISTRY, trainers
from .errors import MinillamaError, show_one_line
from .mmlu import MMLUSettings
from .runconfig import RunConfig, seed_everything
from .classification import PREFIX_HEAD, PREFIX_MODE
from .tasks.classify import ClassifyConfig
from .tasks.e2e import E2EConfig
from .tasks.generate import GenerateConfig
from .tasks.mmlu_eval import MMLUEvalConfig
from .tasks.mmlu_prefix import MMLUPrefixConfig
from .tasks.multitask import MultitaskConfig, TaskConfig
from .train import TrainConfig

METHOD_CONFIGS = [m.config for m in REGISTRY.values()]
METHOD_OPTIONS = tuple(dict.fromkeys(config.trained_by() for config in METHOD_CONFIGS))
OPTIONS = ("generate", "prompt", *METHOD_OPTIONS, "mmlu")
TASKS = ("classify", "mmlu", "e2e")
PREFIX_MODES = {config.method: config for config in METHOD_CONFIGS if config.trained_by() == "prefix"}
OPTION_METHODS = {config.method: config for config in METHOD_CONFIGS}  # the README's defaults table
TRAINING_OPTIONS = METHOD_OPTIONS
CLASSIFY_OPTIONS = ("prompt",) + TRAINING_OPTIONS
EVALUATING_OPTIONS = CLASSIFY_OPTIONS + ("mmlu",)  # every option but generate
# Every config whose fields flags set, in --help's order (their flags: minillama/flags.py)
SECTIONS = {ClassifyConfig: "classification", TrainConfig: "training", MMLUSettings: "mmlu", MMLUEvalConfig: "mmlu",
            MMLUPrefixConfig: "mmlu (--option prefix --task mmlu)", E2EConfig: "e2e (conditional generation)",
            TaskConfig: "multi-task (--option prefix --task_names): the tasks",
            MultitaskConfig: "multi-task: what the tasks share"}
TASK_CONFIGS = tuple(SECTIONS)


TASK_WORDS = {"mmlu": "trains a prefix or bottleneck adapters on MMLU", "e2e": "trains a generator"}


def or_list(words) -> str:
    """'a, b or c'."""
    return " or ".join(filter(None, (", ".join(words[:-1]), words[-1])))


def lr_defaults() -> str:
    """Every method's default learning rate and its per-task ones, for --lr's help."""
    def words(config) -> str:
        tasks = ", ".join(f"{task} {lr:g}" for task, lr in config.task_lr.items())
        return f"{config.method} {config.default_lr:g}" + (f" ({tasks})" if tasks else "")
    return "; ".join(words(config) for config in METHOD_CONFIGS)


def task_defaults(dest: str) -> str:
    """' (classify's ptuning2: 60)': the per-task defaults (task_settings) a method flag has."""
    notes = [f"{task}'s {config.method}: {settings[f.name]}" for config in METHOD_CONFIGS
             for f, spec in flags.flagged_fields(config) if spec.dest == dest
             for task, settings in config.task_settings.items() if f.name in settings]
    return f" ({'; '.join(dict.fromkeys(notes))})" if notes else ""


HELP_CONTEXT = {"method_lrs": lr_defaults(), "peft_methods": ", ".join(name for name, m in REGISTRY.items() if m.peft)}


class OneLineParser(argparse.ArgumentParser):
    """A flag mistake is one line and the --help hint, not the whole usage (exit code 2)."""

    def error(self, message: str):
        distributed.report_failure(f"error: {message} ({self.prog} --help lists every flag)")  # once under torchrun
        self.exit(2)


def option_help() -> str:
    methods = {}
    for config in METHOD_CONFIGS:
        methods.setdefault(config.trained_by(), []).append(config.summary)
    words = ["generate: continue a prompt", "prompt: zero-shot (or --k_shot) prompting"]
    words += [f"{option}: {' | '.join(summaries)}" for option, summaries in methods.items()]
    return "; ".join(words + ["mmlu: evaluate on MMLU"])


def build_parser() -> argparse.ArgumentParser:
    """The parser, from the flags declared on the config fields (flags.flag): each flag once."""
    p = OneLineParser(prog="run_llama.py", description="minillama coursework tasks",
                      argument_default=argparse.SUPPRESS)
    p.add_argument("--option", type=str, required=True, choices=OPTIONS, help=option_help())
    p.add_argument("--task", type=str, choices=TASKS,
                   help="what a training option trains on: the course's classification data (default), MMLU "
                        f"(--option {'|'.join(trainers('mmlu'))}) or conditional generation (e2e)")
    p.add_argument("--use_gpu", action="store_true", help="run on CUDA when there is one")
    flags.check_declared_once((RunConfig, GenerateConfig, *TASK_CONFIGS, *METHOD_CONFIGS))
    declared: Dict[str, flags.Flag] = {}
    flags.add_flags(p, RunConfig, declared, HELP_CONTEXT)
    flags.add_flags(p.add_argument_group("generate"), GenerateConfig, declared, HELP_CONTEXT)
    for config, title in SECTIONS.items():
        flags.add_flags(p.add_argument_group(title), config, declared, HELP_CONTEXT)
    for option in METHOD_OPTIONS:
        g = p.add_argument_group(f"--option {option}")
        if option == "prefix":
            g.add_argument("--prefix_mode", type=str, choices=list(PREFIX_MODES), help="; ".join(
                f"{mode}: {config.summary}" for mode, config in PREFIX_MODES.items()) + " (default: the task's; "
                f"classification: {PREFIX_MODE} with {settings_words(PREFIX_MODE)}, read by the {PREFIX_HEAD} head)")
        for config in (c for c in METHOD_CONFIGS if c.trained_by() == option):
            flags.add_flags(g, config, declared, HELP_CONTEXT, note=task_defaults)
    return p


def settings_words(mode: str) -> str:
    settings = PREFIX_MODES[mode].task_settings.get("classify", {})
    return ", ".join(f"{name} {value}" for name, value in settings.items())


# -- which flags each option and task reads -----------------------------------------------------
@dataclass(frozen=True)
class Asked:
    """What a command line asks for, as far as it decides which flags are read."""
    option: str
    task: str                   # classify | mmlu | e2e (--option mmlu: mmlu; --option generate: generate)
    loads: bool                 # --load_adapter: evaluates saved adapters, nothing trains
    mixed: bool                 # --adapter_names: several adapters, each on its own files
    mode: Optional[str] = None  # the method that trains (--option prefix: its mode)
    mode_given: bool = False    # --prefix_mode given (else the task's default)

    @property
    def trains(self) -> bool:
        return self.option in TRAINING_OPTIONS and not self.loads


@dataclass(frozen=True)
class Readers:
    """The runs that read a flag: every requirement given must hold (None: any)."""
    options: Optional[Tuple[str, ...]] = None
    tasks: Optional[Tuple[str, ...]] = None
    mixed: Optional[bool] = None
    trains: Optional[bool] = None
    modes: Optional[Tuple[str, ...]] = None
    who: Optional[str] = None  # the readers in words, where the requirements above say it badly

    def first_unmet(self, asked: Asked) -> Optional[int]:
        """Index of the first requirement `asked` misses (in the order above), None if it reads them."""
        checks = (self.options is None or asked.option in self.options,
                  self.tasks is None or asked.task in self.tasks,
                  self.mixed is None or asked.mixed == self.mixed,
                  self.trains is None or asked.trains == self.trains,
                  self.modes is None or asked.mode in self.modes)
        return next((i for i, ok in enumerate(checks) if not ok), None)

    def words(self) -> str:
        """The runs that read these flags, in words."""
        if self.who:
            return self.who
        words = [f"--option {'|'.join(self.options)}" if self.options else "",
                 f"--task {'|'.join(self.tasks)}" if self.tasks else "",
                 f"--prefix_mode {'|'.join(self.modes)}" if self.modes else "",
                 "when training (no --load_adapter)" if self.trains else "",
                 "without --adapter_names" if self.mixed is False else ""]
        return " ".join(w for w in words if w) or "every command"


# Which runs read a flag, by the `readers` name its field declares.  A flag given that no reader
# of the run reads is refused (check_flags_read): a flag that would do nothing never passes
# silently.  A method's own flags are read by the runs that train it (method_readers).
READERS: Dict[str, Readers] = {
    "run": Readers(),
    "bf16": Readers(options=EVALUATING_OPTIONS),
    "generate": Readers(options=("generate",)),
    "batch": Readers(options=EVALUATING_OPTIONS),
    "adapters": Readers(options=EVALUATING_OPTIONS),
    "log": Readers(options=EVALUATING_OPTIONS, mixed=False),
    "training": Readers(options=TRAINING_OPTIONS, trains=True),
    "save": Readers(options=TRAINING_OPTIONS, tasks=("classify", "mmlu"), trains=True),
    "export": Readers(options=CLASSIFY_OPTIONS, tasks=("classify", "mmlu", "e2e")),
    "export_adapterhub": Readers(options=CLASSIFY_OPTIONS, tasks=("classify", "e2e")),
    "classify": Readers(options=CLASSIFY_OPTIONS, tasks=("classify",)),
    "classify_train": Readers(options=CLASSIFY_OPTIONS, tasks=("classify",), mixed=False),
    "head": Readers(options=TRAINING_OPTIONS, tasks=("classify",), trains=True),
    "mixed": Readers(options=CLASSIFY_OPTIONS, tasks=("classify",)),
    "multitask": Readers(options=("prefix",), tasks=("classify",), mixed=False, trains=True),
    "k_shot": Readers(options=("prompt",), tasks=("classify",), who="--option prompt"),
    "mmlu": Readers(tasks=("mmlu",), who=f"--option mmlu and --option {'|'.join(trainers('mmlu'))} --task mmlu"),
    "mmlu_eval": Readers(options=("mmlu",)),
    "mmlu_prefix": Readers(options=trainers("mmlu"), tasks=("mmlu",), trains=True),
    "e2e": Readers(tasks=("e2e",)),
    "e2e_train": Readers(tasks=("e2e",), trains=True),
    "e2e_save": Readers(options=tuple(dict.fromkeys(c.trained_by() for c in METHOD_CONFIGS if c.has_adapter_file)),
                        tasks=("e2e",), trains=True),
}
SELECTION_READERS = {"option": READERS["run"], "task": READERS["run"], "use_gpu": READERS["run"],
                     "prefix_mode": Readers(options=("prefix",), trains=True)}


def readers_of_flags() -> Dict[str, List[Readers]]:
    """dest -> the Readers of every field (or switch) that flag sets.  A method's flags are read
    by the runs that train it: per option, the prefix modes whose config has the flag (all of
    them: no mode requirement)."""
    table: Dict[str, List[Readers]] = {dest: [r] for dest, r in SELECTION_READERS.items()}
    for config in (RunConfig, GenerateConfig, *TASK_CONFIGS):
        for _, spec in flags.flagged_fields(config):
            table.setdefault(spec.dest, []).append(READERS[spec.readers])
    methods: Dict[str, Dict[str, List[str]]] = {}  # dest -> option -> the methods reading it
    for config in METHOD_CONFIGS:
        for dest in flags.flag_names(config) + [s.dest for s in config.switches]:
            methods.setdefault(dest, {}).setdefault(config.trained_by(), []).append(config.method)
    for dest, by_option in methods.items():
        for option, names in by_option.items():
            modes = tuple(names) if option == "prefix" and set(names) != set(PREFIX_MODES) else None
            table.setdefault(dest, []).append(Readers(options=(option,), trains=True, modes=modes))
    return table


def prefix_mode(ns: Dict[str, Any], task: str) -> str:
    """The prefix mode a run trains: --prefix_mode; else prefix tuning when --prefix_hidden names
    its MLP; else the task's default (classification: PREFIX_MODE; the others: prefix tuning)."""
    if "prefix_mode" in ns:
        return ns["prefix_mode"]
    return PREFIX_MODE if task == "classify" and "prefix_hidden" not in ns else "prefix"


def method_class(ns: Dict[str, Any], task: str):
    """The config class of the method a training option trains (None: --option prompt)."""
    option = ns["option"]
    if option == "prefix":
        return PREFIX_MODES[prefix_mode(ns, task)]
    return next((c for c in METHOD_CONFIGS if c.trained_by() == option), None)


def asked(ns: Dict[str, Any]) -> Asked:
    option = ns["option"]
    task = {"mmlu": "mmlu", "generate": "generate"}.get(option, ns.get("task", "classify"))
    loads = bool(ns.get("load_adapter"))
    method = method_class(ns, task) if option in TRAINING_OPTIONS and not loads else None
    mode = method.method if option == "prefix" and method is not None else None
    return Asked(option, task, loads, "adapter_names" in ns, mode, "prefix_mode" in ns)


def refusal_context(a: Asked, unmet: int) -> str:
    """The part of the command that leaves a flag unread, for requirement `unmet` (Readers' order)."""
    run = f"--option {a.option}" + (f" --task {a.task}" if a.task not in ("classify", a.option) else "")
    if unmet == 2:
        return "--adapter_names (each adapter evaluated on its own files)"
    if unmet == 3:
        return "--load_adapter (it evaluates saved adapters; nothing trains)" if a.loads else run
    if unmet == 4:
        return f"--prefix_mode {a.mode}" + ("" if a.mode_given else f" (the default of --option {a.option} "
                                                                       f"--task {a.task})")
    return run


def check_flags_read(ns: Dict[str, Any], spelling: Dict[str, str]):
    """Refuse, in one line, the first flag given that no reader of this run reads.  `spelling`:
    dest -> the flag as typed (--label-names)."""
    a = asked(ns)
    table = readers_of_flags()
    for dest in ns:
        readers = table.get(dest, [])
        unmet = [r.first_unmet(a) for r in readers]
        if not readers or None in unmet:
            continue
        closest = max(unmet)  # the reader this run comes nearest to
        words = "; ".join(dict.fromkeys(r.words() for r in readers))
        raise MinillamaError(f"{spelling.get(dest, '--' + dest)} does nothing with {refusal_context(a, closest)}: "
                             f"drop it (it is read by {words})")


def flag_spelling(parser: argparse.ArgumentParser) -> Dict[str, str]:
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


# -- flags -> configs ----------------------------------------------------------------------------
def choose_device(use_gpu: bool) -> str:
    if use_gpu:
        if torch.cuda.is_available():
            return "cuda"
        print("--use_gpu: no CUDA device available, running on CPU", file=sys.stderr)
    return "cpu"


def run_config(ns: Dict[str, Any]) -> RunConfig:
    return RunConfig(device=choose_device(ns.get("use_gpu", False)), **flags.given(ns, RunConfig))


def method_config(ns: Dict[str, Any], task: str = "classify"):
    """The adaptation method of a training option, from its flags (None: --option prompt): the
    method's settings for `task` (its config's task_settings), each flag given winning field by
    field, then its switches (the config's from_flags)."""
    config = method_class(ns, task)
    if config is None:
        return None
    switches = {s.dest for s in config.switches if ns.get(s.dest)}
    return config.from_flags({**config.task_settings.get(task, {}), **flags.given(ns, config)}, switches)


def training_config(ns: Dict[str, Any], base: Optional[TrainConfig] = None) -> TrainConfig:
    """The training flags given, over `base` (a task's default TrainConfig, else TrainConfig())."""
    return dataclasses.replace(base or TrainConfig(), **flags.given(ns, TrainConfig))


def task_config(ns: Dict[str, Any], spelling: Optional[Dict[str, str]] = None) -> Tuple[str, Any]:
    """(task module name, its config) for the option and --task given; a flag the run would not
    read is refused first (READERS)."""
    option, task = ns["option"], ns.get("task", "classify")
    if task != "classify" and option not in trainers(task) + (("mmlu",) if task == "mmlu" else ()):
        raise MinillamaError(f"--task {task} {TASK_WORDS[task]}: use --option {or_list(trainers(task))}"
                             + (" (or --option mmlu to evaluate)" if task == "mmlu" else "") + f", not --option {option}")
    check_flags_read(ns, spelling or flag_spelling(build_parser()))
    if option == "generate":
        return "generate", GenerateConfig(**flags.given(ns, GenerateConfig))
    if option == "mmlu":
        return "mmlu_eval", MMLUEvalConfig(settings=MMLUSettings(**flags.given(ns, MMLUSettings)),
                                           **flags.given(ns, MMLUEvalConfig))
    # with --load_adapter, the adapter's own method is read from its file
    method = method_config(ns, task)
    if task == "mmlu":
        return "mmlu_prefix", MMLUPrefixConfig(settings=MMLUSettings(**flags.given(ns, MMLUSettings)), option=option,
                                               method=method,
                                               training=training_config(ns), **flags.given(ns, MMLUPrefixConfig))
    if task == "e2e":
        return "e2e", E2EConfig(option=option, method=method, training=training_config(ns, default(E2EConfig, "training")),
                                **flags.given(ns, E2EConfig))
    if "task_names" in ns or "shared_prefix_length" in ns:  # one prefix per task, in one run (tasks/multitask.py)
        if "task_names" not in ns:
            raise MinillamaError("--shared_prefix_length shares prefix positions between the tasks of --task_names: "
                                 "give --task_names, or drop it")
        return "multitask", MultitaskConfig.from_lists(flags.given(ns, TaskConfig), method=method,
                                                       training=training_config(ns), **flags.given(ns, MultitaskConfig))
    return "classify", ClassifyConfig(option=option, method=method, training=training_config(ns),
                                      **flags.given(ns, ClassifyConfig))


def default(cls, name: str) -> Any:
    """The default of a config field."""
    return flags.field_default({f.name: f for f in dataclasses.fields(cls)}[name])


def parse(argv: Optional[List[str]] = None, device: Optional[str] = None) -> Tuple[str, RunConfig, Any]:
    """(task module name, RunConfig, task config) from the command line; `device`: this
    rank's, when torchrun launched the process (distributed.init)."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    name, cfg = task_config(ns, flag_spelling(parser))
    if getattr(cfg, "trains", False):
        distributed.check_global_batch(cfg.training.batch_size)  # under torchrun, before anything loads
    run = run_config(ns)
    if device is not None:
        run = dataclasses.replace(run, device=device, progress=run.progress and distributed.is_main())
    return name, run, cfg


BUNDLED_MODEL = {"--pretrained-model-path": "assets/stories260K/stories260K.bin",
                 "--tokenizer": "assets/stories260K/tok512.model", "--norm": "rmsnorm"}


def bundled_model_command(argv: List[str]) -> Optional[str]:
    """With no --pretrained-model-path: the exact command that runs the same job on the
    bundled stories260K (its tokenizer and norm added unless given), for the error a
    missing stories42M.pt gives (offline, before setup.sh could download it)."""
    given_flags = {a.split("=")[0] for a in argv}
    if "--pretrained-model-path" in given_flags:
        return None
    extra = [x for flag, value in BUNDLED_MODEL.items() if flag not in given_flags for x in (flag, value)]
    return shlex.join([".venv/bin/python", "run_llama.py", *argv, *extra])


def use_gpu_asked(argv: Optional[List[str]]) -> bool:
    return "--use_gpu" in (sys.argv[1:] if argv is None else argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; under torchrun every rank runs it (distributed.py), rank 0 alone
    prints and writes, and every rank's process ends here (distributed.leave)."""
    try:
        status = run_command(argv)
    except BaseException:  # a bug: its traceback follows, the process group destroyed first
        distributed.shutdown()
        raise
    distributed.leave(status)
    return status


def run_command(argv: Optional[List[str]]) -> int:
    """The command's exit status: 0 done, 2 a user mistake (one line printed), 130 interrupted."""
    files.start_run()  # a full disk names what this run had written
    try:
        device = distributed.init(use_gpu_asked(argv))  # None unless launched by torchrun
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")  # rank 0 alone prints
        name, run_cfg, cfg = parse(argv, device)
        run_cfg = dataclasses.replace(run_cfg, bundled_command=bundled_model_command(
            sys.argv[1:] if argv is None else list(argv)))
        seed_everything(run_cfg.seed)
        with warnings.catch_warnings():
            warnings.showwarning = show_one_line  # minillama's warnings: one line, no file:line
            importlib.import_module(f"minillama.tasks.{name}").run(run_cfg, cfg)
    except MinillamaError as e:
        distributed.report_failure(f"error: {e}")  # under torchrun: once, and every rank exits 2
        return 2
    except OSError as e:  # a full disk outside files.atomic_write_group (which says it in its own line)
        if e.errno not in files.DISK_FULL:
            raise
        distributed.report_failure(f"error: {files.disk_full([e.filename or 'an output'], cleaned=False)}")
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


# -- python -m minillama.metrics ------------------------------------------------------------
def metrics_main(argv: Optional[List[str]] = None) -> int:
    """E2E scores of OUT against REFS, as the official measure_scores.py -p prints them.
    Exit codes: 0 every asked score printed; 2 a user mistake (bad file, or no Java for the
    Java metrics: BLEU and NIST are printed first)."""
    from .metrics import score_files
    p = argparse.ArgumentParser(prog="python -m minillama.metrics",
                                description="E2E NLG Challenge scores (BLEU, NIST, METEOR, ROUGE_L, CIDEr), "
                                            "equal to the official measure_scores.py -p")
    p.add_argument("references", metavar="REFS", help="references, one per line, a blank line between instances")
    p.add_argument("outputs", metavar="OUT", help="system outputs, one per line")
    p.add_argument("--no_java", action="store_true",
                   help="BLEU and NIST only (pure Python; METEOR, ROUGE_L and CIDEr need Java)")
    ns = p.parse_args(argv)
    try:
        print(score_files(ns.references, ns.outputs, java_metrics=not ns.no_java))
    except MinillamaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
