#!/usr/bin/env bash
# Import through a running service against the same import offline: a generated
# Obsidian-style vault of N notes (default 5,000; front matter, inline tags, three
# wikilinks a note, six folders), `mnemon import` into a fresh data folder with no
# service (bulk: indexes caught up once at the end), then into another fresh folder while
# `mnemon serve` runs (the CLI sends every note through the HTTP API). Prints both times
# (through the service: until the command returns, and until both indexes hold every
# note) and their ratio. Release binary (`cargo build --release`), built-in embedder.
# Run from the repository root: node/benches/wrk/import.sh (M=path/to/mnemon, N=notes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${M:-$here/../../../target/release/mnemon}
N=${N:-5000}
W=$(mktemp -d /tmp/wrkimport.XXXX)
python3 - "$W/vault" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    folder = os.path.join(root, f"area-{i % 6}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"Note {i}.md"), "w") as f:
        f.write(f"---\ntags: [alpha, beta-{i % 10}]\ncreated: 2024-01-{i % 28 + 1:02}\n---\n# Note {i}\n\n"
                f"Body of note {i} about gardens, kettles and invoices. #inline{i % 5}\n"
                f"See [[Note {(i + 1) % n}]], [[Note {(i * 7 + 3) % n}|that]] and [[Note {(i * 13 + 5) % n}#part]].\n")
PY
now() { date +%s.%N; }
echo "== offline: mnemon import of $N notes into a fresh data folder"
export MNEMON_DATA_DIR=$W/offline
$M init >/dev/null
t0=$(now); $M import "$W/vault" --json > $W/offline.json; t1=$(now)
offline=$(echo "$t1 - $t0" | bc)
python3 -c "import json; s=json.load(open('$W/offline.json')); print('  imported', s['imported'], 'links', s['links'], 'skipped', len(s['skipped']))"
echo "  ${offline} s"
echo "== through a running mnemon serve"
export MNEMON_DATA_DIR=$W/served
$M init >/dev/null
PORT=7813
$M serve --http 127.0.0.1:$PORT --no-p2p > $W/serve.log 2>&1 &
SPID=$!
until curl -sf http://127.0.0.1:$PORT/health/ready >/dev/null; do sleep 0.2; done
TOKEN=$($M token)
t0=$(now); $M import "$W/vault" --json > $W/served.json; t1=$(now)
until curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$PORT/api/v1/status | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["index"]["lag_changes"] != 0)'; do sleep 0.2; done
t2=$(now)
served=$(echo "$t1 - $t0" | bc); indexed=$(echo "$t2 - $t0" | bc)
python3 -c "import json; s=json.load(open('$W/served.json')); print('  imported', s['imported'], 'links', s['links'], 'skipped', len(s['skipped']))"
echo "  ${served} s until the command returned, ${indexed} s until both indexes held every note"
python3 -c "print('ratio (through serve / offline): %.2f returned, %.2f indexed' % ($served / $offline, $indexed / $offline))"
kill $SPID; wait $SPID || true
rm -rf $W
