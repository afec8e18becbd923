"""The argparse types fertrain, fereval and ferclient share: good values pass through, bad ones are argparse's errors."""

from __future__ import annotations

import argparse

import pytest

from fermodels import argtypes


def test_good_values_pass_through():
    assert (argtypes.count("1"), argtypes.rate("3e-4"), argtypes.threads("0"), argtypes.threads("2")) == (1, 3e-4, 0, 2)
    assert argtypes.positive("seconds")("0.5") == 0.5 and argtypes.positive("pixels", int)("24") == 24


@pytest.mark.parametrize("kind, text", [(argtypes.count, "0"), (argtypes.count, "-2"), (argtypes.rate, "0"), (argtypes.rate, "-1"),
                                        (argtypes.rate, "nan"), (argtypes.rate, "inf"), (argtypes.threads, "-1"),
                                        (argtypes.positive("seconds"), "0"), (argtypes.positive("pixels", int), "0")])
def test_bad_values_are_argparse_errors(kind, text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"got {text}"):
        kind(text)


def test_comma_separated_checks_every_value():
    levels = argtypes.comma_separated(argtypes.count)
    assert levels("1,8, 32") == [1, 8, 32] and argtypes.comma_separated(argtypes.rate, empty=True)("") == []
    for text, got in (("1,0", "got 0"), ("1,,8", "got '1,,8'"), ("", "got ''"), ("1,x", "got x")):
        with pytest.raises(argparse.ArgumentTypeError, match=got):
            levels(text)
