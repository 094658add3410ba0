"""User-facing errors and warnings (minillama/errors.py)."""
import io
import warnings

from minillama.errors import MinillamaWarning, show_one_line, warn


def shown(emit) -> str:
    """What show_one_line writes for the warnings `emit` raises."""
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda *a, **k: show_one_line(*a[:4], file=out)
        emit()
    return out.getvalue()


def test_minillama_warnings_are_one_line_without_file_and_source():
    text = shown(lambda: warn("adapter was trained on a different base model (norm)"))
    assert text == "warning: adapter was trained on a different base model (norm)\n"


def test_other_warnings_keep_pythons_format():
    text = shown(lambda: warnings.warn("deprecated thing", DeprecationWarning))
    assert text.startswith(__file__) and "DeprecationWarning: deprecated thing" in text


def test_warn_is_a_user_warning_callers_can_filter():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn("x")
    assert [w.category for w in caught] == [MinillamaWarning] and issubclass(MinillamaWarning, UserWarning)
