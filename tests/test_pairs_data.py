"""Source -> target CSV pairs (minillama/pairs_data.py): the E2E NLG Challenge files
(row and unique-MR counts as published with the data, see the assets' MANIFEST.md),
grouping order, quoted fields, and malformed files naming file and line."""
import re

import pytest

from conftest import asset
from minillama.errors import MinillamaError
from minillama.pairs_data import Pair, group_references, read_pairs


# -- the E2E files ------------------------------------------------------------------------
@pytest.mark.parametrize("name, rows, sources", [
    ("e2e/trainset.csv", 42061, 4862),
    ("e2e/devset.csv", 4672, 547),
    ("e2e/testset_w_refs.csv", 4693, 630),
])
def test_e2e_counts(name, rows, sources):
    pairs = read_pairs(asset(name))
    groups = group_references(pairs)
    assert len(pairs) == rows
    assert len(groups) == sources
    assert sum(len(targets) for _, targets in groups) == rows
    assert pairs[0].line == 2   # the header is line 1


def test_e2e_dev_first_rows():
    pairs = read_pairs(asset("e2e/devset.csv"))
    mr = "name[Alimentum], area[city centre], familyFriendly[no]"   # quoted: holds commas
    assert pairs[0] == Pair(mr, "There is a place in the city centre, Alimentum, that is not family-friendly.", 2)
    source, targets = group_references(pairs)[0]
    assert source == mr and len(targets) == 6
    assert targets[1] == "In the city centre there is a venue name Alimentum, this is not a family-friendly venue."


def test_e2e_train_multiline_field_and_shuffled_sources():
    pairs = read_pairs(asset("e2e/trainset.csv"))
    # the quoted target of the row starting on line 15766 spans two lines; the next row starts on 15768
    by_line = {p.line: p for p in pairs}
    assert by_line[15766].target.endswith("near The Bakers.\r\n  This coffee shop is a high customer rating")
    assert 15767 not in by_line and by_line[15768].source.startswith("name[The Punter]")
    assert pairs[-1].line == 42064
    # the training set is not sorted by MR: 42057 runs of equal sources, yet 4862 distinct ones
    first, targets = group_references(pairs)[0]
    assert first == pairs[0].source and len(targets) == 16
    assert targets[:2] == [pairs[0].target, next(p.target for p in pairs[1:] if p.source == first)]


# -- grouping -----------------------------------------------------------------------------
def test_group_references_first_appearance_order():
    rows = [Pair("b", "b1", 2), Pair("a", "a1", 3), Pair("b", "b2", 4), Pair("c", "c1", 5), Pair("a", "a2", 6)]
    assert group_references(rows) == [("b", ["b1", "b2"]), ("a", ["a1", "a2"]), ("c", ["c1"])]
    assert group_references([]) == []


# -- small files --------------------------------------------------------------------------
def write(tmp_path, text, name="pairs.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return str(path)


def test_other_columns_quotes_and_blank_lines(tmp_path):
    path = write(tmp_path, 'id,document,summary\n1,"a, b and ""c""",short\n\n2,"two\nlines",x\n')
    pairs = read_pairs(path, source_column="document", target_column="summary")
    assert pairs == [Pair('a, b and "c"', "short", 2), Pair("two\nlines", "x", 4)]


def test_bom_and_spaced_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffmr , ref\nm,r\n".encode("utf-8"))
    assert read_pairs(str(path)) == [Pair("m", "r", 2)]


def one_line_error(path, says, **columns):
    with pytest.raises(MinillamaError) as e:
        read_pairs(path, **columns)
    message = str(e.value)
    assert "\n" not in message
    assert re.search(says, message), message
    return message


@pytest.mark.parametrize("text, says", [
    ("", r"pairs\.csv: empty file"),
    ("\n\n", r"pairs\.csv: empty file"),
    ("mr,ref\n", r"pairs\.csv: a header but no rows"),
    ("mr,ref\nm1,r1\nm2,\n", r"pairs\.csv:3: empty 'ref' field"),
    ("mr,ref\nm1,r1\n  ,r2\n", r"pairs\.csv:3: empty 'mr' field"),
    ('mr,ref\n"m1\nstill m1",r1\nm2,r2,extra\n', r"pairs\.csv:4: 3 fields but the header has 2"),
    ("mr,ref\nm1\n", r"pairs\.csv:2: 1 fields but the header has 2"),
])
def test_malformed(tmp_path, text, says):
    one_line_error(write(tmp_path, text), says)


def test_header_lacking_columns_names_them_and_the_flags(tmp_path):
    path = write(tmp_path, "\nsrc,tgt\na,b\n")
    message = one_line_error(path, r"pairs\.csv:2: the header has no column 'mr'")
    assert "'src', 'tgt'" in message and "--source_column" in message and "--target_column" in message
    assert read_pairs(path, source_column="src", target_column="tgt") == [Pair("a", "b", 3)]
    one_line_error(path, r"no column 'ref'.*--target_column is 'ref'", source_column="src")


def test_no_header_shows_the_first_row(tmp_path):
    path = write(tmp_path, '"name[Alimentum], area[city centre], familyFriendly[no]",There is a place.\n')
    one_line_error(path, r"pairs\.csv:1: the header has no column 'mr' \(its columns: 'name\[Alimentum\], area\[city \.\.\.', 'There is a place\.'\)")


def test_missing_file_and_same_columns(tmp_path):
    one_line_error(str(tmp_path / "nope.csv"), r"nope\.csv: No such file or directory")
    one_line_error(str(tmp_path), r": Is a directory")
    one_line_error(write(tmp_path, "mr,ref\na,b\n"), "two different columns", source_column="ref")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("mr,ref\ncaf\xe9,r\n".encode("latin-1"))
    one_line_error(str(path), r"latin1\.csv: not UTF-8")
