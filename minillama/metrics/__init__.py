"""The five scores of the E2E NLG Challenge: BLEU, NIST, METEOR, ROUGE-L, CIDEr.

The challenge's official scorer (github.com/tuetschek/e2e-metrics,
`measure_scores.py -p`) is the reference these functions reproduce:

* BLEU-4 and NIST-5 follow its pure-Python port of NIST's mteval-v13a
  (`metrics/pymteval.py`): mteval's tokenisation, lowercased n-grams,
  corpus-level statistics.  They are written out by hand below, because
  they are short and every step is worth reading.
* METEOR 1.5, ROUGE-L and CIDEr-D come from the MS-COCO caption evaluation
  code (`pycocoevalcap`, PyPI), as the official scorer uses it: the Stanford
  PTB tokenizer (lowercased, punctuation removed) first, then the three
  scorers.  METEOR and the tokenizer are Java programs, so these three need
  `java` (8 or newer) on PATH.

Scales are the official ones: BLEU, METEOR and ROUGE-L in 0..1, NIST around
8 and CIDEr around 2 for good E2E systems.

Without Java
------------
`e2e_scores(references, outputs, java_metrics=False)` computes BLEU and NIST
alone (pure Python) and puts None for METEOR, ROUGE_L and CIDEr.  With the
default `java_metrics=True` a missing `java` is a MinillamaError that says how
to install it; the command line then still prints BLEU and NIST before the
error (exit code 2), and `--no_java` asks for BLEU and NIST only (exit 0).

Command line (the official file formats)
----------------------------------------
    python -m minillama.metrics REFS OUT [--no_java]

REFS holds the references, one per line, with a blank line between
instances (a file without any blank line has one reference per instance, as
in the official script); OUT holds one system output per line, in the same
order.  It prints, like the official script:

    SCORES:
    ==============
    BLEU: 0.7203
    NIST: 7.7889
    ...
"""
from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import MinillamaError

METRIC_NAMES = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")  # the official print order
JAVA_METRICS = ("METEOR", "ROUGE_L", "CIDEr")
BLEU_MAX_N = 4
NIST_MAX_N = 5
JAVA_INSTALL_HINT = "apt-get install -y default-jre-headless"

Ngram = Tuple[str, ...]


# -- mteval tokenisation -------------------------------------------------------------------
# mteval-v13a's "basic" (Western-language) tokenisation, as the official Python port does
# it.  Each rule below is one line of mteval's Perl; the order matters.

# ASCII punctuation that always becomes its own token.  Absent on purpose: the apostrophe
# (so "don't" stays one token), and "," "." "-" (they have the digit rules below).
_ALWAYS_SPLIT = "{|}~[\\]^_`!\"#$%&()*+:;<=>?@/"
_ALWAYS_SPLIT_RE = re.compile("([" + re.escape(_ALWAYS_SPLIT) + "])")
_PERIOD_COMMA_AFTER_NON_DIGIT = re.compile(r"([^0-9])([.,])")   # "end." -> "end ." but "3.5" stays
_PERIOD_COMMA_BEFORE_NON_DIGIT = re.compile(r"([.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")                    # "20-25" -> "20 - 25"
_SGML_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def mteval_tokenize(text: str) -> List[str]:
    """Split `text` into tokens the way mteval-v13a does (case is kept; scoring lowercases).

    Quirk kept from the official port: an empty text is one empty token, so an empty
    output still counts as length 1."""
    text = text.replace("<skipped>", "")
    text = text.replace("-\n", "")    # a word hyphenated across a line break is joined
    text = text.replace("\n", " ")
    for entity, char in _SGML_ENTITIES:
        text = text.replace(entity, char)
    text = f" {text} "
    text = _ALWAYS_SPLIT_RE.sub(r" \1 ", text)
    text = _PERIOD_COMMA_AFTER_NON_DIGIT.sub(r"\1 \2 ", text)
    text = _PERIOD_COMMA_BEFORE_NON_DIGIT.sub(r" \1 \2", text)
    text = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.split(" ")


def scoring_tokens(text: str) -> List[str]:
    """The tokens BLEU and NIST compare: mteval's tokens, lowercased (the official
    scorer is case-insensitive)."""
    return [token.lower() for token in mteval_tokenize(text)]


