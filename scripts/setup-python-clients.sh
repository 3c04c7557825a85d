#!/usr/bin/env bash
# Install the Python clients the serve tests drive (openai, ollama, pytest,
# and what tests/python/test_agents.py drives: langchain-openai,
# langchain-ollama, litellm, anthropic) into a virtual environment under
# ~/.cache/olm.
# Idempotent and quick when they are already there; prints the
# environment's python on stdout.
set -euo pipefail

venv="${XDG_CACHE_HOME:-$HOME/.cache}/olm/python-venv"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$python" -c 'import openai, ollama, pytest' >/dev/null 2>&1; then
  echo "installing the openai and ollama Python clients into $venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check openai ollama pytest >&2
fi
if ! "$python" -c 'import langchain_openai, langchain_ollama, litellm, anthropic' >/dev/null 2>&1; then
  echo "installing LangChain (openai, ollama), LiteLLM and the anthropic client into $venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check langchain-openai langchain-ollama litellm anthropic >&2
fi
echo "$python"
