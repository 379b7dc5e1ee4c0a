#!/usr/bin/env python3
"""hnswlib's half of `cargo bench -p mnemon-node --bench ann`: the same vectors, the same
queries, the same ground truth, one thread, M=16, ef_construction=200.

Reads DIR/base.f32 and DIR/queries.f32 (little-endian f32 rows of DIM) and DIR/truth.u32
(K ids per query), prints one JSON object: build seconds and, per ef, recall@K and QPS
(the best of REPEAT passes, the optional fourth argument).
Needs `pip install numpy hnswlib` (hnswlib builds from source with the machine's g++).
"""
import json
import sys
import time

import hnswlib
import numpy as np


def main():
    folder, dim, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    base = np.fromfile(f"{folder}/base.f32", dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(f"{folder}/queries.f32", dtype="<f4").reshape(-1, dim)
    truth = np.fromfile(f"{folder}/truth.u32", dtype="<u4").reshape(-1, k)
    index = hnswlib.Index(space="ip", dim=dim)
    index.set_num_threads(1)
    start = time.perf_counter()
    index.init_index(max_elements=len(base), M=16, ef_construction=200, random_seed=7)
    index.add_items(base, np.arange(len(base)), num_threads=1)
    build = time.perf_counter() - start
    runs = []
    for ef in [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]:
        if ef < k:
            continue
        index.set_ef(ef)
        elapsed = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            # One call for all queries: no Python overhead per query.
            found, _ = index.knn_query(queries, k=k, num_threads=1)
            elapsed = min(elapsed, time.perf_counter() - start)
        hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
        runs.append({"ef": ef, "recall": hits / (len(queries) * k), "qps": len(queries) / elapsed})
    json.dump({"library": "hnswlib " + getattr(hnswlib, "__version__", ""), "build_s": build, "runs": runs}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
