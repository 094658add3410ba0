"""MMLU (Hendrycks et al. 2021) questions: reading the original CSVs and
writing the standard prompts.

Layout (the data release of github.com/hendrycks/test, what setup.sh fetches):

    <mmlu_dir>/dev/<subject>_dev.csv     5 questions per subject (few-shot exemplars)
    <mmlu_dir>/val/<subject>_val.csv     1531 questions in all
    <mmlu_dir>/test/<subject>_test.csv   14042 questions in all

Each CSV row is `question,A,B,C,D,answer` with no header; fields may hold
quoted commas and newlines (the csv module handles both); answer is one of
A, B, C, D.  Subjects are read from the file names (57 in the release).

Prompt (mirrors evaluate.py of hendrycks/test exactly, including the double
space its format_subject leaves after "about"):

    The following are multiple choice questions (with answers) about  abstract algebra.

    {question}
    A. {a}
    B. {b}
    C. {c}
    D. {d}
    Answer: {letter}          <- k-shot exemplars (then a blank line)
    ...
    {question}
    A. ...
    Answer:                   <- the model continues with " A" / " B" / ...

For Instruct models (`chat=True`) the same text, minus the final "Answer:",
plus an instruction to reply with the letter only, is the user message of the
chat format; the assistant's reply begins with the letter.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import MinillamaError
from .files import resolve_repo_path

LETTERS = ("A", "B", "C", "D")
SPLITS = ("dev", "val", "test")
N_COLUMNS = 6  # question, A, B, C, D, answer
CHAT_INSTRUCTION = "Answer with only the letter (A, B, C or D) of the correct option."


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: Tuple[str, str, str, str]
    answer: str   # "A".."D"
    source: str   # "file:line" where the row starts, for messages

    @property
    def label(self) -> int:
        """Index of the answer letter: 0..3."""
        return LETTERS.index(self.answer)


# -- reading ------------------------------------------------------------------------------
def read_csv(path: str, subject: str) -> List[Question]:
    """Every row of one `<subject>_<split>.csv`; a row with the wrong number of
    columns or an answer outside A-D is a MinillamaError naming file and line."""
    questions = []
    try:
        with open(path, "r", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            start = 1  # first physical line of the current record (fields may span lines)
            for row in reader:
                where = f"{path}:{start}"
                start = reader.line_num + 1
                if not row:  # a blank line
                    continue
                if len(row) != N_COLUMNS:
                    raise MinillamaError(f"{where}: expected {N_COLUMNS} columns (question,A,B,C,D,answer), "
                                         f"got {len(row)}: is this an MMLU CSV from the hendrycks/test release?")
                answer = row[5].strip()
                if answer not in LETTERS:
                    raise MinillamaError(f"{where}: answer {row[5][:20]!r} is not one of A, B, C, D "
                                         "(last column must be the answer letter)")
                questions.append(Question(subject, row[0], tuple(row[1:5]), answer, where))
    except csv.Error as e:
        raise MinillamaError(f"{path}: malformed CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise MinillamaError(f"{path}: not UTF-8 text ({e.reason})") from None
    return questions


def split_dir(mmlu_dir: str, split: str) -> str:
    if split not in SPLITS:
        raise MinillamaError(f"MMLU split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = os.path.join(resolve_repo_path(mmlu_dir), split)
    if not os.path.isdir(path):
        raise MinillamaError(f"MMLU {split} split not found: {path} is not a directory (run ./setup.sh, "
                             "which puts MMLU in data/mmlu, or pass --mmlu_dir)")
    return path


def list_subjects(mmlu_dir: str, split: str = "test") -> List[str]:
    """Subject names from the file names `<subject>_<split>.csv`, sorted."""
    suffix = f"_{split}.csv"
    names = sorted(f[:-len(suffix)] for f in os.listdir(split_dir(mmlu_dir, split)) if f.endswith(suffix))
    if not names:
        raise MinillamaError(f"{os.path.join(mmlu_dir, split)}: no *{suffix} files (is --mmlu_dir the MMLU data "
                             "directory holding dev/ val/ test/?)")
    return names


def parse_subjects(text: Optional[str], available: Sequence[str]) -> List[str]:
    """--subjects 'a,b' checked against the files; None or '' means all."""
    if not text:
        return list(available)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise MinillamaError(f"--subjects: unknown MMLU subject(s) {', '.join(unknown)} "
                             f"(known: {', '.join(available[:4])}, ... {len(available)} in all)")
    return list(dict.fromkeys(wanted))


def load_split(mmlu_dir: str, split: str, subjects: Optional[Sequence[str]] = None,
               limit: Optional[int] = None) -> Dict[str, List[Question]]:
    """subject -> its questions in file order (the first `limit` of each when given)."""
    available = list_subjects(mmlu_dir, split)
    subjects = list(available) if subjects is None else list(subjects)
    out = {}
    for subject in subjects:
        path = os.path.join(mmlu_dir, split, f"{subject}_{split}.csv")
        if not os.path.isfile(path):
            raise MinillamaError(f"{path}: missing (subject {subject} has no {split} file)")
        out[subject] = read_csv(path, subject)[:limit]
    return out


def flatten(by_subject: Dict[str, List[Question]]) -> List[Question]:
    return [q for qs in by_subject.values() for q in qs]


# -- prompts ------------------------------------------------------------------------------
def format_subject(subject: str) -> str:
    """'abstract_algebra' -> ' abstract algebra' (leading space as in hendrycks/test)."""
    return "".join(" " + part for part in subject.split("_"))


def prompt_header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"


def format_question(q: Question, with_answer: bool) -> str:
    """'{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:' (+ ' X\\n\\n' for an exemplar)."""
    text = q.question + "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    text += "\nAnswer:"
    if with_answer:
        text += f" {q.answer}\n\n"
    return text


def build_prompt(q: Question, shots: Sequence[Question] = ()) -> str:
    """The standard k-shot prompt (k = len(shots)), ending in 'Answer:'."""
    return prompt_header(q.subject) + "".join(format_question(s, True) for s in shots) + format_question(q, False)


def build_chat_message(q: Question, shots: Sequence[Question] = ()) -> str:
    """The user message for Instruct models: the standard prompt without its
    final 'Answer:', then the instruction to answer with the letter only."""
    prompt = build_prompt(q, shots)
    return prompt[:-len("\nAnswer:")] + "\n\n" + CHAT_INSTRUCTION
