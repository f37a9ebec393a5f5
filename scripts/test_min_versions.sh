#!/usr/bin/env bash
# Run the runtime's tests at the oldest versions we support: Python 3.10, onnxruntime 1.16,
# numpy 1.24 and OpenCV 4.7 (what JetPack 6 and older Raspberry Pi installs have).
# Finds python3.10 on PATH or through pyenv. Usage: bash scripts/test_min_versions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY310=""
candidates=()
if command -v pyenv >/dev/null; then
  candidates+=("$(pyenv root)"/versions/3.10*/bin/python3.10)
fi
candidates+=("$(command -v python3.10 || true)")
for candidate in "${candidates[@]}"; do  # a pyenv shim can exist without a usable interpreter
  if [[ -x "$candidate" ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    PY310=$candidate
  fi
done
[[ -n "$PY310" ]] || { echo "test_min_versions: no Python 3.10 found" >&2; exit 1; }
VENV=.venv-min
[[ -x "$VENV/bin/python" ]] || "$PY310" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet \
  "onnxruntime==1.16.3" "numpy==1.24.4" "opencv-python-headless==4.7.0.72" \
  "fastapi==0.110.0" "uvicorn==0.29.0" "pydantic==2.5.3" "prometheus-client==0.19.0" "pyyaml==6.0.1" \
  "python-multipart==0.0.9" "onnx==1.15.0" "pillow==10.2.0" "httpx==0.27.0" "pytest==8.0.2" "pytest-timeout==2.2.0"
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
"$VENV/bin/python" - <<'PY'
import sys, numpy, onnxruntime, cv2
print(f"minimum versions: Python {sys.version.split()[0]}, onnxruntime {onnxruntime.__version__}, "
      f"numpy {numpy.__version__}, OpenCV {cv2.__version__}")
PY
# An INT8 export made with today's quantiser (the main environment) must load and give the
# same answers at the oldest onnxruntime too: a device is often older than the laptop.
if [[ -x .venv/bin/python ]]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  .venv/bin/python - "$WORK/frames" <<'PY'
import sys
from pathlib import Path
import cv2
out = Path(sys.argv[1]); out.mkdir()
for i, path in enumerate(sorted(Path("edge_runtime/demo/samples").glob("*.jpg"))):
    image = cv2.imread(str(path))
    for j, variant in enumerate((image, cv2.flip(image, 1), image[::2, ::2], image[: image.shape[0] // 2])):
        cv2.imwrite(str(out / f"{i}-{j}.jpg"), variant)
PY
  .venv/bin/python -m edge_runtime.cli quantize edge_runtime/demo --calibrate "$WORK/frames" --out "$WORK/int8" \
    --force >/dev/null
  .venv/bin/python -m edge_runtime.cli predict "$WORK/int8" edge_runtime/demo/samples/*.jpg >"$WORK/today.txt"
  "$VENV/bin/python" -m edge_runtime.cli predict "$WORK/int8" edge_runtime/demo/samples/*.jpg >"$WORK/oldest.txt"
  "$VENV/bin/python" - "$WORK/today.txt" "$WORK/oldest.txt" <<'PY'
import sys
def top1(path):  # {photo: (tag, percent)} from predict's output: "photo:" then "  12.34%  tag" lines
    found, photo = {}, None
    for line in open(path):
        if line.rstrip().endswith(":") and not line.startswith(" "):
            photo = line.rstrip()[:-1]
        elif photo is not None and photo not in found and "%" in line:
            percent, tag = line.strip().split("%", 1)
            found[photo] = (tag.strip(), float(percent))
    return found
today, oldest = top1(sys.argv[1]), top1(sys.argv[2])
assert today and today.keys() == oldest.keys(), (today, oldest)
for photo, (tag, percent) in today.items():  # kernels may differ in the last digits between releases
    assert oldest[photo][0] == tag and abs(oldest[photo][1] - percent) <= 1.0, (photo, today[photo], oldest[photo])
print(f"INT8 export from today's quantiser: the same top tags at the oldest onnxruntime ({len(today)} photos)")
PY
else
  echo "INT8 check skipped: no .venv with today's quantiser (bash scripts/test.sh makes it)"
fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_predictor.py tests/test_preprocess.py \
  tests/test_postprocess.py tests/test_bundle.py tests/test_imageio.py tests/test_cli.py tests/test_camera.py \
  tests/test_pipeline.py tests/test_sources.py tests/test_server.py tests/test_config.py tests/test_model.py "$@"
