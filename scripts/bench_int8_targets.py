"""INT8 agreement with FP32 per target, each INT8 session run on its target's processor or an
emulation of it whose arithmetic is the chip's; speed only on this machine's own processor.

    python scripts/bench_int8_targets.py --photos DIR [--crops 8] [--frames 64] [--arm64-root ROOT]

For the demo model and a 2-tag classifier trained here by `edge-export train --backend
local` (texture photos against the others; or `--classifier EXPORT`), the photos are split
by name order as in scripts/bench_int8.py: every other one calibrates (and trains the
classifier), the rest are only evaluated, as camera-like crops. One INT8 export is made per
weight range with quantize's recipe (7-bit for x86-avx2; 8-bit for x86-vnni and arm64, the
same export for both), and each runs, through scripts/int8_probabilities.py, on:

- x86-avx2: `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512, no VNNI), where onnxruntime picks
  the u8 x s8 kernels that saturate in 16 bits;
- x86-vnni: this processor, when it has AVX512-VNNI or AVX-VNNI (else: not measured);
- arm64: an arm64 Python under qemu-aarch64 with QEMU_CPU=cortex-a76 (a Raspberry Pi 5's
  core: dot-product instructions, none of qemu's `max` extras), in ROOT: a Debian arm64
  root with python3 and python3-venv, such as the one `make arm64-smoke` caches in
  .cache/arm64/rootfs. numpy and onnxruntime are installed there from their aarch64 wheels
  (the host's versions). Needs root (chroot).

Agreement is top-1 against FP32 on this machine: on every frame, and on the clear ones, where
FP32's top tag leads its second by CLEAR_LEAD (edge_runtime/int8/agreement.py). Speed is the
bare session, one thread, FP32 and each export interleaved (bench_int8.speed), on this
machine only: an emulator's speed says nothing about the chip's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_int8 import camera_like, frames, speed

from edge_runtime.capture.sources.images import IMAGE_SUFFIXES
from edge_runtime.int8 import quantize
from edge_runtime.int8.agreement import CLEAR_LEAD
from edge_runtime.int8.target import Target
from edge_runtime.model.bench import machine
from edge_runtime.model.cpu import has_vnni, read_cpu_flags
from edge_runtime.model.predictor import Predictor
from edge_runtime.paths import DEMO_MODEL

CHILD = Path(__file__).resolve().parent / "int8_probabilities.py"
TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "coins", "page", "ihc", "hubble_deep_field")
ARM64_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")
HASWELL = ["qemu-x86_64", "-cpu", "Haswell"]


def train_classifier(photos: list[Path], work: Path, per_photo: int) -> Path:
    """A 2-tag export made by `edge-export train --backend local` from crops of `photos`."""
    rng = np.random.default_rng(3)
    dataset = work / "textures"
    for photo in photos:
        tag = "texture" if photo.stem in TEXTURES else "scene"
        (dataset / tag).mkdir(parents=True, exist_ok=True)
        image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        for i in range(per_photo):
            cv2.imwrite(str(dataset / tag / f"{photo.stem}-{i}.jpg"), camera_like(image, rng))
    out = work / "trained"
    subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(dataset), "--backend", "local", "--out",
                    str(out), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return next((out / "textures").glob("v*"))


def agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float, int]:
    """Top-1 agreement on all frames and on FP32's clear ones, and how many are clear."""
    same = reference.argmax(1) == other.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= CLEAR_LEAD
    return float(same.mean()), float(same[clear].mean()) if clear.any() else float("nan"), int(clear.sum())


