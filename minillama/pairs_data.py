"""Source -> target pairs from a CSV file, for conditional generation
(table-to-text, summarisation, ...).

Layout: a header line naming the columns, then one pair per row, e.g. the
E2E NLG Challenge files (trainset.csv, devset.csv, testset_w_refs.csv):

    mr,ref
    "name[Alimentum], area[city centre], familyFriendly[no]","There is a place in the city centre, ..."

Fields holding commas, quotes or line breaks are quoted, as the csv module
writes them; a row may therefore span several physical lines, and every
message names the line where its row starts.  Other columns are ignored.
Texts are kept exactly as written (no stripping), so that two spellings of a
source stay two sources; a field that is empty or only whitespace is an error.

One source usually has several human targets (E2E: about 8.6 references per
meaning representation).  `group_references` gathers them, in the order the
sources first appear, which is the shape multi-reference scoring wants
(minillama.metrics.e2e_scores(references, outputs)).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

from .errors import MinillamaError

DEFAULT_SOURCE_COLUMN = "mr"    # E2E: the meaning representation
DEFAULT_TARGET_COLUMN = "ref"   # E2E: a human reference text


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    line: int   # physical line of the file where the row starts (the header is line 1)


def _column_index(header: List[str], name: str, flag: str, where: str) -> int:
    """Where column `name` is in the header (names compared without surrounding spaces)."""
    names = [h.strip() for h in header]
    if name not in names:
        # a file without a header shows its first data row here: cut long fields short
        shown = ", ".join(repr(n if len(n) <= 30 else n[:27] + "...") for n in names)
        raise MinillamaError(f"{where}: the header has no column {name!r} (its columns: {shown}); the first line "
                             f"must name the columns, and --source_column / --target_column choose them "
                             f"({flag} is {name!r})")
    return names.index(name)


def read_pairs(path: str, source_column: str = DEFAULT_SOURCE_COLUMN,
               target_column: str = DEFAULT_TARGET_COLUMN) -> List[Pair]:
    """Every (source, target) row of the CSV at `path`, with the line it starts on.
    Blank lines are skipped; anything malformed is a MinillamaError naming file:line."""
    if source_column == target_column:
        raise MinillamaError(f"--source_column and --target_column are both {source_column!r}; "
                             "they must name two different columns")
    pairs: List[Pair] = []
    try:
        # utf-8-sig: a byte-order mark some editors add would otherwise glue onto the first column's name.
        # newline="": the csv module handles line ends itself (quoted fields may contain them).
        with open(path, "r", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = None
            start = 1   # first physical line of the current row
            for row in reader:
                row_line, start = start, reader.line_num + 1
                where = f"{path}:{row_line}"
                if not row:   # a blank line
                    continue
                if header is None:
                    header = row
                    source_index = _column_index(header, source_column, "--source_column", where)
                    target_index = _column_index(header, target_column, "--target_column", where)
                    continue
                if len(row) != len(header):
                    raise MinillamaError(f"{where}: {len(row)} fields but the header has {len(header)} "
                                         "(a field with a comma must be in double quotes)")
                source, target = row[source_index], row[target_index]
                for name, text in ((source_column, source), (target_column, target)):
                    if not text.strip():
                        raise MinillamaError(f"{where}: empty {name!r} field (every row needs a source and a target)")
                pairs.append(Pair(source, target, row_line))
    except OSError as e:   # missing, a directory, unreadable: the system's words say which
        raise MinillamaError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise MinillamaError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise MinillamaError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    if header is None:
        raise MinillamaError(f"{path}: empty file (expected a header line naming the columns, "
                             f"e.g. {DEFAULT_SOURCE_COLUMN},{DEFAULT_TARGET_COLUMN}, then one pair per row)")
    if not pairs:
        raise MinillamaError(f"{path}: a header but no rows (expected one {source_column},{target_column} pair per row)")
    return pairs


def group_references(rows: Iterable[Pair]) -> List[Tuple[str, List[str]]]:
    """[(source, [its targets...]), ...]: one entry per distinct source, in the order the
    sources first appear; each source's targets in file order.  A source's rows need not
    be consecutive."""
    groups: Dict[str, List[str]] = {}   # dicts keep insertion order: first appearance
    for row in rows:
        groups.setdefault(row.source, []).append(row.target)
    return list(groups.items())
