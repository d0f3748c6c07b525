"""Config fuzz: every field of every section, set to hostile values with --set, ends in a clean UserError or a valid
config, never another exception (a traceback). The counts are printed for the record."""

import dataclasses
import typing

from prmloop.loop.config import ExperimentConfig, load_config
from prmloop.utils.errors import UserError

HOSTILE = ["-1", "0", "1", "nan", "inf", "-inf", "1e308", "1e-320", "abc", "", "[1, 2]", "{a: 1}", "true", "null",
           "'" + "x" * 5000 + "'", "0x10", "1_000"]


def _fields(cls=ExperimentConfig, prefix=""):
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            yield from _fields(hints[field.name], f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}"


def test_every_field_with_hostile_values_is_clean(capsys):
    tried = clean = accepted = 0
    for key in _fields():
        for value in HOSTILE:
            tried += 1
            try:
                load_config(None, [f"{key}={value}"])
                accepted += 1
            except UserError as err:
                assert "\n" not in str(err) and len(str(err)) < 600, (key, value, str(err)[:300])
                clean += 1
    with capsys.disabled():
        print(f"\nconfig fuzz: {tried} cases, {clean} clean errors, {accepted} accepted, 0 tracebacks")
    assert tried == clean + accepted and clean > tried // 2
