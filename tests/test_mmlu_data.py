"""MMLU data (minillama/mmlu_data.py): the CSV reader on the real release and on
malformed files, and the standard k-shot prompt."""
import pytest

from conftest import asset
from minillama import mmlu_data
from minillama.errors import MinillamaError
from minillama.mmlu_data import Question
from conftest import make_fixture, write_csv


def test_reader_on_the_real_release():
    root = asset("mmlu")
    counts = {}
    for split in mmlu_data.SPLITS:
        subjects = mmlu_data.list_subjects(root, split)
        assert len(subjects) == 57 and "abstract_algebra" in subjects and "world_religions" in subjects
        data = mmlu_data.load_split(root, split)
        counts[split] = sum(len(v) for v in data.values())
        assert all(q.answer in "ABCD" and len(q.choices) == 4 for qs in data.values() for q in qs)
    assert counts == {"dev": 285, "val": 1531, "test": 14042}
    dev = mmlu_data.load_split(root, "dev")
    assert {len(v) for v in dev.values()} == {5}
    first = dev["abstract_algebra"][0]
    assert first.question == "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field."
    assert first.choices == ("0", "1", "2", "3") and first.answer == "B" and first.label == 1


def test_reader_keeps_quoted_commas_and_newlines(tmp_path):
    root = make_fixture(tmp_path)
    data = mmlu_data.load_split(root, "test")
    assert list(data) == ["alpha_beta", "gamma"]
    q = data["alpha_beta"]
    assert q[1].choices[2] == "red, of course" and q[2].question == "A long question\nspanning two lines?"
    assert q[2].source.endswith("alpha_beta_test.csv:3")
    assert [len(v) for v in mmlu_data.load_split(root, "test", ["gamma"], limit=1).values()] == [1]


def test_malformed_files_name_file_and_line(tmp_path):
    bad = tmp_path / "test" / "broken_test.csv"
    write_csv(str(bad), [["q\nwith newline", "a", "b", "c", "d", "A"], ["q2", "a", "b", "c", "d", "E"]])
    with pytest.raises(MinillamaError, match=r"broken_test\.csv:3: answer 'E' is not one of A, B, C, D"):
        mmlu_data.load_split(str(tmp_path), "test")
    write_csv(str(bad), [["q", "a", "b", "c", "d", "A"], ["q2", "a", "b", "c", "B"]])
    with pytest.raises(MinillamaError, match=r"broken_test\.csv:2: expected 6 columns .* got 5"):
        mmlu_data.load_split(str(tmp_path), "test")
    with pytest.raises(MinillamaError, match="--mmlu_dir"):
        mmlu_data.load_split(str(tmp_path / "nowhere"), "test")
    with pytest.raises(MinillamaError, match="unknown MMLU subject"):
        mmlu_data.parse_subjects("broken,nope", ["broken"])


def test_k_shot_prompt_layout_is_the_standard_one():
    shots = [Question("high_school_physics", "Shot one?", ("1", "2", "3", "4"), "C", "x:1"),
             Question("high_school_physics", "Shot two?", ("p", "q", "r", "s"), "A", "x:2")]
    q = Question("high_school_physics", "The question?", ("w", "x", "y", "z"), "D", "y:1")
    expected = ("The following are multiple choice questions (with answers) about  high school physics.\n\n"
                "Shot one?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: C\n\n"
                "Shot two?\nA. p\nB. q\nC. r\nD. s\nAnswer: A\n\n"
                "The question?\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert mmlu_data.build_prompt(q, shots) == expected
    assert mmlu_data.build_prompt(q) == expected[:expected.index("\n\n") + 2] + expected[expected.index("The q"):]
    chat = mmlu_data.build_chat_message(q, shots)
    assert chat == expected[:-len("\nAnswer:")] + "\n\n" + mmlu_data.CHAT_INSTRUCTION
