#!/usr/bin/env python3
"""Side-by-side benchmark of olm against llama.cpp's own tools.

Both sides run the same model, with the same threads, in the same run,
interleaved in ABBA order (A B, B A, A B, ...); each ratio is the median of
the pairwise ratios olm/llama.cpp. An A/A pass (llama.cpp against itself)
gives the error bar of the method on this machine.

Measured:
  pp512 / tg128   `olm bench` vs `llama-bench` (or `olm run --json` when
                  `olm bench` is not available)
  ttft            wall time of a cold one-shot run to its first answer
                  token: `olm run -n 1` vs `llama-completion -n 1`; olm
                  twice, with the prompt cache a run finds after one earlier
                  run (the model's system prompt) and with none
  peak RSS        of those one-shot runs
  serve           aggregate generated tokens/s of `olm serve --parallel 8` vs
                  `llama-server --parallel 8` at 1, 4 and 8 concurrent clients
  ceiling         this machine's memory bandwidth / bytes of weights read per
                  generated token: the most tg can reach
  draft           "rewrite this" / "fix this bug" prompts (answers that copy
                  their input), temperature 0: generation t/s of `olm run`
                  with drafting against `--draft off` and `llama-completion`,
                  and whether the answers are the same as with `--draft off`
  open            an open question (little to copy): drafting on vs off
  document        10 questions about one ~1,500-token document, one run each:
                  total wall time, `olm run` (prompt cache) vs `llama-completion`
  serve-draft     `olm serve --parallel 4` vs `llama-server --parallel 4`, 4
                  clients sending "rewrite" prompts: aggregate t/s
  long-prompt     a server log of 3,000 lines (270 KB) and 20,000 short lines:
                  wall time to load the model and tokenize the prompt (both
                  tools then refuse it as longer than an 8,192-token context)

Each row also shows the method's noise on this machine: half the
interquartile range of the pairwise ratios.

Usage: bench/compare.py [--pairs N] [--threads T] [--out docs/BENCHMARKS.md]
Needs: a release build of olm (cargo build --release) and the tools from
bench/build-llama-tools.sh; both are found automatically.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import random
import statistics
import subprocess
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = {
    "SmolLM2-135M Q4_1": REPO / "tests/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m Q4_K_M": REPO / "tests/models/gemma-3-270m-q4_k_m.gguf",
}
TTFT_PROMPT = "Explain in one paragraph what a memory-mapped file is."


def log(message: str) -> None:
    print(f"compare: {message}", file=sys.stderr, flush=True)


def default_olm() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "olm-target"
    )
    return Path(target) / "release" / "olm"


def tools_dir() -> Path:
    out = subprocess.run(
        [str(REPO / "bench/build-llama-tools.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def run_measured(argv: list[str], env: dict | None = None) -> tuple[float, float, int, bytes]:
    """Run argv; return (seconds to first stdout byte, total seconds, peak RSS KiB, stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env
    )
    assert process.stdout is not None
    first = process.stdout.read(1)
    first_byte = time.perf_counter() - started
    rest = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    total = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {process.returncode}")
    return first_byte, total, usage.ru_maxrss, first + rest


# --- speed: pp512 and tg128 -------------------------------------------------------


def llama_bench(tools: Path, model: Path, threads: int, test: str) -> float:
    args = ["-p", "512", "-n", "0"] if test == "pp512" else ["-p", "0", "-n", "128"]
    out = subprocess.run(
        [str(tools / "llama-bench"), "-m", str(model), "-t", str(threads), "-r", "3", "-o", "json", *args],
        check=True, capture_output=True, text=True,
    )
    records = json.loads(out.stdout)
    return float(records[0]["avg_ts"])


def olm_has_bench(olm: Path) -> bool:
    return subprocess.run([str(olm), "bench", "--help"], capture_output=True).returncode == 0


def olm_speed(olm: Path, model: Path, threads: int, test: str) -> float:
    if olm_has_bench(olm):
        args = ["-p", "512", "-n", "0"] if test == "pp512" else ["-p", "0", "-n", "128"]
        out = subprocess.run(
            [str(olm), "bench", str(model), "-t", str(threads), "-r", "3", "-o", "json", *args],
            check=True, capture_output=True, text=True,
        )
        return float(json.loads(out.stdout)[0]["avg_ts"])
    return olm_run_speed(olm, model, threads, test)


