"""Backends outside the torch-free runtime are entry-point plugins, loaded when a file needs them."""

import subprocess
import sys
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent.parent / "medsr_edge" / "weights"


def test_a_pytorch_checkpoint_opens_from_python_without_importing_anything_first():
    code = ("import sys, numpy as np\n"
            "from medsr_edge.runtime import Enhancer\n"
            "assert 'torch' not in sys.modules\n"
            f"e = Enhancer({str(WEIGHTS / 'student-fast-x4.safetensors')!r})\n"
            "print(e.backend.name, e.enhance_array(np.zeros((16, 16), np.float32)).shape)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["torch", "(64,", "64)"]


def test_the_runtime_alone_never_imports_torch(ct_small):
    code = ("import sys\nfrom medsr_edge.runtime import Enhancer, read_image\n"
            f"e = Enhancer('student-fast-x4')\ne.enhance_image(read_image({str(ct_small)!r}))\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.stdout.strip() == "False", res.stderr[-2000:]
