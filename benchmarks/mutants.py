"""A short mutation check: plausible one-line bugs in the metric, normaliser, geometry, tile blend and
CI gate, each applied in a temporary copy of the package; the named tests must fail on every one.
A mutant that survives means those tests no longer catch what they name. Run by .ci/run.

    python benchmarks/mutants.py            # exit 1 when a mutant survives or a mutation no longer applies
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, file, original text, mutated text, tests that must fail)
MUTANTS = [
    ("psnr crops two sides only", "medsr_edge/core/metrics.py",
     "img[border:-border, border:-border]", "img[border:, border:]",
     ["tests/test_mutant_killers.py::test_psnr_crops_the_border_on_every_side"]),
    ("psnr without the crop", "medsr_edge/core/metrics.py",
     "if border > 0 else img", "if border < 0 else img",
     ["tests/test_mutant_killers.py::test_psnr_crops_the_border_on_every_side"]),
    ("MONOCHROME1 not inverted", "medsr_edge/runtime/dicom.py",
     'invert=photometric == "MONOCHROME1"', "invert=False",
     ["tests/test_mutant_killers.py::test_monochrome1_is_read_inverted"]),
    ("gate passes a row that now fails", "medsr_edge/eval/benchmark.py",
     "failures.append(f\"{label}: was ok in the baseline, now {r['status']}: {r['reason']}\")", "pass",
     ["tests/test_mutant_killers.py::test_gate_fails_a_row_that_was_ok_and_now_fails"]),
    ("gate forgets the PSNR drop", "medsr_edge/eval/benchmark.py",
     "if drop > max_psnr_drop:", "if drop > max_psnr_drop + 1:",
     ["tests/test_bench.py::test_gate_psnr_and_relative_latency"]),
    ("gate judges one-thread runs on the wall clock", "medsr_edge/eval/benchmark.py",
     'return "cpu" if t_now == 1 and t_base == 1 and has_cpu else "wall"', 'return "wall"',
     ["tests/test_bench.py::test_gate_compares_cpu_time_when_both_runs_had_one_thread"]),
    ("tile blend keeps the padded half of the overlap", "medsr_edge/runtime/enhancer.py",
     "(x - s - overlap / 2 + 0.5)", "(x - s + 0.5)",
     ["tests/test_mutant_killers.py::test_tiled_equals_untiled_with_a_wide_receptive_field"]),
    ("normaliser forgets the offset", "medsr_edge/runtime/transforms.py",
     "        y += np.float32(self.lo)\n", "",
     ["tests/test_io.py::test_normalizer_is_invertible"]),
    ("origin moves the wrong way", "medsr_edge/runtime/dicom.py",
     "return -half * (row_dir * spacing[1] + col_dir * spacing[0])", "return half * (row_dir * spacing[1] + col_dir * spacing[0])",
     ["tests/test_dicom_series.py::test_output_grid_lies_on_the_input_anatomy"]),
]


def main() -> int:
    survivors, stale = [], []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT / "medsr_edge", copy / "medsr_edge")
        shutil.copytree(ROOT / "tests", copy / "tests")
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        env = {**os.environ, "PYTHONPATH": str(copy)}
        every = sorted({t for *_, tests in MUTANTS for t in tests})
        control = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *every],
                                 cwd=copy, env=env, capture_output=True, text=True)
        if control.returncode != 0:  # a kill only means something when the tests pass unmutated
            print(control.stdout[-2000:])
            print("the named tests fail on the unmutated copy; fix them first")
            return 1
        for name, rel, old, new, tests in MUTANTS:
            target = copy / rel
            text = target.read_text()
            if text.count(old) != 1:
                stale.append(f"{name}: '{old}' is not in {rel} exactly once; update the mutant")
                continue
            target.write_text(text.replace(old, new))
            try:
                res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                     cwd=copy, env=env, capture_output=True, text=True)
                check = subprocess.run([sys.executable, "-c", "import medsr_edge; print(medsr_edge.__file__)"],
                                       cwd=copy, env=env, capture_output=True, text=True).stdout
                assert str(copy) in check, f"the mutated copy was not the one imported: {check}"
            finally:
                target.write_text(text)
            killed = res.returncode != 0
            print(f"{'killed  ' if killed else 'SURVIVED'} {name}", flush=True)
            if not killed:
                survivors.append(name)
    for line in stale:
        print(f"STALE    {line}")
    print(f"{len(MUTANTS) - len(survivors) - len(stale)} of {len(MUTANTS)} mutants killed")
    return 1 if survivors or stale else 0


if __name__ == "__main__":
    sys.exit(main())
