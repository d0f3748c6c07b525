"""Tests for utils/checks.py: the rule helpers' bounds, and the walk that finds the first refused field."""

import math
from dataclasses import dataclass, field

from prmloop.utils.checks import above, at_least, between, checked, failed_check, one_of


def test_rule_bounds_and_words():
    assert at_least(1).ok(1) and not at_least(1).ok(0.999) and not at_least(0).ok(math.inf)
    assert above(0).ok(1e-9) and not above(0).ok(0) and not above(0).ok(math.nan)
    assert between(0, 1).ok(0) and between(0, 1).ok(1) and not between(0, 1).ok(1.5)
    assert not between(0, 1, open_low=True).ok(0) and between(0, 1, open_low=True).ok(1)
    assert one_of("", "a").ok("") and not one_of("", "a").ok("b")
    words = [at_least(1).allowed, above(0).allowed, between(0, 0.9).allowed, between(0, 1, open_low=True).allowed,
             one_of("", "newline").allowed]
    assert words == ["a finite number >= 1", "a finite number > 0", "a number in [0, 0.9]", "a number in (0, 1]",
                     "one of '', newline"]


@dataclass
class Inner:
    lr: float = checked(1e-3, above(0))
    """A checked field."""
    name: str = "free"
    """An unchecked field."""


@dataclass
class Outer:
    steps: int = checked(3, at_least(1))
    """Checked before the section below."""
    inner: Inner = field(default_factory=Inner)
    """A nested section."""


def test_failed_check_walks_nested_fields_in_order():
    assert failed_check(Outer()) is None
    bad = Outer(inner=Inner(lr=0.0))
    key, value, check = failed_check(bad)
    assert (key, value, check.allowed) == ("inner.lr", 0.0, "a finite number > 0")
    bad.steps = 0  # the first field in declaration order is reported
    assert failed_check(bad)[0] == "steps"