def olm_run_speed(olm: Path, model: Path, threads: int, test: str) -> float:
    """`olm run --json` as a stand-in: a raw 512-token prompt for pp, 128 tokens for tg."""
    if test == "pp512":
        prompt = " ".join(["hello"] * 511)
        args = ["--raw", prompt, "-n", "1", "-c", "1024"]
        field = "prompt_tokens_per_second"
    else:
        prompt = "1, 2, 3, 4, 5,"
        args = ["--raw", prompt, "-n", "128", "--temperature", "0", "-c", "256"]
        field = "generation_tokens_per_second"
    out = subprocess.run(
        [str(olm), "run", str(model), *args, "-t", str(threads), "--json"],
        check=True, capture_output=True, text=True,
    )
    report = json.loads(out.stdout)
    if test == "tg128" and report["generated_tokens"] < 64:
        raise RuntimeError(f"olm stopped after {report['generated_tokens']} tokens")
    return float(report[field])


# --- cold start ---------------------------------------------------------------------


def olm_cold(olm: Path, model: Path, threads: int, cache: Path | None) -> tuple[float, float, int]:
    """A new `olm run` process: with `cache`, its prompt cache (as every run
    has by default) in that folder; without, `--no-cache` (a first run ever)."""
    argv = [str(olm), "run", str(model), TTFT_PROMPT, "-n", "1", "--temperature", "0", "-t", str(threads)]
    if cache is None:
        argv.append("--no-cache")
    env = {**os.environ, "OLM_PROMPT_CACHE": str(cache)} if cache else None
    first, total, rss, _ = run_measured(argv, env)
    return first, total, rss


def completion_cold(tools: Path, olm: Path, model: Path, threads: int) -> tuple[float, float, int]:
    # The same tokens olm evaluates: its chat template around the question.
    prompt = chat_prompt(olm, model, TTFT_PROMPT, "")
    first, total, rss, _ = run_measured(
        [
            str(tools / "llama-completion"), "-m", str(model), "-p", prompt, "-n", "1",
            "--temp", "0", "-t", str(threads), "--no-display-prompt", "-no-cnv",
        ]
    )
    return first, total, rss


