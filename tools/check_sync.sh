#!/usr/bin/env bash
# Fail when nbdev_export would change lessonlib/ or nbdev_clean would change nbs/: notebooks are the source of truth.
set -euo pipefail
snap() { find lessonlib nbs -type f -not -path '*/__pycache__/*' -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha1sum; }
before=$(snap)
.venv/bin/nbdev_export
.venv/bin/nbdev_clean
after=$(snap)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "ERROR: nbdev_export/nbdev_clean changed the files above: lessonlib/ is generated from nbs/ (edit notebooks, then run nbdev_export && nbdev_clean)." >&2
  exit 1
fi
# In CI (a fresh clone) the tree must also match what was committed.
if [ "${CI:-}" = "true" ]; then git diff --exit-code -- lessonlib nbs; fi
echo "notebooks and library are in sync"
