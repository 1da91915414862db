"""The promotion rule of benchmarks/promote.py (issue 24): held-out decides, test and INT8 guard."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import promote  # noqa: E402


def _scores(held: float, test: float, int8: float | None) -> dict:
    s = {"held_out": {"gain": held}, "test": {"gain": test}}
    if int8 is not None:
        s["held_out_int8_gain"] = int8
    return s


def test_held_out_decides_and_test_and_int8_only_guard():
    shipped = _scores(3.70, 4.14, 3.65)
    assert promote.decide(_scores(3.75, 4.14, 3.70), shipped)[0]
    assert not promote.decide(_scores(3.71, 4.30, 3.70), shipped)[0]  # better on test alone: not promoted
    assert not promote.decide(_scores(3.80, 4.05, 3.75), shipped)[0]  # test drops 0.09 > 0.05
    assert not promote.decide(_scores(3.80, 4.14, 3.60), shipped)[0]  # INT8 0.2 dB below its FP32


def test_a_candidate_without_int8_never_replaces_a_model_with_one():
    ok, why = promote.decide(_scores(3.90, 4.20, None), _scores(3.70, 4.14, 3.65))
    assert not ok and "the shipped model has one" in why
    assert promote.decide(_scores(3.90, 4.20, None), _scores(3.70, 4.14, None))[0]  # fast size: no INT8 either way
