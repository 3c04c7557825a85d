#!/usr/bin/env python3
"""What splitting a model over RPC workers costs (not a test).

Two `olm worker` processes on loopback ports take layers of the model; the
main process keeps its share (this machine has no GPU, so its CPU counts by
its memory, as each worker does). Measured, interleaved in ABBA order with
the single process (A = one process, B = split over local + 2 workers):

  pp512 / tg128   `olm bench` t/s, and the median of the pairwise ratios
                  split / single, with the noise (half the interquartile
                  range of those ratios, and each side's spread)
  bytes           what crosses the RPC connections, both directions, TCP/IP
                  headers included: the client and the workers run again in
                  a network namespace of their own (unshare -rn), where the
                  loopback interface carries nothing else, and its transmit
                  counter (/proc/net/dev) is read around each run: per
                  generated token, per prompt token, and to load the model

From the bytes per token it projects what a 1 Gbit/s and a 10 Gbit/s link
allow for a 70B model (see docs/BENCHMARKS.md, "Splitting over machines").

Usage: bench/rpc.py [--pairs N] [--threads T] [--model PATH] [--olm PATH]
Needs: a build of olm (release preferred: cargo build --release); unshare
and ip (util-linux, iproute2) and user namespaces for the bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def find_olm(given: str | None) -> Path:
    if given:
        return Path(given)
    target = os.environ.get("CARGO_TARGET_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "olm-target"
    )
    for profile in ("release", "debug"):
        path = Path(target) / profile / "olm"
        if path.exists():
            return path
    sys.exit("no olm build found: run cargo build --release (or pass --olm)")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Worker:
    def __init__(self, olm: Path, env: dict, threads: int):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [str(olm), "worker", "--bind", f"127.0.0.1:{self.port}", "-t", str(threads)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.time() + 60
        while b"listening on" not in self.read_log():
            if self.process.poll() is not None or time.time() > deadline:
                sys.exit(f"olm worker did not start: {self.read_log().decode()}")
            time.sleep(0.1)

    def read_log(self) -> bytes:
        self.log.seek(0)
        return self.log.read()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def bench(olm: Path, env: dict, args: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [str(olm), "bench", *args, "-o", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {record["test"]: record["avg_ts"] for record in json.loads(out)}


def loopback_sent() -> int:
    """Bytes the loopback interface of this network namespace has sent."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[8])
    sys.exit("no loopback interface in /proc/net/dev")


def traffic(olm, env, args) -> int:
    before = loopback_sent()
    bench(olm, env, args)
    return loopback_sent() - before


def measure_traffic(olm: Path, env: dict, model: str, threads: int) -> dict[str, int]:
    """Inside a fresh network namespace: the bytes of four split runs."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    workers = [Worker(olm, env, threads) for _ in range(2)]
    rpc = ",".join(worker.endpoint for worker in workers)
    split = ["--rpc", rpc, "--no-warmup", "-r", "1", "-t", str(threads)]
    try:
        return {
            "gen_short": traffic(olm, env, [model, "-p", "0", "-n", "32", *split]),
            "gen_long": traffic(olm, env, [model, "-p", "0", "-n", "160", *split]),
            "pp_short": traffic(olm, env, [model, "-p", "64", "-n", "0", *split]),
            "pp_long": traffic(olm, env, [model, "-p", "512", "-n", "0", *split]),
        }
    finally:
        for worker in workers:
            worker.stop()


def spread(values: list[float]) -> float:
    """Half the interquartile range, relative to the median."""
    if len(values) < 4:
        return (max(values) - min(values)) / 2 / statistics.median(values)
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / 2 / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--olm")
    parser.add_argument("--traffic-only", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    olm = find_olm(options.olm)
    home = tempfile.mkdtemp(prefix="olm-bench-rpc-")
    env = dict(os.environ, OLM_HOME=home, NO_COLOR="1")
    if options.traffic_only:
        # Run by the lines below, inside unshare -rn.
        print(json.dumps(measure_traffic(olm, env, options.model, options.threads)))
        return
    workers = [Worker(olm, env, options.threads) for _ in range(2)]
    rpc = ",".join(worker.endpoint for worker in workers)
    common = [options.model, "-p", "512", "-n", "128", "-r", "2", "-t", str(options.threads)]
    results: dict[str, dict[str, list[float]]] = {"single": {}, "split": {}}
    try:
        for pair in range(options.pairs):
            order = ["single", "split"] if pair % 2 == 0 else ["split", "single"]
            for side in order:
                extra = ["--rpc", rpc] if side == "split" else []
                for test, value in bench(olm, env, common + extra).items():
                    results[side].setdefault(test, []).append(value)
            print(f"pair {pair + 1}/{options.pairs} done", file=sys.stderr)
    finally:
        for worker in workers:
            worker.stop()
    counted = subprocess.run(
        ["unshare", "-r", "-n", sys.executable, __file__, "--traffic-only",
         "--olm", str(olm), "--model", options.model, "--threads", str(options.threads)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    bytes_of = json.loads(counted.stdout)
    per_token = (bytes_of["gen_long"] - bytes_of["gen_short"]) / 128
    per_prompt_token = (bytes_of["pp_long"] - bytes_of["pp_short"]) / 448
    load = bytes_of["pp_short"] - 64 * per_prompt_token

    print(f"Model: {Path(options.model).name}; threads per process: {options.threads}; "
          f"{options.pairs} ABBA pairs, each `olm bench -r 2`.\n")
    print("| test | one process t/s | split t/s | split / one | noise (ratios) | noise one / split |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for test in results["single"]:
        single, divided = results["single"][test], results["split"].get(test, [])
        ratios = [b / a for a, b in zip(single, divided)]
        print(
            f"| {test} | {statistics.median(single):.1f} | {statistics.median(divided):.1f} "
            f"| {statistics.median(ratios):.3f} | ±{spread(ratios) * 100:.1f}% "
            f"| ±{spread(single) * 100:.1f}% / ±{spread(divided) * 100:.1f}% |"
        )
    print()
    print(f"- bytes over the RPC sockets per generated token: {per_token / 1024:.1f} KiB")
    print(f"- per prompt token: {per_prompt_token / 1024:.2f} KiB")
    print(f"- to load the model (weights and setup): {load / 2**20:.1f} MiB "
          f"(model file {Path(options.model).stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
