"""One model's outputs on saved input tensors, with nothing but numpy and onnxruntime, so that
it runs under an emulated processor (qemu-x86_64 -cpu Haswell, or an arm64 Python under
qemu-aarch64) where the project itself is not installed. scripts/bench_int8_targets.py runs it.

    python scripts/int8_probabilities.py MODEL INPUTS.npy OUT.npy

Prints one line of JSON: what this process's processor offers as numpy sees it (the
instructions the INT8 kernels choose by), and the onnxruntime version.
"""

from __future__ import annotations

import json
import platform
import sys

import numpy as np
import onnxruntime as ort

SHOWN = ("AVX2", "AVX512F", "AVX512_VNNI", "AVX512VNNI", "AVXVNNI", "ASIMD", "ASIMDDP", "ASIMDFHM", "SVE")


def main() -> None:
    model, inputs, out = sys.argv[1:4]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    x = np.load(inputs)
    np.save(out, np.concatenate([session.run([output], {name: x[i:i + 1]})[0] for i in range(len(x))]))
    features = getattr(np, "_core", getattr(np, "core", None))
    found = getattr(getattr(features, "_multiarray_umath", None), "__cpu_features__", {})
    print(json.dumps({"machine": platform.machine(), "onnxruntime": ort.__version__,
                      "cpu": sorted(k for k in SHOWN if found.get(k))}))


if __name__ == "__main__":
    main()
