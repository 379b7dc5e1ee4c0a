#!/usr/bin/env bash
# The engine under HTTP load: the release binary (`cargo build --release`) on a fresh data
# folder with the built-in embedder, `wrk` (apt-get install wrk) on 127.0.0.1. Prints
# /health/live's rate (the framework's floor) beside adds at 1 and 50 connections, gets by
# id, a first page of the list and hybrid searches over what the adds wrote, then the
# service's resident memory.
# Run from the repository root: node/benches/wrk/run.sh (M=path/to/mnemon to choose).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${M:-$here/../../../target/release/mnemon}
D=$(mktemp -d /tmp/wrkdata.XXXX); export MNEMON_DATA_DIR=$D/d
$M init >/dev/null
PORT=7811
$M serve --http 127.0.0.1:$PORT --no-p2p > $D/serve.log 2>&1 &
SPID=$!
sleep 2
export MNEMON_TOKEN=$($M token)
U=http://127.0.0.1:$PORT
echo "== health/live, 50 connections"; wrk -t2 -c50 -d10s --latency $U/health/live | grep -E "Requests/sec|99%|50%"
echo "== adds, 1 connection"; wrk -t1 -c1 -d10s --latency -s $here/post.lua $U | grep -E "Requests/sec|99%|50%|Non-2xx"
echo "== adds, 50 connections"; wrk -t2 -c50 -d15s --latency -s $here/post.lua $U | grep -E "Requests/sec|99%|50%|Non-2xx"
# Reads are measured at rest: once the keyword index has caught up with the adds, no vector
# is pending, no graph is being built and the vector index has not changed for 10 s (the
# indexer and the sealer would compete for the two cores otherwise; during a catch-up they
# took a fifth of them, and gets ran at 0.8x their rate at rest), or after 5 minutes.
t0=$(date +%s); last=""; since=$t0
while [ $(( $(date +%s) - t0 )) -lt 300 ]; do
  now=$(curl -s -H "Authorization: Bearer $MNEMON_TOKEN" $U/api/v1/status | python3 -c 'import json,sys; i=json.load(sys.stdin)["index"]; m=i["models"][0]; print(i["lag_changes"], m["pending"], m["segments"], m["vectors_stored"], m["building_graph"])')
  [ "$now" != "$last" ] && { last=$now; since=$(date +%s); }
  case "$now" in "0 0 "*" False") [ $(( $(date +%s) - since )) -ge 10 ] && break ;; esac
  sleep 1
done
echo "at rest after $(( $(date +%s) - t0 )) s (lag, vectors pending, graphs, vectors, building a graph: $last)"
ID=$(curl -s -H "Authorization: Bearer $MNEMON_TOKEN" "$U/api/v1/memories?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
echo "== get by id, 50 connections"; wrk -t2 -c50 -d10s --latency -s $here/get.lua $U/api/v1/memories/$ID | grep -E "Requests/sec|99%|50%|Non-2xx"
echo "== list, first page of 20, 1 connection"; wrk -t1 -c1 -d10s --latency -s $here/get.lua "$U/api/v1/memories?limit=20" | grep -E "Requests/sec|99%|50%|Non-2xx"
echo "== health/live again, 50 connections"; wrk -t2 -c50 -d10s --latency $U/health/live | grep -E "Requests/sec|99%|50%"
curl -s -H "Authorization: Bearer $MNEMON_TOKEN" $U/api/v1/status | python3 -c 'import json,sys; s=json.load(sys.stdin); print("memories", s["memories"], "index", s["index"]["keyword_indexed"], s["index"]["models"][0]["indexed"], "lag", s["index"]["lag_changes"])'
echo "== hybrid search, 1 connection"; wrk -t1 -c1 -d10s --latency -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" | grep -E "Requests/sec|99%|50%|Non-2xx"
echo "== hybrid search, 50 connections"; wrk -t2 -c50 -d10s --latency -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" | grep -E "Requests/sec|99%|50%|Non-2xx"
ps -o rss= -p $SPID | awk '{print "resident MB", $1/1024}'
kill $SPID; wait $SPID || true
