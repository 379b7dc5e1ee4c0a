#!/usr/bin/env bash
# Deletes while searches run: the release binary (`cargo build --release`) on a fresh data
# folder with the built-in embedder, `wrk` on 127.0.0.1. Fills the node with S seconds of
# adds at 50 connections (default 6: about 25,000 memories), waits until both indexes have
# them, then deletes five memories one by one (0.5 s apart) while keyword-and-meaning
# searches run on 4 connections. Prints each delete's time and the searches' rate and
# latency. A delete answers once the deleted memory's words are gone from every index file
# (its purge merges the keyword segments); searches should not wait for that.
# Run from the repository root: node/benches/wrk/deletes.sh (M=path/to/mnemon, S=seconds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${M:-$here/../../../target/release/mnemon}
D=$(mktemp -d /tmp/wrkdel.XXXX); export MNEMON_DATA_DIR=$D/d
$M init >/dev/null
PORT=7815
U=http://127.0.0.1:$PORT
$M serve --http 127.0.0.1:$PORT --no-p2p >> $D/serve.log 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null; wait $SPID 2>/dev/null; rm -rf $D' EXIT
until curl -sf $U/health/ready >/dev/null; do sleep 0.1; done
export MNEMON_TOKEN=$($M token)
auth="Authorization: Bearer $MNEMON_TOKEN"
echo "== filling: ${S:-6}s of adds at 50 connections"
wrk -t2 -c50 -d${S:-6}s -s $here/post.lua $U | grep Requests/sec
until curl -s -H "$auth" $U/api/v1/status | python3 -c '
import json, sys
d = json.load(sys.stdin)["index"]
sys.exit(d["lag_changes"] != 0 or any(m["pending"] for m in d["models"]))'; do sleep 1; done
curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; print("memories:", json.load(sys.stdin)["index"]["seq"])'
ids=$(curl -s -H "$auth" "$U/api/v1/memories?limit=5" | python3 -c 'import json,sys; print(" ".join(m["id"] for m in json.load(sys.stdin)["items"]))')
cat > $D/search.lua <<'LUA'
local token = os.getenv("MNEMON_TOKEN")
request = function()
  return wrk.format("GET", "/api/v1/search?q=kettle+garden&k=10", {["Authorization"]="Bearer " .. token})
end
LUA
echo "== 5 deletes while searches run on 4 connections (6 s)"
wrk -t1 -c4 -d6s --latency -s $D/search.lua $U > $D/search.out &
WPID=$!
sleep 1
for id in $ids; do
  curl -s -o /dev/null -w "delete: HTTP %{http_code} in %{time_total} s\n" -X DELETE -H "$auth" $U/api/v1/memories/$id
  sleep 0.5
done
wait $WPID
grep -E "Requests/sec|50%|90%|99%" $D/search.out
