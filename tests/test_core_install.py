"""`pip install edge-runtime` without extras: predict and inspect need only the core dependencies."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import DEMO

EXTRAS_ONLY = ("prometheus_client", "fastapi", "starlette", "uvicorn", "paho", "requests", "PIL", "tqdm", "onnx",
               "sklearn", "multipart", "fastapi_offline")


def run_without_extras(*args: str) -> subprocess.CompletedProcess[str]:
    blocked = ", ".join(repr(m) for m in EXTRAS_ONLY)
    code = (f"import sys\nfor m in ({blocked},):\n    sys.modules[m] = None\n"
            "from edge_runtime.cli import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_predict_and_inspect_run_with_the_core_dependencies_alone():
    predict = run_without_extras("predict", str(DEMO), str(DEMO / "samples" / "coffee.jpg"), "--top-k", "1")
    assert predict.returncode == 0, predict.stderr
    assert "espresso" in predict.stdout
    inspect = run_without_extras("inspect", str(DEMO))
    assert inspect.returncode == 0, inspect.stderr
    assert "multiclass" in inspect.stdout
