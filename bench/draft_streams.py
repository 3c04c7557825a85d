#!/usr/bin/env python3
"""Write tests/data/draft-streams.json: for each test model and each drafting
prompt of bench/compare.py (and the serving bench's prompt), the prompt's
tokens as the model sees them and the tokens of olm's greedy `--draft off`
answer. src/engine/draft.rs's tests replay them through the drafter to judge
its policy without a model and without the machine's noise.

Usage: bench/draft_streams.py OLM_BINARY  (needs bench/build-llama-tools.sh's
llama-server to tokenize, and the test models from scripts/fetch-test-models.sh)
"""
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import compare  # noqa: E402

MODELS = {"gemma-3-270m": "gemma-3-270m-q4_k_m.gguf", "SmolLM2-135M": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def tokenize(port: int, text: str, special: bool) -> list:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/tokenize", json.dumps({"content": text, "parse_special": special}))
    return json.loads(connection.getresponse().read())["tokens"]


def main() -> None:
    olm = Path(sys.argv[1])
    tools = Path(subprocess.run(["bench/build-llama-tools.sh"], capture_output=True, text=True,
                                check=True).stdout.strip())
    models = Path(os.environ.get("OLM_TEST_MODELS", Path.home() / ".cache/olm/test-models"))
    cases = [("serve", compare.SERVE_PROMPT, "", True, compare.SERVE_TOKENS)]
    prompts = list(compare.DRAFT_PROMPTS.items()) + [("open", (compare.OPEN_PROMPT, "")),
                                                     ("count", (compare.COUNT_PROMPT, ""))]
    cases += [(name, prompt, stdin, False, compare.DRAFT_TOKENS) for name, (prompt, stdin) in prompts]
    streams = {}
    for label, file in MODELS.items():
        model = models / file
        port = compare.free_port()
        server = subprocess.Popen([str(tools / "llama-server"), "-m", str(model), "--host", "127.0.0.1",
                                   "--port", str(port), "-c", "4096", "-t", "2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            compare.wait_healthy(port, server)
            for name, prompt, stdin, raw, tokens in cases:
                argv = [str(olm), "run", str(model), prompt, "-n", str(tokens), "--temperature", "0",
                        "--json", "--no-cache", "--draft", "off"] + (["--raw"] if raw else [])
                answer = json.loads(subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                                   check=True).stdout)["text"]
                rendered = prompt if raw else compare.chat_prompt(olm, model, prompt, stdin)
                streams[f"{label}: {name}"] = {"prompt": tokenize(port, rendered, True),
                                               "answer": tokenize(port, answer, False)}
        finally:
            server.terminate()
            server.wait()
    out = Path(__file__).parent.parent / "tests/data/draft-streams.json"
    with out.open("w") as file:
        file.write("{\n")
        for index, (key, stream) in enumerate(streams.items()):
            comma = "," if index < len(streams) - 1 else ""
            file.write(f'  {json.dumps(key)}: {{\n'
                       f'    "prompt": {json.dumps(stream["prompt"], separators=(",", ""))},\n'
                       f'    "answer": {json.dumps(stream["answer"], separators=(",", ""))}\n'
                       f'  }}{comma}\n')
        file.write("}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
