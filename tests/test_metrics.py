"""E2E scores (minillama/metrics/): the official scorer's example to its printed
digits and beyond, BLEU/NIST cases small enough to check by hand, mteval's
tokenisation, the Java-missing path, and the command line on the official formats.

Oracles:
* OFFICIAL_PRINTED: what tuetschek/e2e-metrics `measure_scores.py -p` prints for
  e2e/official-example (also recorded in the assets' MANIFEST.md).
* OFFICIAL_RAW: the unrounded values of the same run (measure_scores.py at commit
  1b9c4d8 with pycocoevalcap 1.2's jars, Java 17), to show how close we are.
* Hand computations, written out next to each small case.

The Java metrics (PTB tokenizer + METEOR jar: several seconds) run once, in the
module-scoped `official` fixture; every other test is pure Python.
"""
import math
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, asset
from minillama import metrics
from minillama.errors import MinillamaError
from minillama.cli import metrics_main as main
from minillama.metrics import (corpus_bleu, corpus_nist, e2e_scores, format_scores,
                               mteval_tokenize, nist_length_penalty, read_references)

OFFICIAL_PRINTED = {"BLEU": 0.7203, "NIST": 7.7889, "METEOR": 0.4801, "ROUGE_L": 0.7910, "CIDEr": 2.3039}
OFFICIAL_RAW = {"BLEU": 0.7202928494322162, "NIST": 7.788887609555574, "METEOR": 0.4800716745732023,
                "ROUGE_L": 0.7909526131515365, "CIDEr": 2.303943135258847}
OFFICIAL_STDOUT = """SCORES:
==============
BLEU: 0.7203
NIST: 7.7889
METEOR: 0.4801
ROUGE_L: 0.7910
CIDEr: 2.3039"""


def require(ok: bool, what: str):
    """Like conftest.asset: skip outside CI, fail in CI (which must have Java and pycocoevalcap)."""
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} missing in CI")
        pytest.skip(f"{what} not available")


def example_paths():
    return (asset("e2e/official-example/devel-conc.txt"), asset("e2e/official-example/baseline-output.txt"))


@pytest.fixture(scope="module")
def example():
    refs_path, out_path = example_paths()
    return metrics.read_and_check(refs_path, out_path)


@pytest.fixture(scope="module")
def official(example):
    """All five scores of the official example: the one run of the Java programs."""
    require(metrics.java_available(), "java")
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        require(False, "pycocoevalcap")
    return e2e_scores(*example)


