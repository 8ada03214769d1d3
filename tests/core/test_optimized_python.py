"""User input is refused with ValueError, not assert: `python -O` (which strips asserts) still refuses it."""
import subprocess
import sys

CASES = """
import torch, rclib
from rclib.methods.rc import RCConfig
from rclib.models.text import TextOptions
t, a, s, k = torch.randn(1, 16, 4), torch.rand(1, 16), torch.rand(1, 16), torch.randn(1, 16, 4)
cases = {
    "budget_split": lambda: RCConfig(budget_split=(2, -1, 0)),
    "centre_count": lambda: RCConfig(centre_count="nope"),
    "n_neighbors": lambda: rclib.compress(t, a, s, k, method="rc", n_neighbors=0),
    "budget 0": lambda: rclib.compress(t, a, s, k, method="fastervlm", budget=0),
    "budget tensor": lambda: rclib.compress(t, a, s, k, method="fastervlm", budget=torch.tensor([0])),
    "pool grid": lambda: rclib.compress(torch.randn(1, 10, 4), method="pool"),
    "missing keys": lambda: rclib.compress(t, a, s, None, method="visionzip"),
    "text pooling": lambda: TextOptions(text_pooling="middle"),
}
for name, call in cases.items():
    try:
        call()
    except ValueError:
        continue
    raise SystemExit(f"{name}: accepted under python -O")
print("all refused")
"""


def test_bad_options_are_refused_under_python_minus_o():
    done = subprocess.run([sys.executable, "-O", "-c", CASES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "all refused", done.stdout + done.stderr
