#!/usr/bin/env bash
# Searches while the vector index catches up: fills a fresh node through the API for F
# seconds (default 20) at 50 connections (`post.lua`'s unique short notes; about 110,000
# memories on this machine kind), waits until the keyword index holds them all, then runs
# hybrid searches at 50 connections for 10 s (after a 3 s warm-up) while the indexer and the
# sealer are still putting the vectors in and building their graphs. Prints the vector
# index's state before and after. Release binary, built-in embedder, `wrk` on 127.0.0.1.
# Run from the repository root: node/benches/wrk/catchup.sh (M=path/to/mnemon, F=seconds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${M:-$here/../../../target/release/mnemon}
D=$(mktemp -d /tmp/wrkcatchup.XXXX); export MNEMON_DATA_DIR=$D/d
$M init >/dev/null
PORT=7817
U=http://127.0.0.1:$PORT
$M serve --http 127.0.0.1:$PORT --no-p2p >> $D/serve.log 2>&1 &
SPID=$!
# Whatever ends the script (a failed step too) stops the service and removes its folder.
trap 'kill $SPID 2>/dev/null; wait $SPID 2>/dev/null; rm -rf "$D"' EXIT
until curl -sf $U/health/ready >/dev/null; do sleep 0.1; done
export MNEMON_TOKEN=$($M token)
auth="Authorization: Bearer $MNEMON_TOKEN"
state() {
  curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; s=json.load(sys.stdin); m=s["index"]["models"][0]; print(s["memories"], "memories, the vectors of", m["indexed"], "in the index (" + str(m["vectors_stored"]), "vectors,", m["segments"], "graphs, building a graph:", m["building_graph"], end=")\n")'
}
echo "== filling for ${F:-20} s (adds, 50 connections)"
wrk -t2 -c50 -d${F:-20}s -s $here/post.lua $U | grep -E "Requests/sec"
until curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["index"]["lag_changes"] != 0)'; do sleep 1; done
echo "before: $(state)"
wrk -t2 -c50 -d3s -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" > /dev/null
echo "== hybrid search, 50 connections"
wrk -t2 -c50 -d10s --latency -s $here/get.lua "$U/api/v1/search?q=kettle+budget+garden" | grep -E "Requests/sec|99%|50%|Non-2xx"
echo "after: $(state)"