def run_child(prefix: list[str], model: Path, inputs: Path, out: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> dict[str, object]:
    done = subprocess.run([*prefix, str(model), str(inputs), str(out)], check=True, capture_output=True, text=True,
                          env=env, cwd=cwd)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


class Arm64:
    """An arm64 Python with numpy and onnxruntime in a Debian arm64 root, run by chroot under
    qemu-aarch64 (binfmt) as a cortex-a76."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "opt" / "int8"

    def missing(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root (chroot)"
        if not (self.root / "usr" / "bin" / "python3").exists():
            return f"no arm64 root with python3 at {self.root} (make arm64-smoke builds one)"
        if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
            return "qemu-aarch64 is not registered with binfmt_misc (apt-get install qemu-user-static binfmt-support)"
        return None

    def prepare(self) -> None:
        venv = self.home / "venv"
        if not (venv / "bin" / "python").exists():
            wheels = self.home / "wheels"
            wheels.mkdir(parents=True, exist_ok=True)
            platforms = [arg for p in ARM64_PLATFORMS for arg in ("--platform", p)]
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                            "--python-version", "3.11", "--implementation", "cp", *platforms, "-d", str(wheels),
                            f"numpy=={np.__version__}", f"onnxruntime=={ort.__version__}"], check=True)
            self.chroot(["/usr/bin/python3", "-m", "venv", "/opt/int8/venv"])
            self.chroot(["/opt/int8/venv/bin/pip", "install", "--quiet", "--no-index", "--find-links",
                         "/opt/int8/wheels", "numpy", "onnxruntime"])
        shutil.copy(CHILD, self.home / CHILD.name)

    def chroot(self, command: list[str], capture: bool = False) -> subprocess.CompletedProcess[str]:
        proc = self.root / "proc"
        # /proc only: with the host's /sys, onnxruntime reads an x86 topology (deploy/arm64-smoke.sh)
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        try:
            env = {"PATH": "/usr/bin:/bin", "QEMU_CPU": "cortex-a76", "HOME": "/root"}
            chroot = shutil.which("chroot") or "chroot"  # found on this PATH, not the root's
            return subprocess.run([chroot, str(self.root), *command], check=True, env=env, text=True,
                                  capture_output=capture)
        finally:
            subprocess.run(["umount", str(proc)], check=False)

    def probabilities(self, model: Path, inputs: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
        shutil.copy(model, self.home / "model.onnx")
        np.save(self.home / "inputs.npy", inputs)
        done = self.chroot(["/opt/int8/venv/bin/python", f"/opt/int8/{CHILD.name}", "/opt/int8/model.onnx",
                            "/opt/int8/inputs.npy", "/opt/int8/out.npy"], capture=True)
        return np.load(self.home / "out.npy"), dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of real photographs")
    parser.add_argument("--crops", type=int, default=8, help="evaluation frames made from each held-out photo")
    parser.add_argument("--frames", type=int, default=64, help="calibration frames")
    parser.add_argument("--rounds", type=int, default=5, help="speed rounds")
    parser.add_argument("--classifier", type=Path, help="a 2-tag export (default: trained here)")
    parser.add_argument("--arm64-root", type=Path, default=Path(".cache/arm64/rootfs"))
    args = parser.parse_args()

    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    calibrating, evaluating = photos[0::2], photos[1::2]
    work = Path(tempfile.mkdtemp(prefix="bench-int8-targets-"))
    models = {"demo": DEMO_MODEL, "2-tag classifier": args.classifier or train_classifier(calibrating, work, 2)}
    vnni = has_vnni(read_cpu_flags() or "")
    arm64 = Arm64(args.arm64_root.resolve())
    arm64_missing = arm64.missing()
    if arm64_missing is None:
        arm64.prepare()
    haswell_missing = None if shutil.which(HASWELL[0]) else "no qemu-x86_64 (apt-get install qemu-user)"

    rows: list[str] = []
    speeds: list[str] = []
    seen: dict[str, object] = {}
    for label, path in models.items():
        parent = Predictor.load(path, providers=["cpu"])
        name = parent.spec.input.name
        calibration = frames(parent, calibrating, -(-args.frames // len(calibrating)), 1)[:args.frames]
        evaluation = frames(parent, evaluating, args.crops, 2)
        inputs = work / f"{label}-inputs.npy"
        np.save(inputs, evaluation)
        fp32 = parent.bundle.model_path
        run_child([sys.executable, str(CHILD)], fp32, inputs, work / "fp32.npy")
        reference = np.load(work / "fp32.npy")
        exports = {}
        for bits, target in ((7, Target.X86_AVX2), (8, Target.X86_VNNI)):
            exports[bits] = work / f"{label}-{bits}bit.onnx"
            quantize._quantize(fp32, exports[bits], name, [calibration[i:i + 1] for i in range(len(calibration))],
                               target)
        for bits, (target, where) in [(7, (Target.X86_AVX2, "haswell")), (8, (Target.X86_AVX2, "haswell")),
                                      (8, (Target.X86_VNNI, "native")), (7, (Target.X86_VNNI, "native")),
                                      (8, (Target.ARM64, "arm64"))]:
            cpu = {"haswell": "qemu-x86_64 -cpu Haswell", "native": "this processor (VNNI)",
                   "arm64": "qemu-aarch64, QEMU_CPU=cortex-a76"}[where]
            missing = {"haswell": haswell_missing, "native": None if vnni else "this processor has no VNNI",
                       "arm64": arm64_missing}[where]
            export = f"{bits}-bit weights ({'x86-avx2' if bits == 7 else 'x86-vnni, arm64'})"
            if missing:
                rows.append(f"| {label} | {export} | {cpu} | not measured: {missing} | | |")
                continue
            out = work / "int8.npy"
            if where == "arm64":
                probs, info = arm64.probabilities(exports[bits], evaluation)
            else:
                prefix = HASWELL if where == "haswell" else []
                info = run_child([*prefix, sys.executable, str(CHILD)], exports[bits], inputs, out)
                probs = np.load(out)
            seen[cpu] = info
            every, clear, count = agreement(reference, probs)
            rows.append(f"| {label} | {export} | {cpu} | {every:.1%} | {clear:.1%} ({count} of {len(reference)}) "
                        f"| {'yes' if (target is Target.X86_AVX2) == (bits == 7) else 'no'} |")
        timed = speed({"FP32": fp32, "INT8 7-bit": exports[7], "INT8 8-bit": exports[8]},
                      {name: evaluation[:1]}, args.rounds, 1)
        seven, eight = timed["INT8 7-bit"], timed["INT8 8-bit"]
        speeds.append(f"| {label} | {timed['FP32'][0]:.2f} | {seven[0]:.2f} ({seven[1]:.2f}x) "
                      f"| {eight[0]:.2f} ({eight[1]:.2f}x) |")

    print(f"machine: {machine()}; onnxruntime {ort.__version__}; VNNI: {'yes' if vnni else 'no'}")
    print(f"photos: {len(calibrating)} calibrate ({args.frames} frames; the classifier trained on 2 crops of each), "
          f"{len(evaluating)} held out ({len(evaluating) * args.crops} frames)")
    for cpu, info in seen.items():
        print(f"- {cpu}: {info}")
    print(f"\n| model | INT8 export | INT8 session ran on | top-1 agreement, all | clear frames (FP32 ahead by "
          f"{CLEAR_LEAD:g}+) | the export's own target |")
    print("|---|---|---|---:|---:|---|")
    print("\n".join(rows))
    print(f"\n| bare session.run, 1 thread, on this machine ({machine()}) | FP32 ms | INT8 7-bit ms (x FP32) | "
          "INT8 8-bit ms (x FP32) |")
    print("|---|---:|---:|---:|")
    print("\n".join(speeds))


if __name__ == "__main__":
    main()