def cold_rows(olm: Path, tools: Path, label: str, model: Path, threads: int, pairs: int) -> list:
    """Time to first token of a new process, page cache warm: olm with its
    prompt cache as a run finds it after one earlier run of the model (it
    holds the template's system prompt), olm with none (`--no-cache`, a
    first run ever), and llama-completion with its defaults."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="olm-bench-cache-") as folder:
        cache = Path(folder)
        olm_cold(olm, model, threads, cache)  # the earlier run
        for name, where in (("olm's prompt cache", cache), ("no prompt cache", None)):
            log(f"{label} cold start ({name}): {pairs} ABBA pairs")
            ours, llama = abba(
                pairs,
                lambda: olm_cold(olm, model, threads, where),
                lambda: completion_cold(tools, olm, model, threads),
            )
            first_olm, first_llama = [x[0] for x in ours], [x[0] for x in llama]
            rows.append((label, f"time to first token, s ({name})", statistics.median(first_olm),
                         statistics.median(first_llama), median_ratio(first_olm, first_llama),
                         noise(first_olm, first_llama), "≤ 0.5"))
            if where is None:
                rss_olm, rss_llama = [x[2] for x in ours], [x[2] for x in llama]
                rows.append((label, "peak RSS, MiB", statistics.median(rss_olm) / 1024,
                             statistics.median(rss_llama) / 1024, median_ratio(rss_olm, rss_llama),
                             noise(rss_olm, rss_llama), "≤ 1.05"))
    return rows


# --- drafting, the document cache -----------------------------------------------------

# A file with a bug; "fix the bug" answers copy most of it (tests/it/speed.rs reads it too).
BUGGY_CODE = (REPO / "bench" / "inputs" / "buggy_moving_average.py").read_text()

PARAGRAPH = (
    "The old mill stood at the bend of the river for nearly two hundred years. Farmers from the "
    "valley brought their grain in autumn, and the miller, a patient man with flour in his beard, "
    "ground it slowly between the great stones while the water wheel turned outside. In winter the "
    "river froze at its edges and the wheel slowed, so the villagers saved their grain for the thaw. "
    "When the railway arrived, bringing flour from the cities, the mill fell quiet; its roof sagged, "
    "its wheel rotted, and children dared each other to cross its empty floor at night. Years later "
    "a young couple bought the ruin, rebuilt the wheel by hand, and opened a bakery that sells bread "
    "made from grain ground on the same stones, which people now drive for miles to buy. "
) * 2

DRAFT_PROMPTS = {
    "fix the bug": ("The moving average in this code is wrong. Fix the bug and output the whole "
                    "corrected file.", BUGGY_CODE),
    "rewrite with small edits": ("Rewrite this text with small edits: use the present tense. "
                                 "Output the whole text.", PARAGRAPH),
}
OPEN_PROMPT = "Write a short story about a lighthouse keeper who befriends a seagull."
# Drafts often guess wrong here (the number after ", " last time), and a
# wrong guess costs most of a step on a small model and CPU.
COUNT_PROMPT = "List the numbers from 1 to 200, separated by commas."
DRAFT_TOKENS = 256


def olm_generation(olm: Path, model: Path, threads: int, prompt: str, stdin: str, draft: str,
                   tokens: int = DRAFT_TOKENS) -> tuple[float, str]:
    """Generation t/s of one greedy `olm run`, and its answer."""
    out = subprocess.run(
        [str(olm), "run", str(model), prompt, "-n", str(tokens), "--temperature", "0", "-t",
         str(threads), "--json", "--no-cache", "--draft", draft],
        input=stdin, check=True, capture_output=True, text=True,
    )
    report = json.loads(out.stdout)
    return float(report["generation_tokens_per_second"]), report["text"]


# llama_perf_context_print: "        eval time = 1234.56 ms /   255 runs ..." (not "prompt eval time").
PERF_EVAL = re.compile(r"^(?!.*prompt eval).*\beval time =\s+([\d.]+) ms /\s+(\d+) runs", re.MULTILINE)


# Texts of BOS tokens that a chat template writes itself; llama-completion
# adds BOS on its own, so the rendered prompt it gets starts after it.
BOS_TEXTS = ("<bos>", "<s>", "<|begin_of_text|>")
_RENDERED: dict = {}


def chat_prompt(olm: Path, model: Path, prompt: str, stdin: str) -> str:
    """The exact text olm's chat template makes of `stdin` and `prompt`, so
    that llama-completion (raw prompt, special tokens parsed) is asked the
    same question in the same words."""
    key = (str(model), prompt, stdin)
    if key not in _RENDERED:
        out = subprocess.run(
            [str(olm), "run", str(model), prompt, "-n", "1", "--temperature", "0", "--verbose-prompt",
             "--no-cache"],
            input=stdin, check=True, capture_output=True, text=True,
        )
        marker = "prompt as the model sees it:\n"
        start = out.stderr.index(marker) + len(marker)
        rendered = out.stderr[start:out.stderr.index("\n---", start)]
        for bos in BOS_TEXTS:
            rendered = rendered.removeprefix(bos)
        _RENDERED[key] = rendered
    return _RENDERED[key]


def completion_generation(tools: Path, olm: Path, model: Path, threads: int, prompt: str, stdin: str,
                          tokens: int = DRAFT_TOKENS) -> float:
    """Generation t/s of one greedy `llama-completion` (its own perf line) on
    olm's rendered chat prompt."""
    out = subprocess.run(
        [str(tools / "llama-completion"), "-m", str(model), "-p", chat_prompt(olm, model, prompt, stdin),
         "-n", str(tokens), "--temp", "0", "-t", str(threads), "--no-display-prompt", "-no-cnv"],
        check=True, capture_output=True, text=True,
    )
    found = PERF_EVAL.findall(out.stderr)
    if not found:
        raise RuntimeError("llama-completion printed no eval time")
    milliseconds, runs = float(found[-1][0]), int(found[-1][1])
    if runs == 0 or milliseconds <= 0:
        raise RuntimeError("llama-completion generated nothing")
    return runs / milliseconds * 1000.0


