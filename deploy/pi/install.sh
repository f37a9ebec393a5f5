#!/usr/bin/env bash
# Install edge-runtime on a Raspberry Pi (64-bit Raspberry Pi OS bookworm) without Docker:
# a virtual environment in /opt/edge-runtime, the systemd unit, a config skeleton and a
# token in /etc/edge-runtime. Run from a checkout (or an unpacked sdist) as root:
#   sudo bash deploy/pi/install.sh [WHEEL_OR_SOURCE_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SOURCE="${1:-$HERE/../..}"
PREFIX=${PREFIX:-/opt/edge-runtime}
ETC=${ETC:-/etc/edge-runtime}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}

fail() { echo "edge-runtime install: $*" >&2; exit 1; }

arch=$(uname -m)
bits=$(getconf LONG_BIT 2>/dev/null || echo 64)
case "$arch" in
  aarch64|arm64|x86_64) ;;
  armv6l|armv7l|armhf|arm*)
    fail "this is a 32-bit Arm system ($arch). onnxruntime publishes no wheels for 32-bit Arm (armv7), so edge-runtime cannot run here. Install the 64-bit Raspberry Pi OS (bookworm, arm64) and run this again." ;;
  *) fail "unsupported machine type $arch" ;;
esac
[[ "$bits" == 64 ]] || fail "this is a 32-bit userland on a 64-bit kernel ($arch, ${bits}-bit). onnxruntime publishes no 32-bit Arm wheels: install the 64-bit Raspberry Pi OS (bookworm, arm64)."
[[ $(id -u) == 0 ]] || fail "run as root (sudo bash $0)"
command -v python3 >/dev/null || fail "python3 is missing (apt install python3 python3-venv)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || fail "Python 3.10 or newer is needed"
python3 -m venv --help >/dev/null 2>&1 || fail "python3-venv is missing (apt install python3-venv)"

echo "== virtual environment in $PREFIX"
# system site packages: picamera2 comes from apt (python3-picamera2), not from PyPI
python3 -m venv --system-site-packages "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet "${SOURCE}[server,events]"

echo "== configuration in $ETC"
install -d -m 0755 "$ETC"
if [[ ! -f "$ETC/config.yaml" ]]; then
  install -m 0644 "$HERE/config.yaml" "$ETC/config.yaml"
fi
if [[ ! -f "$ETC/env" ]]; then
  umask 077
  echo "EDGE_RUNTIME_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')" > "$ETC/env"
  chmod 0600 "$ETC/env"
  echo "   a new token is in $ETC/env (root only); clients send it as 'Authorization: Bearer ...'"
fi

echo "== systemd unit"
install -m 0644 "$HERE/../systemd/edge-runtime.service" "$UNIT_DIR/edge-runtime.service"
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable --now edge-runtime.service
  echo "   running: systemctl status edge-runtime; logs: journalctl -u edge-runtime -f"
else
  echo "   systemd is not running here: start it later with 'systemctl enable --now edge-runtime'"
fi
echo "done: edit $ETC/config.yaml (model path, cameras), then 'systemctl restart edge-runtime'"
