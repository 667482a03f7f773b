#!/usr/bin/env bash
# Copy a recipe run folder without its weights (logs, settings, results, imported.json notes), for docs/results.
#   bash tools/slim_run.sh runs/cv_cpu docs/results/cv_run [EXCLUDED_SUBFOLDER ...]
set -euo pipefail
SRC=$1; DST=$2; shift 2
rm -rf "$DST"; mkdir -p "$DST"
( cd "$SRC" && find . -type f ! -name '*.pt' ! -name '*.tmp' -print0 ) | while IFS= read -r -d '' f; do
  for ex in "$@"; do [[ "$f" == ./$ex/* ]] && continue 2; done
  mkdir -p "$DST/$(dirname "$f")"; cp "$SRC/$f" "$DST/$f"
done