def draft_rows(olm: Path, tools: Path, label: str, model: Path, threads: int, pairs: int) -> list:
    rows = []
    for name, (prompt, stdin) in DRAFT_PROMPTS.items():
        log(f"{label} {name}: {pairs} ABBA pairs (drafting vs off, vs llama-completion)")
        answers: dict[str, set] = {"ngram": set(), "off": set()}

        def measure(draft: str) -> float:
            speed, text = olm_generation(olm, model, threads, prompt, stdin, draft)
            answers[draft].add(text)
            return speed

        on, off = abba(pairs, lambda: measure("ngram"), lambda: measure("off"))
        _, llama = abba(pairs, lambda: measure("ngram"),
                        lambda: completion_generation(tools, olm, model, threads, prompt, stdin))
        same = "same answer" if answers["ngram"] == answers["off"] and len(answers["off"]) == 1 \
            else "answers differ"
        rows.append((label, f"{name}: tg t/s, drafting vs --draft off ({same})", statistics.median(on),
                     statistics.median(off), median_ratio(on, off), noise(on, off), "≥ 1.6"))
        rows.append((label, f"{name}: tg t/s, drafting vs llama-completion", statistics.median(on),
                     statistics.median(llama), median_ratio(on[-len(llama):], llama),
                     noise(on[-len(llama):], llama), "≥ 1.6"))
    log(f"{label} open question: {pairs} ABBA pairs")
    on, off = abba(pairs, lambda: olm_generation(olm, model, threads, OPEN_PROMPT, "", "ngram")[0],
                   lambda: olm_generation(olm, model, threads, OPEN_PROMPT, "", "off")[0])
    rows.append((label, "open question: tg t/s, drafting vs --draft off", statistics.median(on),
                 statistics.median(off), median_ratio(on, off), noise(on, off), "≥ 0.97"))
    log(f"{label} counting: {pairs} ABBA pairs")
    on, off = abba(pairs, lambda: olm_generation(olm, model, threads, COUNT_PROMPT, "", "ngram")[0],
                   lambda: olm_generation(olm, model, threads, COUNT_PROMPT, "", "off")[0])
    rows.append((label, "counting (guesses often wrong): tg t/s, drafting vs --draft off",
                 statistics.median(on), statistics.median(off), median_ratio(on, off), noise(on, off),
                 "≥ 0.97"))
    return rows


DOCUMENT_QUESTIONS = [
    "What did farmers bring to the mill?", "Who ground the grain?", "What happened in winter?",
    "Why did the mill fall quiet?", "What did children dare each other to do?",
    "Who bought the ruin?", "What does the bakery sell?", "How long did the mill stand?",
    "What turned outside the mill?", "Where do people drive from?",
]


def document_text() -> str:
    return (PARAGRAPH * 5).strip()


def olm_document_session(olm: Path, model: Path, threads: int, cache: Path) -> float:
    """Ten `olm run`s about one document, each a new process: total seconds."""
    started = time.perf_counter()
    for question in DOCUMENT_QUESTIONS:
        subprocess.run(
            [str(olm), "run", str(model), question, "-n", "24", "--temperature", "0", "-t", str(threads)],
            input=document_text(), check=True, capture_output=True, text=True,
            env={**os.environ, "OLM_PROMPT_CACHE": str(cache)},
        )
    return time.perf_counter() - started


def completion_document_session(tools: Path, olm: Path, model: Path, threads: int) -> float:
    prompts = [chat_prompt(olm, model, question, document_text()) for question in DOCUMENT_QUESTIONS]
    started = time.perf_counter()
    for prompt in prompts:
        subprocess.run(
            [str(tools / "llama-completion"), "-m", str(model), "-p", prompt,
             "-n", "24", "--temp", "0", "-t", str(threads), "--no-display-prompt", "-no-cnv"],
            check=True, capture_output=True, text=True,
        )
    return time.perf_counter() - started


def document_rows(olm: Path, tools: Path, label: str, model: Path, threads: int, pairs: int) -> list:
    import tempfile
    log(f"{label} 10 questions about one document: {pairs} ABBA pairs")
    with tempfile.TemporaryDirectory(prefix="olm-bench-cache-") as cache:
        olm_times, llama_times = abba(
            pairs, lambda: olm_document_session(olm, model, threads, Path(cache)),
            lambda: completion_document_session(tools, olm, model, threads))
    return [(label, "10 questions about one document, total s", statistics.median(olm_times),
             statistics.median(llama_times), median_ratio(olm_times, llama_times),
             noise(olm_times, llama_times), "≤ 0.35")]


# --- long prompts: tokenizing -------------------------------------------------------


