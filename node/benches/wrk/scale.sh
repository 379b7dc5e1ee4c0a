#!/usr/bin/env bash
# The node at N memories (default 100,000): fills a fresh data folder through the API with
# `wrk` (50 connections, unique short notes; the last few thousand one at a time, so it
# ends at N), waits for the indexer, then prints hybrid search at 1 and 50 connections,
# the service's resident memory, and after a restart the time from start to ready
# (`/health/ready`), resident memory again, and the same once the node is at rest.
# Release binary (`cargo build --release`), built-in embedder, 127.0.0.1.
# Run from the repository root: node/benches/wrk/scale.sh (M=path/to/mnemon, N=memories).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${M:-$here/../../../target/release/mnemon}
N=${N:-100000}
D=$(mktemp -d /tmp/wrkscale.XXXX); export MNEMON_DATA_DIR=$D/d
$M init >/dev/null
PORT=7814
U=http://127.0.0.1:$PORT
# Resident memory, and of it the process's own (anonymous) pages and pages of files it
# maps (the binary, the keyword index's segments: the kernel's page cache, given back under
# pressure).
resident() { awk -v what="$1" '/^VmRSS|^RssAnon|^RssFile/ {v[$1]=$2} END {printf "resident MB %s %.0f (own %.0f, mapped files %.0f)\n", what, v["VmRSS:"]/1024, v["RssAnon:"]/1024, v["RssFile:"]/1024}' /proc/$SPID/status; }
start() {
  local t0=$(date +%s.%N)
  $M serve --http 127.0.0.1:$PORT --no-p2p >> $D/serve.log 2>&1 &
  SPID=$!
  until curl -sf $U/health/ready >/dev/null; do sleep 0.05; done
  echo "ready after $(echo "$(date +%s.%N) - $t0" | bc) s"
}
start
export MNEMON_TOKEN=$($M token)
auth="Authorization: Bearer $MNEMON_TOKEN"
count() { curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["memories"])'; }
echo "== filling to $N memories (adds, 50 connections)"
t0=$(date +%s)
# wrk runs for a time, not a count (whole seconds): each run is sized from the rate so far
# (at first a guess above it) to stop short of N, at most 10 s; the last second's worth or
# few thousand go in one at a time, so the fill ends at N.
rate=20000
while left=$(( N - $(count) )); [ $left -gt 3000 ] && [ $left -gt $rate ]; do
  secs=$(( left * 8 / 10 / rate )); [ $secs -lt 1 ] && secs=1; [ $secs -gt 10 ] && secs=10
  rate=$(wrk -t2 -c50 -d${secs}s -s $here/post.lua $U | awk '/Requests\/sec/ {printf "%d", $2}')
  [ "${rate:-0}" -gt 0 ] || rate=1000
done
python3 - "$U" "$MNEMON_TOKEN" $(( N - $(count) )) <<'PY'
import http.client, json, random, sys, urllib.parse
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port)
words = "garden invoice kettle meeting rust paper trip doctor budget recipe bicycle lecture".split()
for i in range(max(n, 0)):
    body = json.dumps({"content": f"note {random.randrange(10**9)} {i} about the {words[i % 12]} and the {words[(i * 7) % 12]}, the fill's last"})
    c.request("POST", "/api/v1/memories", body, {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
PY
echo "  $(count) memories in $(( $(date +%s) - t0 )) s"
until curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["index"]["lag_changes"] != 0)'; do sleep 1; done
echo "  indexed after $(( $(date +%s) - t0 )) s"
resident "after filling"
echo "== hybrid search, 1 connection"; wrk -t1 -c1 -d10s --latency -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" | grep -E "Requests/sec|99%|50%|Non-2xx"
wrk -t2 -c50 -d3s -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" > /dev/null  # warm-up: the threads of 50 connections
echo "== hybrid search, 50 connections"; wrk -t2 -c50 -d10s --latency -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" | grep -E "Requests/sec|99%|50%|Non-2xx"
resident "after searching"
echo "== restart"
kill $SPID; wait $SPID || true
start
sleep 5
resident "5 s after a restart"
echo "== hybrid search after the restart, 1 connection"; wrk -t1 -c1 -d10s --latency -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" | grep -E "Requests/sec|99%|50%|Non-2xx"
# At rest: once nothing is pending, no graph is being built and the vector index has not
# changed for 30 s (the
# sealer has merged what the fill left, into one graph if that is within its cost; see
# `VectorIndex::compact_job`), or after 10 minutes, whatever is left.
t0=$(date +%s); last=""; since=$t0
while [ $(( $(date +%s) - t0 )) -lt 600 ]; do
  now=$(curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; m=json.load(sys.stdin)["index"]["models"][0]; print(m["pending"], m["segments"], m["vectors_stored"], m["building_graph"])')
  [ "$now" != "$last" ] && { last=$now; since=$(date +%s); }
  [ "${now%% *}" = 0 ] && [ "${now##* }" = False ] && [ $(( $(date +%s) - since )) -ge 30 ] && break
  sleep 2
done
echo "at rest $(( $(date +%s) - t0 - 30 )) s after the restart's first search (pending, graphs, vectors, building: $last)"
resident "at rest"
sleep 5
echo "== hybrid search at rest ($(curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["index"]["models"][0]["segments"])') vector graphs), 50 connections"
wrk -t2 -c50 -d3s -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" > /dev/null
wrk -t2 -c50 -d10s --latency -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" | grep -E "Requests/sec|99%|50%|Non-2xx"
resident "after searching"
du -sh $D/d | awk '{print "data folder", $1}'
kill $SPID; wait $SPID || true
[ -n "${KEEP:-}" ] && echo "kept $D" || rm -rf $D
