#!/usr/bin/env bash
# What one large memory costs a running node: `serve` on a fresh data folder (built-in
# embedder), one memory of SIZE bytes of prose (default: the 8 MiB content limit) posted,
# searched for once indexed, edited (its title, then its text ten times) and read, each step waited
# for until search has it. Prints the time of the add and the edit of the text, and for
# each step the service's peak resident memory above its level just before the add, per
# byte of text.
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
# The same text edited near its start, as an editor sends it back; then again.
with open(sys.argv[2], "w") as f:
    json.dump({"content": "An edit at the start.\n" + text[22:]}, f)
with open(sys.argv[2] + ".2", "w") as f:
    json.dump({"content": "A second edit.\n" + text[15:]}, f)
PY
hwm() { awk '/VmHWM/ {print $2 * 1024}' /proc/$SPID/status; }
auth="Authorization: Bearer $MNEMON_TOKEN"
# Waits until search by words has caught up with change-log position $1 (the index's work
# on a write is part of what it costs).
indexed() {
  until curl -sf -H "$auth" "$U/api/v1/search?q=zanzibarquokka&mode=keyword&after=$1" | grep -q "$ID"; do sleep 0.2; done
}
# Each step's peak resident memory above the service's level before the add: the peak is
# reset before the step, and the step ends when the index has it.
step() { echo 5 > /proc/$SPID/clear_refs; }
seq_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])'; }
echo 5 > /proc/$SPID/clear_refs
before=$(hwm)
t0=$(date +%s.%N)
ID=$(curl -sf -H "$auth" -H 'content-type: application/json' --data-binary @$D/body.json $U/api/v1/memories | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["seq"])')
t1=$(date +%s.%N)
SEQ=${ID#* }; ID=${ID% *}
indexed $SEQ
t2=$(date +%s.%N); add=$(hwm)
step
SEQ=$(curl -sf -X PATCH -H "$auth" -H 'content-type: application/json' -d '{"title": "Large, renamed"}' $U/api/v1/memories/$ID | seq_of)
indexed $SEQ
title=$(hwm)
step
t3=$(date +%s.%N)
SEQ=$(curl -sf -X PATCH -H "$auth" -H 'content-type: application/json' --data-binary @$D/edit.json $U/api/v1/memories/$ID | seq_of)
t4=$(date +%s.%N)
indexed $SEQ
text=$(hwm)
step
SEQ=$(curl -sf -X PATCH -H "$auth" -H 'content-type: application/json' --data-binary @$D/edit.json.2 $U/api/v1/memories/$ID | seq_of)
indexed $SEQ
text2=$(hwm)
# Edits 3 to 9 of the text, then the tenth measured: whether an edit costs more the more
# often the text was edited.
for n in 3 4 5 6 7 8 9; do
  f=$D/edit.json; [ $((n % 2)) = 0 ] && f=$D/edit.json.2
  SEQ=$(curl -sf -X PATCH -H "$auth" -H 'content-type: application/json' --data-binary @$f $U/api/v1/memories/$ID | seq_of)
  indexed $SEQ
done
step
t5=$(date +%s.%N)
SEQ=$(curl -sf -X PATCH -H "$auth" -H 'content-type: application/json' --data-binary @$D/edit.json.2 $U/api/v1/memories/$ID | seq_of)
t6=$(date +%s.%N)
indexed $SEQ
text10=$(hwm)
step
curl -sf -H "$auth" $U/api/v1/memories/$ID -o /dev/null
get=$(hwm)
store=$(du -sb $MNEMON_DATA_DIR/mnemon.redb | cut -f1)
python3 - "$SIZE" "$before" "$add" "$title" "$text" "$text2" "$text10" "$get" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$t6" "$store" <<'PY'
import json, sys
size, before, *peaks = map(int, sys.argv[1:9])
t0, t1, t2, t3, t4, t5, t6 = map(float, sys.argv[9:16])
store = int(sys.argv[16])
steps = ["add", "title_edit", "text_edit", "second_text_edit", "tenth_text_edit", "get"]
above = dict(zip(steps, (p - before for p in peaks)))
print(json.dumps({
    "data": f"one memory of {size} bytes of prose through a running serve (built-in embedder)",
    "add_s": round(t1 - t0, 3), "indexed_s": round(t2 - t1, 3), "text_edit_s": round(t4 - t3, 3),
    "tenth_text_edit_s": round(t6 - t5, 3),
    "store_file_bytes_after": store,
    "peak_rss_bytes_above_before": above,
    "peak_per_text_byte": {k: round(v / size, 2) for k, v in above.items()},
    "goal_peak_per_text_byte": "<= 10",
}, indent=2))
PY
