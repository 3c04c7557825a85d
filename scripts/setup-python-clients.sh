#!/usr/bin/env bash
# Install the Python clients the tests drive into a virtual environment
# under ~/.cache/olm: openai, ollama and pytest for the serve tests; what
# tests/python/test_agents.py drives (langchain-openai, langchain-ollama,
# litellm, anthropic); the modelscope client, whose downloads from the fake
# ModelScope hub keep that fake true to the real protocol.
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
# Pinned: tests/fakehub/fake_modelscope.py was written against these versions.
if ! "$python" -c 'import modelscope, modelscope_hub, sys; sys.exit(modelscope.__version__ != "1.40.2" or modelscope_hub.__version__ != "0.5.1")' >/dev/null 2>&1; then
  echo "installing the modelscope Python client into $venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check modelscope==1.40.2 modelscope-hub==0.5.1 >&2
fi
if ! "$python" -c 'import langchain_openai, langchain_ollama, litellm, anthropic' >/dev/null 2>&1; then
  echo "installing LangChain (openai, ollama), LiteLLM and the anthropic client into $venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check langchain-openai langchain-ollama litellm anthropic >&2
fi
echo "$python"
