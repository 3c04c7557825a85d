"""The real `openai` and `ollama` Python clients against a running `olm serve`.

Run by the Rust test `serve::python_openai_and_ollama_clients`, which starts the
server and sets OLM_BASE_URL and OLM_MODEL. The pull test needs a server whose
HF_ENDPOINT is the fake hub and OLM_PULL_MODEL naming a model there: the Rust
test `serve_store::python_ollama_client_pulls_and_deletes` runs it so.
"""

import json
import os

import ollama
import openai
import pytest

BASE_URL = os.environ["OLM_BASE_URL"]
MODEL = os.environ["OLM_MODEL"]
PULL_MODEL = os.environ.get("OLM_PULL_MODEL")


def openai_client():
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", max_retries=0, timeout=120)


def ollama_client():
    return ollama.Client(host=BASE_URL, timeout=120)


def test_openai_models_lists_the_model():
    ids = [model.id for model in openai_client().models.list()]
    assert MODEL in ids


def test_openai_chat_non_streaming():
    reply = openai_client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}],
        max_tokens=12,
        temperature=0,
    )
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_openai_chat_streaming_with_usage():
    stream = openai_client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text
    assert usage is not None and usage.completion_tokens > 0


def test_openai_completions():
    reply = openai_client().completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert reply.choices[0].text


def test_openai_json_schema_output_parses():
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    reply = openai_client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a city as JSON."}],
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    data = json.loads(reply.choices[0].message.content)
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


def test_openai_unknown_model_is_not_found():
    try:
        openai_client().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError as error:
        assert "not found" in str(error)
    else:
        raise AssertionError("expected a 404")


def test_ollama_chat_streaming_and_not():
    client = ollama_client()
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], stream=True, options={"num_predict": 8}))
    assert parts[-1].done
    assert "".join(part.message.content for part in parts)
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], options={"num_predict": 8, "temperature": 0})
    assert reply.message.content and reply.eval_count > 0


def test_ollama_generate():
    reply = ollama_client().generate(model=MODEL, prompt="Say hi.", options={"num_predict": 8})
    assert reply.response and reply.done


def test_ollama_list_and_show():
    client = ollama_client()
    names = [model.model for model in client.list().models]
    assert MODEL in names
    shown = client.show(MODEL)
    assert shown.details.family == "llama"
    assert shown.details.quantization_level == "Q4_1"


def test_ollama_unknown_model_raises():
    try:
        ollama_client().chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}], stream=False)
    except ollama.ResponseError as error:
        assert error.status_code == 404
    else:
        raise AssertionError("expected a 404")


def test_ollama_pull_generate_and_delete():
    if not PULL_MODEL:
        pytest.skip("needs OLM_PULL_MODEL and a server on the fake hub (serve_store::python_ollama_client_pulls_and_deletes)")
    client = ollama_client()
    parts = list(client.pull(PULL_MODEL, stream=True))
    assert parts[0].status == "pulling manifest"
    assert [part.status for part in parts[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [part for part in parts if part.digest]
    assert progress and progress[-1].digest.startswith("sha256:")
    assert progress[-1].completed == progress[-1].total > 0
    assert PULL_MODEL in [model.model for model in client.list().models]
    reply = client.generate(model=PULL_MODEL, prompt="Say hi.", options={"num_predict": 8})
    assert reply.done and reply.response
    # Not streamed, and already there: one object saying success.
    assert client.pull(PULL_MODEL).status == "success"
    assert client.delete(PULL_MODEL).status == "success"
    assert PULL_MODEL not in [model.model for model in client.list().models]
    with pytest.raises(ollama.ResponseError) as error:
        client.delete(PULL_MODEL)
    assert error.value.status_code == 404


def test_openai_embeddings_default_base64_and_float():
    # The openai client asks for base64 unless told otherwise, and decodes it.
    client = openai_client()
    texts = ["The cat sat on the mat.", "Stock markets fell today."]
    encoded = client.embeddings.create(model=MODEL, input=texts)
    floats = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [item.index for item in encoded.data] == [0, 1]
    assert len(encoded.data[0].embedding) == len(floats.data[0].embedding) > 0
    for a, b in zip(encoded.data[0].embedding, floats.data[0].embedding):
        assert abs(a - b) < 1e-6
    norm = sum(value * value for value in floats.data[1].embedding) ** 0.5
    assert abs(norm - 1.0) < 1e-3
    assert encoded.usage.prompt_tokens > 0


def test_ollama_embed():
    reply = ollama_client().embed(model=MODEL, input=["first text", "second text"])
    assert len(reply["embeddings"]) == 2
    assert len(reply["embeddings"][0]) > 0
    assert reply["embeddings"][0] != reply["embeddings"][1]