def ngrams(tokens: Sequence[str], n: int) -> List[Ngram]:
    """All n-grams of `tokens`, in order, as tuples."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def max_reference_counts(references: Sequence[Sequence[str]], n: int) -> Counter:
    """For each n-gram, the most times any ONE reference contains it: an output's
    n-gram counts as matched at most that often ("clipping")."""
    best: Counter = Counter()
    for reference in references:
        for gram, count in Counter(ngrams(reference, n)).items():
            best[gram] = max(best[gram], count)
    return best


def clipped_matches(output: Sequence[str], references: Sequence[Sequence[str]], n: int) -> Counter:
    """Each n-gram of the output with how many of its occurrences the references cover."""
    allowed = max_reference_counts(references, n)
    matches = Counter()
    for gram, count in Counter(ngrams(output, n)).items():
        if allowed[gram]:
            matches[gram] = min(count, allowed[gram])
    return matches


# -- BLEU --------------------------------------------------------------------------------
BLEU_ZERO_MATCHES = 1e-15   # the port's stand-ins for a zero count, so that log() is defined
BLEU_ZERO_LENGTH = 1e-9
BLEU_ZERO_OUTPUT = 1e-5     # stand-in for a total output length of 0 in the brevity penalty


def corpus_bleu(references: Sequence[Sequence[str]], outputs: Sequence[str], max_n: int = BLEU_MAX_N) -> float:
    """Corpus BLEU (Papineni et al. 2002) as the official scorer's mteval port computes it.

    Counts are summed over the whole corpus before dividing (not an average of sentence
    scores).  BLEU = brevity_penalty * geometric mean of the n-gram precisions, n = 1..4:
      precision_n   = clipped n-gram matches / n-gram positions in the outputs
      brevity       = exp(1 - R / C) when C <= R, else 1, where C is the outputs' length
                      and R the sum, per instance, of the reference length closest to
                      the output's (ties: the shorter reference).
    """
    matches = [0] * max_n
    positions = [0] * max_n
    output_length = reference_length = 0
    for refs, out in zip(references, outputs):
        out_tokens = scoring_tokens(out)
        ref_tokens = [scoring_tokens(r) for r in refs]
        for n in range(1, max_n + 1):
            matches[n - 1] += sum(clipped_matches(out_tokens, ref_tokens, n).values())
            # len - n + 1 even when negative (an output shorter than n): mteval's count, kept
            positions[n - 1] += len(out_tokens) - n + 1
        output_length += len(out_tokens)
        closest = min(ref_tokens, key=lambda r: (abs(len(r) - len(out_tokens)), len(r)))
        reference_length += len(closest)

    log_precision = sum(math.log(max(m, BLEU_ZERO_MATCHES) / max(p, BLEU_ZERO_LENGTH))
                        for m, p in zip(matches, positions))
    precision = math.exp(log_precision / max_n)
    brevity = 1.0
    if output_length <= reference_length:
        brevity = math.exp(1.0 - reference_length / (output_length or BLEU_ZERO_OUTPUT))
    return brevity * precision


# -- NIST --------------------------------------------------------------------------------
# NIST's length penalty is exp(-beta * ln(ratio)^2), with beta chosen so that an output
# 2/3 as long as the references gets a penalty of exactly 0.5.
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2


def nist_length_penalty(output_length: float, reference_length: float) -> float:
    """1 for outputs at least as long as the (average) references, falling towards 0 for shorter ones."""
    ratio = output_length / reference_length
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)


def corpus_nist(references: Sequence[Sequence[str]], outputs: Sequence[str], max_n: int = NIST_MAX_N) -> float:
    """Corpus NIST (Doddington 2002) as the official scorer's mteval port computes it.

    Like BLEU but each matched n-gram is weighted by how informative it is in the
    references of the whole corpus:
      info(w1..wn) = log2( count(w1..w(n-1)) / count(w1..wn) )
    (counts over every reference of every instance; for a unigram the numerator is the
    total number of reference words), so rare n-grams weigh more than "the" or "is".
      NIST = length_penalty * sum over n of (sum of info over matched n-grams) / n-gram positions
    with the length penalty comparing the outputs' length to the sum of each instance's
    mean reference length.
    """
    reference_counts: Counter = Counter()   # n-gram -> occurrences in all references; () -> all words
    instance_matches = []                   # per instance, per n: Counter of clipped matches
    positions = [0] * max_n
    output_length = 0
    mean_reference_length = 0.0
    for refs, out in zip(references, outputs):
        out_tokens = scoring_tokens(out)
        ref_tokens = [scoring_tokens(r) for r in refs]
        instance_matches.append([clipped_matches(out_tokens, ref_tokens, n) for n in range(1, max_n + 1)])
        for n in range(1, max_n + 1):
            positions[n - 1] += len(out_tokens) - n + 1   # may go negative, as in mteval
            for tokens in ref_tokens:
                reference_counts.update(ngrams(tokens, n))
        reference_counts[()] += sum(len(t) for t in ref_tokens)
        output_length += len(out_tokens)
        mean_reference_length += sum(len(t) for t in ref_tokens) / len(ref_tokens)

    # The information weights need the whole corpus, so they come after the loop.
    def info(gram: Ngram) -> float:
        # log(x, 2) (= ln x / ln 2) rather than log2(x): the port's spelling, and they can
        # differ in the last bit
        return math.log(reference_counts[gram[:-1]] / reference_counts[gram], 2)

    score = 0.0
    for n in range(max_n):
        weighted = 0.0   # summed instance by instance, in the official order: equal to the last bit
        for matches in instance_matches:
            weighted += sum(info(gram) * count for gram, count in matches[n].items())
        if positions[n] != 0:   # (the official port would divide by zero here)
            score += weighted / positions[n]
    return nist_length_penalty(output_length, mean_reference_length) * score


# -- the Java metrics (pycocoevalcap) -----------------------------------------------------
def java_available() -> bool:
    """Whether a `java` command is on PATH (the METEOR jar and the PTB tokenizer need it)."""
    return shutil.which("java") is not None


def require_java():
    if not java_available():
        raise MinillamaError("METEOR, ROUGE_L and CIDEr need Java 8+ but no 'java' is on PATH: install it "
                             f"({JAVA_INSTALL_HINT}), or ask for BLEU and NIST alone "
                             "(e2e_scores(..., java_metrics=False) / --no_java)")


def _one_line(text: str) -> str:
    """The PTB tokenizer reads one caption per line, so a caption must not contain a line
    break (Python's splitlines() knows every kind); the official scorer's files cannot
    contain one either, since it reads them line by line."""
    return " ".join(text.splitlines())


def coco_scores(references: Sequence[Sequence[str]], outputs: Sequence[str]) -> Dict[str, float]:
    """METEOR, ROUGE_L and CIDEr(-D) exactly as the official scorer gets them from the
    MS-COCO caption evaluation: PTB-tokenise references and outputs (two Java runs),
    then METEOR 1.5 (one more Java process), ROUGE-L (beta 1.2) and CIDEr-D (n=4,
    sigma=6, the x10 scale) on the tokenised text.  Needs `java` and pycocoevalcap."""
    require_java()
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise MinillamaError("METEOR, ROUGE_L and CIDEr need the pycocoevalcap package: "
                             ".venv/bin/pip install pycocoevalcap (or ask for BLEU and NIST alone "
                             "with java_metrics=False / --no_java)") from None

    # The COCO code keys everything by an "image" id; here an instance number.  Each
    # caption is a dict with a "caption" field, as in a COCO annotation file.
    gts = {i: [{"caption": _one_line(r)} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": _one_line(out)}] for i, out in enumerate(outputs)}
    meteor = None
    try:
        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        # pycocoevalcap pairs the tokenizer's output lines with the captions silently:
        # make sure none went missing before scoring.
        if sorted(gts) != list(range(len(references))) or sorted(res) != list(range(len(outputs))) \
                or any(len(gts[i]) != len(refs) for i, refs in enumerate(references)):
            raise MinillamaError("the PTB tokenizer returned a different number of lines than it was given "
                                 "(check `java -version` is 8 or newer)")
        meteor = Meteor()    # starts the METEOR jar (a few seconds: it loads its paraphrase table)
        scores = {"METEOR": meteor.compute_score(gts, res)[0],
                  "ROUGE_L": Rouge().compute_score(gts, res)[0],
                  "CIDEr": Cider().compute_score(gts, res)[0]}
    except (OSError, ValueError) as e:
        # A Java that fails to start or dies mid-way surfaces as a broken pipe or an
        # empty answer that float() cannot read.
        raise MinillamaError(f"the METEOR/PTB tokenizer Java programs failed ({type(e).__name__}: {e}); "
                             "check that `java -version` runs and is 8 or newer") from None
    finally:
        if meteor is not None:
            _stop_meteor(meteor)
    return {name: float(value) for name, value in scores.items()}


def _stop_meteor(meteor):
    """End the METEOR jar now instead of whenever the object is garbage collected.
    pycocoevalcap's own cleanup (__del__) waits for its lock, which an exception inside
    compute_score leaves held: release it so that the cleanup cannot hang either."""
    if meteor.lock.locked():
        meteor.lock.release()
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()   # (its __del__ later finds the process gone: nothing left to do)


# -- all five ----------------------------------------------------------------------------
def check_inputs(references: Sequence[Sequence[str]], outputs: Sequence[str]):
    """One reference list (at least one string) per output string, and at least one instance."""
    if isinstance(outputs, str) or isinstance(references, str):
        raise MinillamaError("e2e_scores: references must be a list of lists of strings and outputs "
                             "a list of strings (got a single string)")
    if len(references) != len(outputs):
        raise MinillamaError(f"e2e_scores: {len(outputs)} outputs but {len(references)} reference lists "
                             "(give one list of references per output)")
    if not outputs:
        raise MinillamaError("e2e_scores: no outputs to score")
    for i, (refs, out) in enumerate(zip(references, outputs)):
        if isinstance(refs, str):
            raise MinillamaError(f"e2e_scores: references[{i}] is a string; each instance needs a list "
                                 "of references (e.g. [ref] for a single one)")
        if not refs:
            raise MinillamaError(f"e2e_scores: references[{i}] is empty; each instance needs at least one reference")
        if not isinstance(out, str) or not all(isinstance(r, str) for r in refs):
            raise MinillamaError(f"e2e_scores: instance {i} holds a non-string (outputs and references are text)")


def e2e_scores(references: Sequence[Sequence[str]], outputs: Sequence[str],
               java_metrics: bool = True) -> Dict[str, Optional[float]]:
    """{"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"} of `outputs` (one string per
    instance) against `references` (a list of reference strings per instance), equal
    to the official E2E scorer's `measure_scores.py -p`.

    java_metrics=False: BLEU and NIST only (pure Python, no Java); the other three are
    None.  java_metrics=True and no `java` on PATH: MinillamaError saying how to install it.
    """
    check_inputs(references, outputs)
    if java_metrics:
        require_java()   # fail in the first millisecond, not after BLEU and NIST
    scores: Dict[str, Optional[float]] = {
        "BLEU": corpus_bleu(references, outputs),
        "NIST": corpus_nist(references, outputs),
    }
    scores.update(coco_scores(references, outputs) if java_metrics else dict.fromkeys(JAVA_METRICS))
    return scores


def format_scores(scores: Dict[str, Optional[float]]) -> str:
    """The official script's printout, `NAME: 0.1234` per computed metric."""
    lines = ["SCORES:", "=============="]
    lines += [f"{name}: {scores[name]:.4f}" for name in METRIC_NAMES if scores.get(name) is not None]
    return "\n".join(lines)


# -- the official file formats -----------------------------------------------------------
def _read_lines(path: str, what: str) -> List[str]:
    """The file's lines, each stripped of surrounding whitespace, as the official script
    reads them (it splits at every Unicode line break; so does str.splitlines)."""
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as f:   # -sig: drop a BOM if an editor added one
            return [line.strip() for line in f.read().splitlines()]
    except OSError as e:   # missing, a directory, unreadable: the system's words say which
        raise MinillamaError(f"{what} {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise MinillamaError(f"{what} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_references(path: str) -> List[List[str]]:
    """References file: one reference per line, instances separated by ONE blank line.
    A file with no blank line at all has one reference per instance (the official rule)."""
    lines = _read_lines(path, "references")
    instances: List[List[str]] = [[]]
    for number, line in enumerate(lines, start=1):
        if line:
            instances[-1].append(line)
        elif not instances[-1]:
            raise MinillamaError(f"{path}:{number}: blank line with no reference before it since the last "
                                 "blank line; separate instances by exactly one blank line")
        else:
            instances.append([])
    if not instances[-1]:   # a final blank line ends the last instance
        instances.pop()
    if not instances:
        raise MinillamaError(f"{path}: no references (expected one per line, a blank line between instances)")
    if len(instances) == 1:
        instances = [[ref] for ref in instances[0]]
    return instances


def read_outputs(path: str) -> List[str]:
    """System outputs: one per line (an empty line is an empty output)."""
    outputs = _read_lines(path, "outputs")
    if not outputs:
        raise MinillamaError(f"{path}: no outputs (expected one system output per line)")
    return outputs


def read_and_check(refs_path: str, outputs_path: str) -> Tuple[List[List[str]], List[str]]:
    references, outputs = read_references(refs_path), read_outputs(outputs_path)
    if len(references) != len(outputs):
        raise MinillamaError(f"{outputs_path} has {len(outputs)} outputs (lines) but {refs_path} has "
                             f"{len(references)} instances (groups of references separated by blank lines); "
                             "give one output line per instance, in the same order")
    return references, outputs


def score_files(refs_path: str, outputs_path: str, java_metrics: bool = True) -> str:
    """`python -m minillama.metrics REFS OUT` (flags in cli.metrics_main; metrics/__main__.py runs it): the official
    script's SCORES block.  Without Java, BLEU and NIST are printed before the error."""
    references, outputs = read_and_check(refs_path, outputs_path)
    if java_metrics and not java_available():
        print(format_scores(e2e_scores(references, outputs, java_metrics=False)))
        require_java()   # raises the install message
    return format_scores(e2e_scores(references, outputs, java_metrics=java_metrics))
