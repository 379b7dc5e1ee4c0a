#!/usr/bin/env bash
# What one large memory costs a running node: `serve` on a fresh data folder (built-in
# embedder), one memory of SIZE bytes of prose (default: the 8 MiB content limit) posted,
# searched for once indexed, edited (its title, then its text) and read. Prints the time
# of each step and the service's peak resident memory above its level just before the
# post, per byte of text.
# Run from the repository root: node/benches/wrk/large.sh (M=path/to/mnemon, SIZE=bytes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${M:-$here/../../../target/release/mnemon}
SIZE=${SIZE:-8388608}
D=$(mktemp -d /tmp/large.XXXX); export MNEMON_DATA_DIR=$D/d
$M init >/dev/null
PORT=7812
$M serve --http 127.0.0.1:$PORT --no-p2p > $D/serve.log 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null; rm -rf $D' EXIT
sleep 2
export MNEMON_TOKEN=$($M token)
U=http://127.0.0.1:$PORT
python3 - "$SIZE" $D/edit.json > $D/body.json <<'PY'
import json, sys
size = int(sys.argv[1])
line = "The quick brown fox jumps over the lazy dog by the river, twice a day.\n"
text = (line * (size // len(line)))[:size - 16] + "zanzibarquokka\n"
print(json.dumps({"title": "Large", "content": text}))
# The same text edited near its start, as an editor sends it back.
with open(sys.argv[2], "w") as f:
    json.dump({"content": "An edit at the start.\n" + text[22:]}, f)
PY
hwm() { awk '/VmHWM/ {print $2 * 1024}' /proc/$SPID/status; }
echo 5 > /proc/$SPID/clear_refs
before=$(hwm)
t0=$(date +%s.%N)
ID=$(curl -sf -H "Authorization: Bearer $MNEMON_TOKEN" -H 'content-type: application/json' --data-binary @$D/body.json $U/api/v1/memories | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["seq"])')
t1=$(date +%s.%N); echo "after the add: $(( $(hwm) - before )) bytes above" >&2
SEQ=${ID#* }; ID=${ID% *}
until curl -sf -H "Authorization: Bearer $MNEMON_TOKEN" "$U/api/v1/search?q=zanzibarquokka&mode=keyword&after=$SEQ" | grep -q "$ID"; do sleep 0.2; done
t2=$(date +%s.%N)
curl -sf -X PATCH -H "Authorization: Bearer $MNEMON_TOKEN" -H 'content-type: application/json' -d '{"title": "Large, renamed"}' $U/api/v1/memories/$ID >/dev/null
echo "after a title edit: $(( $(hwm) - before )) bytes above" >&2
curl -sf -X PATCH -H "Authorization: Bearer $MNEMON_TOKEN" -H 'content-type: application/json' --data-binary @$D/edit.json $U/api/v1/memories/$ID >/dev/null
echo "after a content edit: $(( $(hwm) - before )) bytes above" >&2
curl -sf -H "Authorization: Bearer $MNEMON_TOKEN" $U/api/v1/memories/$ID -o /dev/null
t3=$(date +%s.%N)
after=$(hwm)
python3 - "$SIZE" "$before" "$after" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, sys
size, before, after = map(int, sys.argv[1:4])
t0, t1, t2, t3 = map(float, sys.argv[4:8])
print(json.dumps({
    "data": f"one memory of {size} bytes of prose through a running serve (built-in embedder)",
    "add_s": round(t1 - t0, 3), "indexed_s": round(t2 - t1, 3), "edit_and_get_s": round(t3 - t2, 3),
    "peak_rss_bytes_above_before": after - before,
    "peak_per_text_byte": round((after - before) / size, 2),
    "goal_peak_per_text_byte": "<= 10",
}, indent=2))
PY