def long_prompt_texts() -> list[tuple[str, str]]:
    """A server log with stack traces (newlines and runs of spaces, which
    are special tokens in gemma's vocabulary) and 20,000 short lines."""
    rng = random.Random(7)
    lines = []
    for i in range(2500):
        level = rng.choice(["INFO", "WARN", "DEBUG", "ERROR"])
        lines.append(
            f"2026-11-30 12:{i // 60 % 60:02d}:{i % 60:02d} {level:5}  worker-{rng.randint(1, 8)}  "
            f"request id={rng.randint(1000, 9999)} path=/api/v1/items/{rng.randint(1, 500)} "
            f"status={rng.choice([200, 200, 200, 404, 500])}  took {rng.randint(1, 900)}ms\n")
        if rng.random() < 0.1:
            lines.append(f"    at com.example.Handler.process(Handler.java:{rng.randint(10, 400)})\n"
                         "        at com.example.Server.run(Server.java:88)\n")
    return [("a server log, 3,000 lines", "".join(lines)), ("20,000 short lines", "x\n" * 20000)]


LONG_PROMPT_CTX = "8192"


def olm_long_prompt(olm: Path, model: Path, threads: int, path: Path) -> float:
    started = time.perf_counter()
    with path.open() as stdin:
        out = subprocess.run([str(olm), "run", str(model), "--raw", "-c", LONG_PROMPT_CTX, "-n", "1",
                              "--no-cache", "-t", str(threads)],
                             stdin=stdin, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if "context length exceeded" not in out.stderr:
        raise RuntimeError(f"olm did not tokenize the whole prompt: {out.stderr[:300]}")
    return elapsed


def completion_long_prompt(tools: Path, model: Path, threads: int, path: Path) -> float:
    started = time.perf_counter()
    out = subprocess.run([str(tools / "llama-completion"), "-m", str(model), "-f", str(path), "-n", "1",
                          "-c", LONG_PROMPT_CTX, "-t", str(threads), "--no-display-prompt", "-no-cnv"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if "prompt is too long" not in out.stderr:
        raise RuntimeError(f"llama-completion did not tokenize the whole prompt: {out.stderr[-300:]}")
    return elapsed


def long_prompt_rows(olm: Path, tools: Path, label: str, model: Path, threads: int, pairs: int) -> list:
    import tempfile
    rows = []
    with tempfile.TemporaryDirectory(prefix="olm-bench-prompt-") as folder:
        for name, text in long_prompt_texts():
            path = Path(folder) / "prompt.txt"
            path.write_text(text)
            log(f"{label} long prompt ({name}): {pairs} ABBA pairs")
            ours, theirs = abba(pairs, lambda: olm_long_prompt(olm, model, threads, path),
                                lambda: completion_long_prompt(tools, model, threads, path))
            rows.append((label, f"load and tokenize {name}, s", statistics.median(ours),
                         statistics.median(theirs), median_ratio(ours, theirs), noise(ours, theirs), "—"))
    return rows


# --- serving throughput ---------------------------------------------------------------

SERVE_PROMPT = "List the numbers from 1 to 100, separated by commas: 1, 2, 3,"
SERVE_TOKENS = 64
SERVE_CTX_PER_SEQUENCE = 512


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


class Server:
    """A server process on 127.0.0.1 that is stopped when the block ends."""

    def __init__(self, argv: list[str], port: int, model_name: str):
        self.argv, self.port, self.model_name = argv, port, model_name

    def __enter__(self):
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(self.port, self.process)
        self.complete(1)  # load the model and warm up before measuring
        return self

    def __exit__(self, *_):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def complete(self, max_tokens: int, prompt: str = SERVE_PROMPT) -> int:
        body = json.dumps({"model": self.model_name, "prompt": prompt, "max_tokens": max_tokens,
                           "temperature": 0, "seed": 1})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"completion failed: {response.status} {payload}")
        return int(payload["usage"]["completion_tokens"])

    def throughput(self, clients: int, requests_per_client: int = 2, prompts: list | None = None,
                   tokens: int = SERVE_TOKENS) -> float:
        """Aggregate generated tokens per second with `clients` at once."""
        counts = [0] * clients
        errors: list[Exception] = []

        def client(index: int) -> None:
            try:
                for _ in range(requests_per_client):
                    prompt = prompts[index % len(prompts)] if prompts else SERVE_PROMPT
                    counts[index] += self.complete(tokens, prompt)
            except Exception as error:  # reported after the threads join
                errors.append(error)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        elapsed = time.perf_counter() - started
        if errors:
            raise errors[0]
        return sum(counts) / elapsed


def serve_rows(olm: Path, tools: Path, label: str, model: Path, threads: int, pairs: int) -> list:
    olm_port, llama_port = free_port(), free_port()
    parallel = 8
    olm_server = Server(
        [str(olm), "serve", "--port", str(olm_port), "--parallel", str(parallel), "-c",
         str(SERVE_CTX_PER_SEQUENCE), "-t", str(threads), str(model)],
        olm_port, model.stem,
    )
    llama_server = Server(
        [str(tools / "llama-server"), "-m", str(model), "--host", "127.0.0.1", "--port", str(llama_port),
         "--parallel", str(parallel), "-c", str(SERVE_CTX_PER_SEQUENCE * parallel), "-t", str(threads),
        ],
        llama_port, model.stem,
    )
    rows = []
    with olm_server, llama_server:
        for clients in (1, 4, 8):
            log(f"{label} serve, {clients} clients: {pairs} ABBA pairs")
            olm_ts, llama_ts = abba(pairs, lambda: olm_server.throughput(clients),
                                    lambda: llama_server.throughput(clients))
            rows.append((label, f"serve t/s, {clients} clients", statistics.median(olm_ts),
                         statistics.median(llama_ts), median_ratio(olm_ts, llama_ts),
                         noise(olm_ts, llama_ts), "≥ 1.0"))
    return rows


def serve_draft_rows(olm: Path, tools: Path, label: str, model: Path, threads: int, pairs: int) -> list:
    """4 clients sending "rewrite" prompts to `--parallel 4` servers."""
    prompts = [f"{stdin}\n\n{prompt}\n" for prompt, stdin in DRAFT_PROMPTS.values()]
    olm_port, llama_port = free_port(), free_port()
    olm_server = Server(
        [str(olm), "serve", "--port", str(olm_port), "--parallel", "4", "-c", "2048", "-t", str(threads),
         str(model)], olm_port, model.stem)
    llama_server = Server(
        [str(tools / "llama-server"), "-m", str(model), "--host", "127.0.0.1", "--port", str(llama_port),
         "--parallel", "4", "-c", str(2048 * 4), "-t", str(threads)], llama_port, model.stem)
    with olm_server, llama_server:
        log(f"{label} serve, 4 clients, rewrite prompts: {pairs} ABBA pairs")
        olm_ts, llama_ts = abba(
            pairs, lambda: olm_server.throughput(4, 1, prompts, DRAFT_TOKENS),
            lambda: llama_server.throughput(4, 1, prompts, DRAFT_TOKENS))
    return [(label, "serve t/s, 4 clients, rewrite prompts (--parallel 4)", statistics.median(olm_ts),
             statistics.median(llama_ts), median_ratio(olm_ts, llama_ts), noise(olm_ts, llama_ts), "≥ 1.25")]


# --- the ceiling ------------------------------------------------------------------------


def memory_bandwidth_gbs() -> float:
    """Read bandwidth with all cores (GB/s), from bench/membw.c."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "olm" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    binary = cache / "membw"
    source = REPO / "bench" / "membw.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O3", "-march=native", "-fopenmp", str(source), "-o", str(binary)], check=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


# --- method -------------------------------------------------------------------------


def abba(pairs: int, measure_a, measure_b) -> tuple[list, list]:
    """Interleave A and B as A B, B A, A B, ... and return both series."""
    series_a, series_b = [], []
    for index in range(pairs):
        order = [("a", measure_a), ("b", measure_b)]
        if index % 2:
            order.reverse()
        for name, measure in order:
            (series_a if name == "a" else series_b).append(measure())
    return series_a, series_b


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def noise(a: list[float], b: list[float]) -> float:
    """Half the interquartile range of the pairwise ratios: the method's noise."""
    ratios = sorted(x / y for x, y in zip(a, b))
    if len(ratios) < 4:
        return (ratios[-1] - ratios[0]) / 2
    quartiles = statistics.quantiles(ratios, n=4)
    return (quartiles[2] - quartiles[0]) / 2


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if re.search(rf"\b{f}\b", text)]
        flags = ", ".join(found)
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} CPUs; {flags}), {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--olm", type=Path, default=default_olm())
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--pairs", type=int, default=6, help="ABBA pairs per measurement")
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument("--skip", default="",
                        help="comma-separated: speed,cold,serve,draft,document,long-prompt,serve-draft,aa")
    parser.add_argument("--model", action="append", choices=["smollm2", "gemma"],
                        help="measure only this test model (repeatable; default both)")
    options = parser.parse_args()
    skip = set(filter(None, options.skip.split(",")))
    models = {label: path for label, path in MODELS.items()
              if not options.model or any(label.lower().startswith(name) for name in options.model)}

    if options.olm == default_olm():
        log("building olm (cargo build --release)")
        # llama.cpp with olm's patches (patches/llama-cpp-sys-2): Cargo's [patch] needs vendor/.
        subprocess.run([str(REPO / "scripts" / "vendor-llama.sh")], check=True)
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO, check=True,
                       env={**os.environ, "CARGO_TARGET_DIR": str(default_olm().parent.parent)})
    if not options.olm.exists():
        log(f"{options.olm} missing: run `cargo build --release` first")
        return 1
    if not all(model.exists() for model in MODELS.values()):
        subprocess.run([str(REPO / "scripts" / "fetch-test-models.sh")], check=True)
    tools = tools_dir()
    rows = []
    for label, model in models.items():
        if not model.exists():
            log(f"{model} missing: run scripts/fetch-test-models.sh")
            return 1
        if "speed" not in skip:
            for test in ("pp512", "tg128"):
                log(f"{label} {test}: {options.pairs} ABBA pairs")
                olm, llama = abba(
                    options.pairs,
                    lambda: olm_speed(options.olm, model, options.threads, test),
                    lambda: llama_bench(tools, model, options.threads, test),
                )
                rows.append((label, f"{test} t/s", statistics.median(olm), statistics.median(llama),
                             median_ratio(olm, llama), noise(olm, llama), "≥ 0.98"))
        if "cold" not in skip:
            rows += cold_rows(options.olm, tools, label, model, options.threads, options.pairs)
        if "serve" not in skip:
            rows += serve_rows(options.olm, tools, label, model, options.threads, max(2, options.pairs // 2))
        if "draft" not in skip:
            rows += draft_rows(options.olm, tools, label, model, options.threads, options.pairs)
        if "document" not in skip:
            rows += document_rows(options.olm, tools, label, model, options.threads, max(2, options.pairs // 2))
        if "long-prompt" not in skip:
            rows += long_prompt_rows(options.olm, tools, label, model, options.threads, options.pairs)
        if "serve-draft" not in skip:
            rows += serve_draft_rows(options.olm, tools, label, model, options.threads,
                                     max(2, options.pairs // 2))
    aa_rows = []
    if "aa" not in skip:
        model = next(iter(models.values()))
        for test in ("pp512", "tg128"):
            log(f"A/A llama-bench {test}: {options.pairs} pairs")
            a, b = abba(
                options.pairs,
                lambda: llama_bench(tools, model, options.threads, test),
                lambda: llama_bench(tools, model, options.threads, test),
            )
            aa_rows.append((f"llama-bench vs itself, {next(iter(models))} {test}", median_ratio(a, b)))

    bandwidth = memory_bandwidth_gbs()
    ceilings = [(label, bandwidth * 1e9 / model.stat().st_size) for label, model in models.items()]
    report = render(rows, aa_rows, options, bandwidth, ceilings)
    print(report)
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(report)
        log(f"wrote {options.out}")
    return 0


def render(rows, aa_rows, options, bandwidth, ceilings) -> str:
    lines = [
        "# olm vs llama.cpp",
        "",
        f"Machine: {machine_description()}. Threads: {options.threads}. "
        f"Method: {options.pairs} ABBA pairs per row, median of pairwise ratios.",
        "",
        "| model | measure | olm | against | ratio | noise (±) | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, measure, olm, llama, ratio, spread, target in rows:
        lines.append(f"| {label} | {measure} | {olm:.3f} | {llama:.3f} | {ratio:.3f} | {spread:.3f} | {target} |")
    lines += ["", f"Memory read bandwidth (all cores, bench/membw.c): {bandwidth:.1f} GB/s. Generation "
              "ceiling (bandwidth / model file size, the weights one token reads; one sequence):", ""]
    lines += [f"- {label}: {ceiling:.0f} t/s" for label, ceiling in ceilings]
    if aa_rows:
        lines += ["", "A/A (the method's error bar on this machine):", ""]
        lines += [f"- {name}: {ratio:.3f}" for name, ratio in aa_rows]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
