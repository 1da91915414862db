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


def test_a_family_model_is_picked_only_when_it_costs_nothing_under_bicubic():
    """benchmarks/physics_eval.py: the physics target on held-out sources decides whether it ships;
    a bicubic loss beyond 0.05 dB against the default makes it opt-in, never picked by Modality."""
    import physics_eval

    def result(physics_gain: float, bicubic_gain: float) -> dict:
        held = {"ct-kernel, held-out sources": {"rows": {"student-x4": {"gain": 2.0}, "student-x4-ct": {"gain": physics_gain}}},
                "bicubic, held-out sources": {"rows": {"student-x4": {"gain": 7.0}, "student-x4-ct": {"gain": bicubic_gain}}}}
        return {"settings": held}

    for physics_gain, bicubic_gain, decision in ((3.1, 6.97, "ship"), (3.1, 6.9, "opt-in"), (2.9, 7.2, "do not ship")):
        v = physics_eval.verdict(result(physics_gain, bicubic_gain), "ct-kernel", "student-x4-ct")
        assert v["decision"] == decision and v["auto_pick"] == (decision == "ship"), (physics_gain, bicubic_gain)
    mr = {"settings": {"mr-kspace, test split": {"rows": {"zero-filled": {"gain": 1.2}, "student-x4": {"gain": -0.5},
                                                          "student-x4-mr": {"gain": 2.6}}},
                       "bicubic, test split": {"rows": {"student-x4": {"gain": 3.2}, "student-x4-mr": {"gain": 3.2}}}}}
    assert physics_eval.verdict(mr, "mr-kspace", "student-x4-mr")["decision"] == "do not ship"  # MR: +1.5 over zero-filled
