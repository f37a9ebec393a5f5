#!/usr/bin/env bash
# Emulated arm64 smoke test: build a Debian bookworm arm64 root with debootstrap, install
# the project's wheel there with the aarch64 wheels of its dependencies, run
# `edge-runtime predict` on the demo model and samples under qemu, and compare the JSON
# with the native result. Needs root (debootstrap, chroot) on x86-64 Debian; the root
# filesystem is cached in .cache/arm64 (delete it to start over).
#
#   make arm64-smoke            or    sudo bash deploy/arm64-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${ARM64_CACHE:-.cache/arm64}
ROOTFS="$CACHE/rootfs"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=${PYTHON:-python3}
log() { printf '\033[1m== %s\033[0m\n' "$*"; }

[[ $(id -u) == 0 ]] || { echo "arm64-smoke: run as root (debootstrap and chroot need it)" >&2; exit 1; }
[[ $(uname -m) == x86_64 ]] || { echo "arm64-smoke: meant for an x86-64 host" >&2; exit 1; }

log "host tools: qemu-user-static, binfmt-support, debootstrap"
if ! command -v debootstrap >/dev/null || [[ ! -x /usr/bin/qemu-aarch64-static ]]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap >/dev/null
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64 || update-binfmts --import qemu-aarch64
fi

if [[ ! -f "$ROOTFS/.complete" ]]; then
  log "debootstrap bookworm arm64 into $ROOTFS (cached for next time)"
  rm -rf "$ROOTFS"
  mkdir -p "$ROOTFS"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR"
  touch "$ROOTFS/.complete"
fi

log "wheels: the project (native build) and its dependencies for aarch64"
WHEELS="$CACHE/wheels"
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
"$PY" -m pip wheel --quiet --no-deps -w "$WHEELS" .
"$PY" -m pip download --quiet --only-binary=:all: --python-version 3.11 --implementation cp \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  -d "$WHEELS" onnxruntime numpy opencv-python-headless pydantic pyyaml

log "install inside the arm64 root"
rm -rf "$ROOTFS/opt/smoke"
mkdir -p "$ROOTFS/opt/smoke"
cp -r "$WHEELS" "$ROOTFS/opt/smoke/wheels"
cp edge_runtime/demo/samples/*.jpg "$ROOTFS/opt/smoke/"
cleanup() { umount "$ROOTFS/proc" 2>/dev/null || true; }
trap cleanup EXIT
# /proc only: with the host's /sys, onnxruntime reads an x86 CPU topology and crashes under
# QEMU; without it, it warns that cpuinfo failed and runs its portable kernels.
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" /usr/bin/python3 -m venv /opt/smoke/venv
chroot "$ROOTFS" /opt/smoke/venv/bin/pip install --quiet --no-index --find-links /opt/smoke/wheels edge-runtime

log "predict under emulation"
chroot "$ROOTFS" uname -m
start=$(date +%s)
chroot "$ROOTFS" /bin/sh -c 'cd /opt/smoke && /opt/smoke/venv/bin/edge-runtime predict \
  /opt/smoke/venv/lib/python3.11/site-packages/edge_runtime/demo chelsea.jpg coffee.jpg rocket.jpg \
  --json --top-k 5' > "$CACHE/arm64.json"
echo "emulated predict took $(( $(date +%s) - start )) s"

log "predict natively and compare"
"$PY" -m edge_runtime.cli predict edge_runtime/demo edge_runtime/demo/samples/chelsea.jpg \
  edge_runtime/demo/samples/coffee.jpg edge_runtime/demo/samples/rocket.jpg --json --top-k 5 > "$CACHE/native.json"
"$PY" - "$CACHE/native.json" "$CACHE/arm64.json" <<'PYCODE'
import json, sys
native, arm = (json.load(open(p)) for p in sys.argv[1:3])
assert len(native) == len(arm) == 3, "three results expected on each side"
worst = 0.0
for n, a in zip(native, arm):
    tags_n = [p["tagName"] for p in n["predictions"]]
    tags_a = [p["tagName"] for p in a["predictions"]]
    assert tags_n == tags_a, f"top-5 tags differ: {tags_n} (x86-64) vs {tags_a} (arm64)"
    for pn in n["predictions"]:
        pa = next((p for p in a["predictions"] if p["tagName"] == pn["tagName"]), None)
        if pa is not None:
            worst = max(worst, abs(pn["probability"] - pa["probability"]))
    print(f"{tags_n[0]:<16} x86-64 {n['predictions'][0]['probability']:.6f}  arm64 {a['predictions'][0]['probability']:.6f}")
assert worst < 1e-4, f"probabilities differ by {worst:.2e}"
print(f"arm64 matches x86-64: same top tags, largest probability difference {worst:.2e}")
PYCODE

log "INT8: quantise natively, predict under emulation, compare"
CAL="$CACHE/calibration"
rm -rf "$CAL" "$CACHE/int8" "$ROOTFS/opt/smoke/int8"
"$PY" - "$CAL" edge_runtime/demo/samples <<'PYCODE'
import pathlib, sys
import cv2
out, samples = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True)
for path in sorted(samples.glob("*.jpg")):  # each photo, mirrored, and two crops: 12 frames
    image = cv2.imread(str(path))
    h, w = image.shape[:2]
    for i, view in enumerate((image, image[:, ::-1], image[: h * 3 // 4, : w * 3 // 4], image[h // 4 :, w // 4 :])):
        cv2.imwrite(str(out / f"{path.stem}-{i}.jpg"), view)
PYCODE
"$PY" -m edge_runtime.cli quantize edge_runtime/demo --calibrate "$CAL" --out "$CACHE/int8" --force
cp -r "$CACHE/int8" "$ROOTFS/opt/smoke/int8"
chroot "$ROOTFS" /bin/sh -c 'cd /opt/smoke && /opt/smoke/venv/bin/edge-runtime predict /opt/smoke/int8 \
  chelsea.jpg coffee.jpg rocket.jpg --json --top-k 5' > "$CACHE/arm64-int8.json"
"$PY" -m edge_runtime.cli predict "$CACHE/int8" edge_runtime/demo/samples/chelsea.jpg \
  edge_runtime/demo/samples/coffee.jpg edge_runtime/demo/samples/rocket.jpg --json --top-k 5 > "$CACHE/native-int8.json"
"$PY" - "$CACHE/native-int8.json" "$CACHE/arm64-int8.json" "$CACHE/native.json" <<'PYCODE'
import json, sys
native, arm, fp32 = (json.load(open(p)) for p in sys.argv[1:4])
worst = 0.0
for n, a, f in zip(native, arm, fp32, strict=True):
    top = [r["predictions"][0]["tagName"] for r in (n, a, f)]
    assert top[0] == top[1], f"INT8 top tag differs: {top[0]} (x86-64) vs {top[1]} (arm64)"
    worst = max(worst, abs(n["predictions"][0]["probability"] - a["predictions"][0]["probability"]))
    print(f"{top[0]:<16} INT8 x86-64 {n['predictions'][0]['probability']:.4f}  arm64 "
          f"{a['predictions'][0]['probability']:.4f}  (FP32 top tag: {top[2]})")
# INT8 kernels differ between x86-64 and Arm (rounding of the integer products' rescale)
assert worst < 0.05, f"INT8 probabilities differ by {worst:.3f}"
print(f"INT8 on arm64 agrees with x86-64: same top tags, largest top-1 probability difference {worst:.4f}")
PYCODE
