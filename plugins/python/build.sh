#!/usr/bin/env bash
# Builds every plugin folder here (one `app.py` each) into a WebAssembly component at
# ../target/python/<folder>.wasm, with componentize-py (pinned in requirements.txt).
#
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
#   PATH=.venv/bin:$PATH ./build.sh                 # all plugins
#   PATH=.venv/bin:$PATH ./build.sh slack_state     # one
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../target/python"
mkdir -p "$out"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for d in "$here"/*/; do
    [ -f "$d/app.py" ] && names+=("$(basename "$d")")
  done
fi
for name in "${names[@]}"; do
  (cd "$here/$name" && componentize-py -q -d "$here/../../wit" -w plugin componentize app -o "$out/$name.wasm")
  echo "built $out/$name.wasm"
done
