#!/bin/sh
# Serve /etc/edge-runtime/config.yaml when it exists, else the built-in demo.
# Extra arguments go to `edge-runtime serve`.
set -eu
CONFIG=/etc/edge-runtime/config.yaml
if [ -f "$CONFIG" ]; then
  exec edge-runtime serve --config "$CONFIG" "$@"
fi
if [ -z "${EDGE_RUNTIME_TOKEN:-}" ] && [ -z "${EDGE_RUNTIME_TOKEN_FILE:-}" ]; then
  echo "edge-runtime: no $CONFIG and no token: serving the demo without authentication;" \
       "publish the port on 127.0.0.1 only (docker run -p 127.0.0.1:8080:8080 ...)" >&2
  exec edge-runtime serve --insecure "$@"
fi
exec edge-runtime serve "$@"
