#!/usr/bin/env bash
# The mixed load: 50 clients, 40% adds, 40% gets by id, 20% hybrid searches, against the
# release binary (`cargo build --release`) on a fresh data folder with the built-in
# embedder, `wrk` on 127.0.0.1. Seeds N memories first (default 5,000) and waits for the
# indexer. Then the service is killed with SIGKILL, restarted, and every add that was
# acknowledged with a 201 is read back: prints how many were lost (must be 0). Also prints
# the service's own time per route, from its request log, and the CPU each of its threads
# took and waited for (a thread name covers all its threads: `mnemon-http` is the async
# workers and the blocking pool).
# Run from the repository root: node/benches/wrk/mixed.sh (M=path/to/mnemon, N=seed size,
# T=seconds of mixed load).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
M=${M:-$here/../../../target/release/mnemon}
N=${N:-5000}
T=${T:-20}
D=$(mktemp -d /tmp/wrkmixed.XXXX); export MNEMON_DATA_DIR=$D/d
$M init >/dev/null
PORT=7812
U=http://127.0.0.1:$PORT
start() {
  $M serve --http 127.0.0.1:$PORT --no-p2p >> $D/serve.log 2>&1 &
  SPID=$!
  until curl -sf $U/health/ready >/dev/null; do sleep 0.2; done
}
start
export MNEMON_TOKEN=$($M token)
auth="Authorization: Bearer $MNEMON_TOKEN"
lag0() {
  until curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["index"]["lag_changes"] != 0)'; do sleep 1; done
}
echo "== seeding $N memories"
python3 - "$U" "$MNEMON_TOKEN" "$N" "$D/ids" <<'PY'
import http.client, json, sys, urllib.parse
url, token, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port)
words = "garden invoice kettle meeting rust paper trip doctor budget recipe bicycle lecture".split()
with open(out, "w") as f:
    for i in range(n):
        body = json.dumps({"content": f"seed {i} about the {words[i % 12]} and the {words[(i * 7) % 12]}"})
        c.request("POST", "/api/v1/memories", body, {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        r = c.getresponse(); data = r.read()
        assert r.status == 201, (r.status, data)
        f.write(json.loads(data)["id"] + "\n")
PY
lag0
echo "== mixed load: 50 connections, ${T}s (40% adds, 40% gets, 20% hybrid searches)"
# The service's threads, from the kernel's schedstat: how long each ran and how long it
# was ready to run but waited for a core (nanoseconds), and the machine's idle time.
threads() {
  python3 - "$SPID" <<'PY'
import json, os, sys, time
pid, seen = sys.argv[1], {}
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        ran, waited, _ = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
    except (OSError, ValueError):
        continue  # a thread that ended meanwhile
    seen[tid] = [name, int(ran), int(waited)]
idle = int(open("/proc/stat").readline().split()[4]) * 1e9 / os.sysconf("SC_CLK_TCK")
print(json.dumps({"at": time.monotonic(), "idle": idle, "threads": seen}))
PY
}
MNEMON_IDS=$D/ids MNEMON_ACKED=$D/acked wrk -t2 -c50 -d${T}s --latency -s $here/mixed.lua $U > $D/wrk.out &
WRK=$!
# Over the middle half of the load.
sleep $(( T / 4 )); threads > $D/threads.0; sleep $(( T / 2 )); threads > $D/threads.1
wait $WRK
grep -E "Requests/sec|requests in|50%|90%|99%|Non-2xx|Socket errors" $D/wrk.out
python3 - $D/threads.0 $D/threads.1 <<'PY'
import collections, json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
span = (b["at"] - a["at"]) * 1e9
ran, waited = collections.Counter(), collections.Counter()
for tid, (name, r, w) in b["threads"].items():
    _, r0, w0 = a["threads"].get(tid, [name, 0, 0])
    ran[name] += r - r0
    waited[name] += w - w0
print(f"machine idle over the middle half: {100 * (b['idle'] - a['idle']) / span:.0f}% of a core")
for name in sorted(ran, key=lambda n: -ran[n]):
    if ran[name] > 0.005 * span:
        print(f"thread {name}: ran {100 * ran[name] / span:.0f}% of a core, waited for one {100 * waited[name] / span:.0f}%")
PY
ps -o rss= -p $SPID | awk '{print "resident MB", $1/1024}'
cat $D/acked.* > $D/acked
echo "acknowledged adds: $(wc -l < $D/acked)"
# The service's own time per route (its request log), without wrk's and the sockets' queueing.
python3 - "$D/serve.log" <<'PY'
import collections, re, sys
times = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.search(r"method=(\w+) route=(\S+) status=\d+ ms=([\d.]+)", line)
    if m:
        times[m.group(1) + " " + m.group(2)].append(float(m.group(3)))
for route, ms in sorted(times.items()):
    if len(ms) >= 100:
        ms.sort()
        at = lambda q: ms[min(len(ms) - 1, int(len(ms) * q))]
        print(f"service time, {route}: {len(ms)} requests, p50 {at(0.5):.2f} ms, p90 {at(0.9):.2f} ms, p99 {at(0.99):.2f} ms")
PY
echo "== kill -9, restart, read every acknowledged id back"
kill -9 $SPID; wait $SPID 2>/dev/null || true
start
python3 - "$U" "$MNEMON_TOKEN" "$D/acked" <<'PY'
import http.client, sys, urllib.parse
url, token, path = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port)
ids = [l.strip() for l in open(path) if l.strip()]
lost = 0
for i in ids:
    c.request("GET", "/api/v1/memories/" + i, headers={"Authorization": "Bearer " + token})
    r = c.getresponse(); r.read()
    if r.status != 200:
        lost += 1
print(f"acknowledged ids lost after kill -9: {lost} of {len(ids)}")
PY
lag0
curl -s -H "$auth" $U/api/v1/status | python3 -c 'import json,sys; s=json.load(sys.stdin); print("memories", s["memories"], "keyword index", s["index"]["keyword_indexed"], "vectors", s["index"]["models"][0]["indexed"])'
kill $SPID; wait $SPID || true
rm -rf $D