@pytest.fixture
def no_java(monkeypatch, tmp_path):
    """A PATH on which there is no `java` (an empty directory)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not metrics.java_available()


# -- the official example -----------------------------------------------------------------
def test_example_file_shapes(example):
    references, outputs = example
    assert len(outputs) == len(references) == 10
    assert all(len(refs) >= 1 for refs in references)


@pytest.mark.slow
@pytest.mark.parametrize("name", metrics.METRIC_NAMES)
def test_official_example_all_five(official, name):
    assert round(official[name], 4) == OFFICIAL_PRINTED[name]
    # All five came out bit for bit equal here; the Java ones get a hair of room for
    # other Java versions.  BLEU and NIST are our own Python: exact.
    if name in metrics.JAVA_METRICS:
        assert official[name] == pytest.approx(OFFICIAL_RAW[name], rel=1e-12, abs=0)
    else:
        assert official[name] == OFFICIAL_RAW[name]


@pytest.mark.slow  # Java
def test_official_printout(official):
    assert format_scores(official) == OFFICIAL_STDOUT


def test_bleu_nist_without_java_equal_official(example, no_java):
    scores = e2e_scores(*example, java_metrics=False)
    assert scores["BLEU"] == OFFICIAL_RAW["BLEU"]
    assert scores["NIST"] == OFFICIAL_RAW["NIST"]
    assert {name: scores[name] for name in metrics.JAVA_METRICS} == dict.fromkeys(metrics.JAVA_METRICS)
    assert format_scores(scores) == "\n".join(OFFICIAL_STDOUT.splitlines()[:4])


def test_java_missing_is_one_line_error(example, no_java):
    with pytest.raises(MinillamaError) as e:
        e2e_scores(*example)
    message = str(e.value)
    assert "\n" not in message and "java" in message and "apt-get install -y default-jre-headless" in message
    assert "java_metrics=False" in message


def test_cli_without_java_prints_bleu_nist_then_error(no_java, capsys):
    assert main(list(example_paths())) == 2
    out, err = capsys.readouterr()
    assert out.strip() == "\n".join(OFFICIAL_STDOUT.splitlines()[:4])
    assert err.count("\n") == 1 and "default-jre-headless" in err


def test_cli_no_java_flag(capsys):
    assert main([*example_paths(), "--no_java"]) == 0
    out, err = capsys.readouterr()
    assert "BLEU: 0.7203\nNIST: 7.7889" in out and "METEOR" not in out and err == ""


@pytest.mark.slow
def test_cli_as_module():
    """`python -m minillama.metrics` runs (BLEU/NIST only, to keep Java out of it)."""
    done = subprocess.run([sys.executable, "-m", "minillama.metrics", *example_paths(), "--no_java"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2:] == ["BLEU: 0.7203", "NIST: 7.7889"]


# -- BLEU by hand -------------------------------------------------------------------------
def test_bleu_identical_is_one():
    assert corpus_bleu([["The cat sat on the mat."]], ["The cat sat on the mat."]) == 1.0


def test_bleu_is_case_insensitive():
    assert corpus_bleu([["the cat sat on the mat"]], ["THE Cat SAT on The MAT"]) == 1.0


def test_bleu_modified_precisions():
    # output "the cat sat on a mat" vs reference "the cat sat on the mat" (both 6 tokens):
    # 1-grams 5/6 (not "a"), 2-grams 3/5 (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3;
    # equal lengths: brevity penalty exp(1 - 6/6) = 1.  BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu([["the cat sat on the mat"]], ["the cat sat on a mat"]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(12 ** -0.25)


def test_bleu_clipping():
    # "the the the the" vs "the cat": 1-grams clipped to 1/4, no 2-gram matches, so the
    # zero counts are replaced by 1e-15 (the port's smoothing): BLEU is tiny but defined.
    # C = 4 > R = 2: no brevity penalty.
    expected = math.exp((math.log(1 / 4) + math.log(1e-15 / 3) + math.log(1e-15 / 2) + math.log(1e-15 / 1)) / 4)
    assert corpus_bleu([["the cat"]], ["the the the the"]) == pytest.approx(expected, rel=1e-12)


def test_bleu_brevity_penalty():
    # every n-gram of "a b c d" is in the 8-token reference: precisions 1, penalty exp(1 - 8/4)
    assert corpus_bleu([["a b c d e f g h"]], ["a b c d"]) == pytest.approx(math.exp(-1), rel=1e-12)


def test_bleu_closest_reference_ties_go_to_the_shorter():
    # output 4 tokens, references 2 and 6 tokens: both 2 away; the shorter (2) is chosen,
    # so C = 4 > R = 2 and there is no penalty (the longer would give exp(1 - 6/4))
    assert corpus_bleu([["a b", "a b c d e f"]], ["a b c d"]) == 1.0


def test_bleu_is_corpus_level():
    # counts are summed before dividing: two instances, 1-grams 4/4 + 2/4 ...
    refs, outs = [["a b c d"], ["w x y z"]], ["a b c d", "w x q r"]
    # 1-grams (4+2)/8, 2-grams (3+1)/6, 3-grams (2+0)/4, 4-grams (1+0)/2; C = R = 8
    expected = (6 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25
    assert corpus_bleu(refs, outs) == pytest.approx(expected, rel=1e-12)


# -- NIST by hand -------------------------------------------------------------------------
def test_nist_identical_by_hand():
    # reference = output = "the cat sat on the mat" (6 words; "the" twice).
    # 1-grams: info(w) = log2(6 / count(w)): "the" log2(3) (twice), the others log2(6);
    #          sum over the output's 6 words / 6 positions.
    # 2-grams: info(a b) = log2(count(a) / count(a b)): "the cat", "the mat" -> log2(2/1) = 1,
    #          "cat sat", "sat on", "on the" -> 0; sum 2 / 5 positions.
    # 3..5-grams: every (n-1)-gram prefix occurs once, like the n-gram: info 0.
    # Output as long as the reference: length penalty 1.
    expected = (2 * math.log2(3) + 4 * math.log2(6)) / 6 + 2 / 5
    assert corpus_nist([["the cat sat on the mat"]], ["the cat sat on the mat"]) == pytest.approx(expected, rel=1e-12)


def test_nist_length_penalty():
    assert nist_length_penalty(2, 3) == pytest.approx(0.5, rel=1e-12)   # beta's definition: 2/3 -> 0.5
    assert nist_length_penalty(5, 3) == 1.0
    assert nist_length_penalty(0, 3) == 0.0
    # "a b c d e" against "a b c d e f g h i j": unigram info log2(10/1) each, 5 matched /
    # 5 positions; longer n-grams carry no information (each prefix occurs once, like the
    # n-gram); times the penalty for the length ratio 5/10
    expected = math.log2(10) * nist_length_penalty(5, 10)
    assert corpus_nist([["a b c d e f g h i j"]], ["a b c d e"]) == pytest.approx(expected, rel=1e-12)


def test_nist_uses_mean_reference_length():
    # references of 2 and 8 words: mean 5 = the output's length -> no penalty.
    # Counts over both references: a:2, b:2, c..h:1, 10 words; "a b":2, every other n-gram 1.
    # 1-grams a, b, c, d, e: 2*log2(10/2) + 3*log2(10/1), over 5 positions
    # 2-grams: "a b" log2(count(a)/count(a b)) = log2(2/2) = 0, "b c" log2(2/1) = 1, others 0: 1/4
    # 3-grams: "a b c" log2(count(a b)/count(a b c)) = log2(2/1) = 1, others 0: 1/3
    # 4- and 5-grams: 0
    expected = (2 * math.log2(5) + 3 * math.log2(10)) / 5 + 1 / 4 + 1 / 3
    assert corpus_nist([["a b", "a b c d e f g h"]], ["a b c d e"]) == pytest.approx(expected, rel=1e-12)


def test_nist_short_outputs_have_no_5gram_positions():
    # 4 tokens: 5-gram positions sum to 0; the official port divides by zero there, we drop
    # that term.  What is left: unigrams log2(4/1) * 4 / 4 = 2, longer n-grams carry no information.
    assert corpus_nist([["a b c d"]], ["a b c d"]) == pytest.approx(2.0, rel=1e-12)


# -- mteval tokenisation ------------------------------------------------------------------
@pytest.mark.parametrize("text, tokens", [
    ("The Eagle, a café.", ["The", "Eagle", ",", "a", "café", "."]),
    ("prices £20-25 (cheap)!", ["prices", "£20", "-", "25", "(", "cheap", ")", "!"]),
    ("3.5 stars, 1,000 seats", ["3.5", "stars", ",", "1,000", "seats"]),
    ("don't family-friendly", ["don't", "family-friendly"]),
    ("a &amp; b &quot;x&quot;", ["a", "&", "b", '"', "x", '"']),
    ("hyphen-\nated  lines\nhere", ["hyphenated", "lines", "here"]),
    ("", [""]),   # the official port's quirk: an empty text is one empty token
])
def test_mteval_tokenize(text, tokens):
    assert mteval_tokenize(text) == tokens


# -- inputs and files ---------------------------------------------------------------------
@pytest.mark.parametrize("refs, outs, says", [
    ([["a"]], ["a", "b"], "2 outputs but 1 reference lists"),
    ([], [], "no outputs"),
    (["a b"], ["a b"], "references[0] is a string"),
    ([[]], ["a"], "references[0] is empty"),
    ([["a"]], "a", "single string"),
])
def test_bad_inputs(refs, outs, says):
    with pytest.raises(MinillamaError, match=re.escape(says)):
        e2e_scores(refs, outs, java_metrics=False)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_read_references_formats(tmp_path):
    multi = write(tmp_path / "multi.txt", "r1a\nr1b\n\n  r2a  \n\nr3a\n\n")
    assert read_references(multi) == [["r1a", "r1b"], ["r2a"], ["r3a"]]
    single = write(tmp_path / "single.txt", "one\ntwo\nthree\n")   # no blank line: one reference each
    assert read_references(single) == [["one"], ["two"], ["three"]]


@pytest.mark.parametrize("refs_text, out_text, says", [
    ("a\nb\n\nc\n", "x\n", r"out\.txt has 1 outputs \(lines\) but .*refs\.txt has 2 instances"),
    ("a\n\n\nb\n", "x\ny\n", r"refs\.txt:3: blank line"),
    ("\n\n", "x\n", r"refs\.txt:1: blank line"),
    ("", "x\n", r"refs\.txt: no references"),
    ("a\n", "", r"out\.txt: no outputs"),
])
def test_cli_bad_files(tmp_path, capsys, refs_text, out_text, says):
    refs = write(tmp_path / "refs.txt", refs_text)
    out = write(tmp_path / "out.txt", out_text)
    assert main([refs, out, "--no_java"]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == "" and err.count("\n") == 1
    assert re.search(says, err), err


def test_cli_missing_and_binary_files(tmp_path, capsys):
    out = write(tmp_path / "out.txt", "x\n")
    assert main([str(tmp_path / "nope.txt"), out]) == 2
    assert "nope.txt: No such file or directory" in capsys.readouterr().err
    assert main([str(tmp_path), out]) == 2
    assert ": Is a directory" in capsys.readouterr().err
    binary = tmp_path / "refs.bin"
    binary.write_bytes(b"\xff\xfe\x00a\n")
    assert main([str(binary), out]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_broken_java_is_one_line_error(example, monkeypatch, tmp_path):
    """A `java` that starts but fails (here a stub that exits 1) is a MinillamaError, not
    scores built from silently missing lines."""
    pytest.importorskip("pycocoevalcap")
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MinillamaError, match="java -version") as e:
        e2e_scores(*example)
    assert "\n" not in str(e.value)
