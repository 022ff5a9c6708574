"""Slider latency of `viscoin serve` on the shipped digits model (target: < 150 ms per move on the CPU).

    python benchmarks/serve_latency.py [--requests 200] [--threads N] [--device cpu]

A slider move is one POST /api/render through the real HTTP server (a thread of this process, on
127.0.0.1), on a kept-alive connection as the browser uses: the JSON request, the render
x̃' = G(λ·Φ, γ), g's and f's predictions on it and the PNG answer. The λ of the sample's top concepts
sweep 0..4 as a drag would; the samples change every 20 moves. Prints the median and p95 in ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time

TARGET_MS = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from viscoin_cli.cli import _interpret as common
    from viscoin_cli.runtime import setup_runtime
    from viscoin_cli.serve.explorer import Explorer
    from viscoin_cli.serve.server import make_server
    from viscoin_cli.shipped import DEFAULT_MODEL

    facts = common.read_model(DEFAULT_MODEL)
    rt = setup_runtime(device=args.device, precision="fp32")
    model = common.load_model(facts, rt, common.Inputs())
    test_set = common.load_test_split(facts, common.Inputs())
    explorer = Explorer(model, rt, facts.class_names, test_set, 6, resolution=facts.resolution)
    server = make_server(explorer, "127.0.0.1", 0, log_errors=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)

    def call(method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body) if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        document = json.loads(response.read())
        if response.status != 200:
            raise SystemExit(f"{method} {path}: {response.status} {document}")
        return document

    times: list[float] = []
    concepts: list[str] = []
    for step in range(-5, args.requests):  # 5 warm-up moves
        if step % 20 == 0 or not concepts:
            sample = call("GET", f"/api/sample?index={(step // 20) % len(test_set)}")
            concepts = [str(c["concept"]) for c in sample["concepts"]]
        lam = round((step % 41) * 0.1, 1)
        body = {"source": sample["source"], "lambdas": {c: (lam if i == 0 else 1.0) for i, c in enumerate(concepts)}}
        start = time.perf_counter()
        call("POST", "/api/render", body)
        if step >= 0:
            times.append((time.perf_counter() - start) * 1000)
    connection.close()
    server.shutdown()

    times.sort()
    median = statistics.median(times)
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    verdict = "meets" if p95 < TARGET_MS else "misses"
    print(f"slider move (POST /api/render, {facts.resolution} px digits model, {args.device}, "
          f"{torch.get_num_threads()} torch threads, {len(times)} requests)")  # fmt: skip
    print(f"median {median:.1f} ms   p95 {p95:.1f} ms   max {times[-1]:.1f} ms   target < {TARGET_MS} ms: {verdict}")


if __name__ == "__main__":
    main()
