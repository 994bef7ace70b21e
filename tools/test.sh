#!/usr/bin/env bash
# The project's test command (run it as `make test`; .ci/run runs exactly that).
# Order: notebooks clean -> package in sync -> README fresh -> every notebook top to bottom as a reader runs it
# -> pytest suite (two workers).
set -euo pipefail
cd "$(dirname "$0")/.."
export IBSR_QUICK="${IBSR_QUICK:-1}"          # tiny configs everywhere under test
export IBSR_HOME="${IBSR_HOME:-$PWD/.cache/ibsr_home_test}"   # caches stay inside the checkout
export IBSR_NUM_THREADS="${IBSR_NUM_THREADS:-1}"   # 2 notebook workers x 1 thread on a 2-core machine
export OMP_NUM_THREADS="$IBSR_NUM_THREADS"        # torch reads this at start-up, so every notebook kernel obeys it
export MPLBACKEND=Agg
start=$(date +%s)

snapshot() {  # content hash of every file under the given folders (detects edits, new and deleted files)
  find "$@" -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' \
       -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
}
changed() { diff <(echo "$1") <(echo "$2") | sed -n 's/^[<>] [0-9a-f]*  /    /p' | sort -u; }

echo "== [1/5] notebooks are clean (nbdev_clean must change nothing)"
before=$(snapshot nbs); nbdev_clean; after=$(snapshot nbs)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_clean changed these notebooks; they are cleaned now, review and commit them:"
  changed "$before" "$after"; exit 1
fi

echo "== [2/5] ibsr_nb/ is in sync with the notebooks (nbdev_export must change nothing)"
before=$(snapshot ibsr_nb); nbdev_export; after=$(snapshot ibsr_nb)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_export changed the package; edit the notebooks, not ibsr_nb/*.py, then export and commit:"
  changed "$before" "$after"; exit 1
fi

echo "== [3/5] README.md is generated from nbs/index.ipynb"
python tools/make_readme.py --check

echo "== [4/5] every notebook top to bottom as a reader runs it (its default scale, no test variables; each one's time)"
# Every cell runs, flagged ones included, in a fresh kernel without IN_TEST/IBSR_QUICK: the notebooks' own default
# (laptop scale) is what is tested. The paper notebooks build the quick run cache once, under $IBSR_HOME.
python tools/read_notebooks.py --jobs 2 --json "$IBSR_HOME/notebook_times.json"

echo "== [5/5] pytest suite"
python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

echo "all checks passed in $(( $(date +%s) - start )) s"
