"""The documents say what the code is: docs/tour.md's line counts are the files' own, and every
file the tour names exists."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_tour_counts_the_lines_of_each_file_it_names():
    rows = re.findall(r"^\| \d+ \| `(minillama/[^`]+)` \| (\d+) \|", open(os.path.join(REPO, "docs", "tour.md")).read(),
                      flags=re.M)
    assert len(rows) >= 13
    for path, count in rows:
        with open(os.path.join(REPO, path)) as f:
            assert sum(1 for _ in f) == int(count), f"docs/tour.md: {path} has changed length; update its row"


def test_the_tour_total_is_the_sum_of_its_core_rows():
    text = open(os.path.join(REPO, "docs", "tour.md")).read()
    core = text.split("## Then")[0]
    counts = [int(n) for n in re.findall(r"^\| \d+ \| `minillama/[^`]+` \| (\d+) \|", core, flags=re.M)]
    assert f"Together: {sum(counts)} lines." in core


def test_the_readme_defaults_table_is_what_the_configs_say():
    from minillama.adapters.registry import trainers
    from minillama.cli import OPTION_METHODS, parse
    text = open(os.path.join(REPO, "README.md")).read()
    rows = re.findall(r"^\| `(\w+)`: [^|]+\| ([\d.e-]+) \| ([^|]+)\| ([\d.e-]+|—) \|$", text, flags=re.M)
    assert [r[0] for r in rows] == list(OPTION_METHODS)
    for method, lr, _, e2e_lr in rows:
        config = OPTION_METHODS[method]
        assert float(lr) == config.default_lr, method
        if e2e_lr == "—":  # an option --task e2e refuses
            assert OPTION_METHODS[method].trained_by() not in trainers("e2e"), method
        else:
            assert float(e2e_lr) == config.lr_for("e2e"), method
    default = parse(["--option", "prefix"])[2]
    assert "**`--option prefix`'s default**: 60 tokens, vocab init, mean head" in text
    assert (default.method.method, default.method.length, default.method.init, default.head) == \
        ("ptuning2", 60, "vocab", "mean")


def test_the_core_and_the_methods_of_the_tour_fit_in_one_sitting():
    """core/ plus LoRA and the prefix family (their settings modules aside) stay within 1,300 lines."""
    files = [os.path.join("minillama", "core", f) for f in os.listdir(os.path.join(REPO, "minillama", "core"))
             if f.endswith(".py")]
    files += [os.path.join("minillama", "adapters", f"{m}.py") for m in ("lora", "prefix", "prompt", "llama_adapter")]
    lines = sum(sum(1 for _ in open(os.path.join(REPO, f))) for f in files)
    assert lines <= 1300, f"{lines} lines: move what is not the idea itself beside it"
