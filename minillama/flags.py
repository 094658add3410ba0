"""Command-line flags declared on the config fields they set.

A field a flag sets is written once, with everything about it:

    reduction_factor: int = flag(16, "--reduction_factor", help="adapter width = model width / this "
                                                               "(default {default})")

cli.py builds the parser from these declarations (`add_flags`) and reads the flags a command gave
back into configs (`given`); a flag not given leaves the field's default, so each default is stated
once, here.  A flag that two configs read (--dev: classification and E2E) is declared on one field
and named on the other with `same_flag`.  `readers` names which runs read a flag (cli.READERS); a
method's flags are read by the runs that train that method, so its fields name none.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple


@dataclass(frozen=True)
class Flag:
    """One command-line flag: its name, help (None: declared on another field, see `same_flag`),
    which runs read it (a cli.READERS name; None for a method's own flags) and argparse's
    settings (type, choices, action, nargs, metavar, dest)."""
    name: str
    help: Optional[str] = None
    readers: Optional[str] = None
    argparse: Tuple[Tuple[str, Any], ...] = ()

    @property
    def dest(self) -> str:
        return dict(self.argparse).get("dest") or self.name.lstrip("-").replace("-", "_")

    def declared(self) -> bool:
        return self.help is not None


def flag(default: Any = MISSING, name: str = "", *, help: str, readers: Optional[str] = None,
         default_factory: Any = MISSING, **argparse: Any):
    """A dataclass field that the flag `name` sets.  `help` may say {default}: the field's.
    Without `type`: an int or float default's type, a False default a store_true switch, else str."""
    return field(default=default, default_factory=default_factory,
                 metadata={"flag": Flag(name, help, readers, tuple(argparse.items()))})


def same_flag(default: Any = MISSING, name: str = "", *, readers: Optional[str] = None,
              default_factory: Any = MISSING):
    """A field set by a flag declared (with its help) on another config's field."""
    return field(default=default, default_factory=default_factory, metadata={"flag": Flag(name, None, readers)})


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def flagged_fields(cls) -> Iterator[Tuple[dataclasses.Field, Flag]]:
    """(field, its Flag) for every field of config class `cls` that a flag sets."""
    for f in dataclasses.fields(cls):
        if "flag" in f.metadata:
            yield f, f.metadata["flag"]


def argparse_settings(f: dataclasses.Field, spec: Flag, context: Dict[str, str]) -> Dict[str, Any]:
    """add_argument's keywords for the flag of field `f`; {default} and the `context` names in
    its help filled in."""
    settings = dict(spec.argparse)
    default = field_default(f)
    if "type" not in settings and "action" not in settings:
        if default is False:
            settings["action"] = "store_true"
        elif type(default) in (int, float):
            settings["type"] = type(default)  # (anything else is parsed by its config: a str)
    if isinstance(default, (tuple, list)):
        default = ",".join(map(str, default))
    settings["help"] = spec.help.format(default=default, **context)
    return settings


def add_flags(parser, cls, declared: Dict[str, Flag], context: Optional[Dict[str, str]] = None,
              note: Optional[Callable[[str], str]] = None):
    """Add to `parser` (or an argument group) the flags declared on `cls`'s fields, and its
    `switches` (flags that choose rather than set), that are not in `declared` yet (dest -> Flag,
    updated).  `note(dest)`: words added to a flag's help."""
    for f, spec in flagged_fields(cls):
        if spec.declared() and spec.dest not in declared:
            settings = argparse_settings(f, spec, context or {})
            settings["help"] += note(spec.dest) if note else ""
            parser.add_argument(spec.name, **settings)
            declared[spec.dest] = spec
    for spec in getattr(cls, "switches", ()):
        if spec.dest not in declared:
            parser.add_argument(spec.name, help=spec.help, **dict(spec.argparse))
            declared[spec.dest] = spec


def given(ns: Dict[str, Any], cls) -> Dict[str, Any]:
    """{field: value} of `cls`'s flagged fields whose flag the command gave (parsed as `ns`)."""
    return {f.name: ns[spec.dest] for f, spec in flagged_fields(cls) if spec.dest in ns}


def flag_names(cls) -> List[str]:
    """The dests of the flags that set `cls`'s fields."""
    return [spec.dest for _, spec in flagged_fields(cls)]


def comma_list(text: str) -> List[str]:
    """'a, b' -> ['a', 'b']: a flag taking one entry per adapter or task."""
    return [t.strip() for t in text.split(",")]


def check_declared_once(configs) -> None:
    """Each flag declared (with its help) on exactly one field of `configs` (a subclass
    inherits its base's), and every `same_flag` naming a declared one: a programming
    mistake, so an AssertionError."""
    declared: Dict[str, dataclasses.Field] = {}
    named = set()
    for cls in configs:
        for f, spec in flagged_fields(cls):
            named.add(spec.name)
            if spec.declared():
                assert declared.setdefault(spec.name, f) is f, f"{spec.name} is declared on two fields"
    missing = sorted(named - set(declared))
    assert not missing, f"same_flag of undeclared flags: {', '.join(missing)}"
