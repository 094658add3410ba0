"""minillama/flags.py: a flag declared on its config field becomes one argparse flag, and the
flags given come back as that config's fields (the rest keep the field's default)."""
import argparse
from dataclasses import dataclass
from typing import Optional

import pytest

from minillama import flags
from minillama.flags import flag, same_flag


@dataclass
class Toy:
    width: int = flag(16, "--toy_width", help="width (default {default})")
    rate: float = flag(0.5, "--toy-rate", help="rate")
    name: Optional[str] = flag(None, "--toy_name", help="a name")
    loud: bool = flag(False, "--loud", help="say it")
    quiet: bool = flag(True, "--no_quiet", action="store_false", dest="quiet", help="do not")
    plain: int = 3  # no flag


@dataclass
class Other:
    width: int = same_flag(8, "--toy_width")


def parse(argv):
    p = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    declared = {}
    flags.add_flags(p, Toy, declared)
    flags.add_flags(p, Other, declared)
    return p, vars(p.parse_args(argv))


def test_flags_parse_to_their_fields_and_absent_ones_keep_the_default():
    _, ns = parse(["--toy_width", "4", "--toy-rate", "2", "--loud", "--no_quiet"])
    assert ns == {"toy_width": 4, "toy_rate": 2.0, "loud": True, "quiet": False}
    assert Toy(**flags.given(ns, Toy)) == Toy(width=4, rate=2.0, name=None, loud=True, quiet=False, plain=3)
    assert Other(**flags.given(ns, Other)) == Other(width=4)  # the same flag, read by both
    assert flags.given({}, Toy) == {}


def test_help_states_the_default_and_types_come_from_it():
    p, _ = parse([])
    actions = {a.dest: a for a in p._actions}
    assert actions["toy_width"].help == "width (default 16)" and actions["toy_width"].type is int
    assert actions["toy_rate"].type is float and actions["toy_name"].type is None  # parsed by its config
    assert sum(1 for a in p._actions if "--toy_width" in a.option_strings) == 1  # declared once


def test_a_flag_declared_twice_or_never_is_a_programming_mistake():
    @dataclass
    class Twice:
        width: int = flag(1, "--toy_width", help="again")

    with pytest.raises(AssertionError, match="--toy_width is declared on two fields"):
        flags.check_declared_once([Toy, Twice])
    with pytest.raises(AssertionError, match="same_flag of undeclared flags: --toy_width"):
        flags.check_declared_once([Other])
    flags.check_declared_once([Toy, Other])


def test_comma_list():
    assert flags.comma_list("a, b,c") == ["a", "b", "c"]
