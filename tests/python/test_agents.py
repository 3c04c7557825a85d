"""Tool calling and reasoning through the clients agent builders use: the
`openai` and `ollama` packages, LangChain (langchain-openai, langchain-ollama)
and LiteLLM (its openai and ollama providers), against `olm serve`.

Run by the Rust test `agents::python_agent_clients`, which starts the server
with OLM_TOOL_MODEL (a copy of the test model whose GGUF template is Qwen 2.5
style, with tools) and OLM_THINKING_MODEL (a DeepSeek-R1 style template). The
model is tiny: calls are asked for with tool_choice required or a named tool
(the grammar makes them valid), or made by the model itself after a few-shot
history it copies (greedy decoding), with the lazy grammar keeping them valid.
"""

import json
import os

import pytest

BASE_URL = os.environ["OLM_BASE_URL"]
TOOL_MODEL = os.environ.get("OLM_TOOL_MODEL")
THINKING_MODEL = os.environ.get("OLM_THINKING_MODEL")

pytestmark = pytest.mark.skipif(
    not TOOL_MODEL, reason="needs OLM_TOOL_MODEL: run by agents::python_agent_clients"
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}

CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 40}},
            "required": ["zone"],
        },
    },
}


def few_shot(question, tool="get_weather", key="city"):
    """A history after which the model starts a call of `tool` by itself."""
    def call(number, value):
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": f"call0000{number}",
                    "type": "function",
                    "function": {"name": tool, "arguments": json.dumps({key: value})},
                }
            ],
        }

    return [
        {"role": "user", "content": "Weather in Rome?"},
        call(1, "Rome"),
        {"role": "user", "content": "Weather in Oslo?"},
        call(2, "Oslo"),
        {"role": "user", "content": question},
    ]


def ollama_few_shot(question):
    messages = []
    for message in few_shot(question):
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {"function": {"name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])}}
                for call in message["tool_calls"]
            ]
        messages.append(message)
    return messages


def check_weather(arguments):
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    assert isinstance(arguments["city"], str) and 0 < len(arguments["city"]) <= 40, arguments
    assert set(arguments) == {"city"}, arguments
    return arguments


def openai_client():
    import openai

    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", max_retries=0, timeout=300)


def ollama_client():
    import ollama

    return ollama.Client(host=BASE_URL, timeout=300)


# --- openai ---------------------------------------------------------------


def test_agents_openai_required_call():
    reply = openai_client().chat.completions.create(
        model=TOOL_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id
        assert call.function.name == "get_weather"
        check_weather(call.function.arguments)


def test_agents_openai_named_call():
    reply = openai_client().chat.completions.create(
        model=TOOL_MODEL,
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    calls = reply.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_time"
    assert isinstance(json.loads(calls[0].function.arguments)["zone"], str)


def test_agents_openai_streamed_call():
    stream = openai_client().chat.completions.create(
        model=TOOL_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    calls, finish = {}, None
    for chunk in stream:
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            if delta.function:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    check_weather(calls[0]["arguments"])


def test_agents_openai_auto_then_the_full_loop():
    client = openai_client()
    messages = few_shot("Weather in Paris?")
    reply = client.chat.completions.create(
        model=TOOL_MODEL, messages=messages, tools=[WEATHER], temperature=0, max_tokens=60
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    assert check_weather(call.function.arguments)["city"] == "Paris"
    messages.append(message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "celsius": 18}'})
    answer = client.chat.completions.create(
        model=TOOL_MODEL, messages=messages, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=30
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_agents_openai_reasoning_content():
    reply = openai_client().chat.completions.create(
        model=THINKING_MODEL,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        temperature=0,
        max_tokens=24,
    )
    message = reply.choices[0].message
    reasoning = message.model_extra.get("reasoning_content")
    assert reasoning
    assert reasoning not in (message.content or "")


# --- ollama ---------------------------------------------------------------


def test_agents_ollama_tools():
    reply = ollama_client().chat(
        model=TOOL_MODEL,
        messages=ollama_few_shot("Weather in Paris?"),
        tools=[WEATHER],
        options={"temperature": 0, "num_predict": 60},
    )
    call = reply.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert check_weather(dict(call.function.arguments))["city"] == "Paris"
    assert reply.done


def test_agents_ollama_tools_streamed_with_a_python_function():
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
          city: the city
        """
        return "sunny"

    calls = []
    for part in ollama_client().chat(
        model=TOOL_MODEL,
        messages=ollama_few_shot("Weather in Paris?"),
        tools=[get_weather],
        options={"temperature": 0, "num_predict": 60},
        stream=True,
    ):
        calls.extend(part.message.tool_calls or [])
    assert [call.function.name for call in calls] == ["get_weather"]
    assert calls[0].function.arguments["city"] == "Paris"


def test_agents_ollama_thinking():
    reply = ollama_client().chat(
        model=THINKING_MODEL,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        think=True,
        options={"temperature": 0, "num_predict": 24},
    )
    assert reply.message.thinking
    assert reply.message.thinking not in (reply.message.content or "")


# --- LangChain ------------------------------------------------------------


def langchain_weather_tool():
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return "sunny"

    return get_weather


def test_agents_langchain_openai_bind_tools_and_structured_output():
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    llm = ChatOpenAI(
        base_url=f"{BASE_URL}/v1", api_key="unused", model=TOOL_MODEL, temperature=0, max_tokens=60, max_retries=0
    )
    bound = llm.bind_tools([langchain_weather_tool()], tool_choice="get_weather", parallel_tool_calls=False)
    message = bound.invoke("What is the weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    check_weather(message.tool_calls[0]["args"])
    assert message.tool_calls[0]["id"]

    class Weather(BaseModel):
        """The weather in a city."""

        city: str = Field(description="the city", max_length=40)
        celsius: int = Field(description="the temperature")

    structured = llm.with_structured_output(Weather, method="function_calling")
    weather = structured.invoke("It is 21 degrees in Paris. Report it.")
    assert isinstance(weather, Weather)
    assert isinstance(weather.celsius, int) and weather.city


def test_agents_langchain_ollama_bind_tools_and_structured_output():
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_ollama import ChatOllama
    from pydantic import BaseModel, Field

    llm = ChatOllama(base_url=BASE_URL, model=TOOL_MODEL, temperature=0, num_predict=60)
    history = []
    for message in ollama_few_shot("Weather in Paris?"):
        if message["role"] == "user":
            history.append(HumanMessage(message["content"]))
        else:
            history.append(
                AIMessage(
                    "",
                    tool_calls=[
                        {"name": call["function"]["name"], "args": call["function"]["arguments"], "id": f"call{index}"}
                        for index, call in enumerate(message["tool_calls"])
                    ],
                )
            )
    message = llm.bind_tools([langchain_weather_tool()]).invoke(history)
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    assert check_weather(message.tool_calls[0]["args"])["city"] == "Paris"

    class Weather(BaseModel):
        """The weather in a city."""

        city: str = Field(description="the city", max_length=40)
        celsius: int = Field(description="the temperature")

    weather = llm.with_structured_output(Weather).invoke("It is 21 degrees in Paris. Report it as JSON.")
    assert isinstance(weather, Weather) and isinstance(weather.celsius, int)


# --- LiteLLM --------------------------------------------------------------


def test_agents_litellm_openai_provider():
    import litellm

    reply = litellm.completion(
        model=f"openai/{TOOL_MODEL}",
        api_base=f"{BASE_URL}/v1",
        api_key="unused",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    check_weather(call.function.arguments)
    assert reply.choices[0].finish_reason == "tool_calls"


def test_agents_litellm_ollama_provider():
    import litellm

    reply = litellm.completion(
        model=f"ollama_chat/{TOOL_MODEL}",
        api_base=BASE_URL,
        messages=few_shot("Weather in Paris?"),
        tools=[WEATHER],
        temperature=0,
        max_tokens=60,
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert check_weather(call.function.arguments)["city"] == "Paris"


# --- Anthropic Messages and OpenAI Responses ------------------------------


def anthropic_weather_tool():
    return {
        "name": "get_weather",
        "description": WEATHER["function"]["description"],
        "input_schema": WEATHER["function"]["parameters"],
    }


def test_agents_anthropic_messages():
    import anthropic

    client = anthropic.Anthropic(base_url=BASE_URL, api_key="unused", max_retries=0, timeout=300)
    question = {"role": "user", "content": "What is the weather in Paris?"}
    reply = client.messages.create(
        model=TOOL_MODEL,
        max_tokens=60,
        # This client has no temperature argument; the API has the field.
        extra_body={"temperature": 0},
        messages=[question],
        tools=[anthropic_weather_tool()],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert reply.stop_reason == "tool_use"
    uses = [block for block in reply.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    check_weather(uses[0].input)
    final = client.messages.create(
        model=TOOL_MODEL,
        max_tokens=20,
        # This client has no temperature argument; the API has the field.
        extra_body={"temperature": 0},
        messages=[
            question,
            {"role": "assistant", "content": reply.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C, clear"}]},
        ],
        tools=[anthropic_weather_tool()],
        tool_choice={"type": "none"},
    )
    assert final.content[0].type == "text" and final.content[0].text
    with client.messages.stream(
        model=THINKING_MODEL,
        max_tokens=16,
        # This client has no temperature argument; the API has the field.
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
    ) as stream:
        message = stream.get_final_message()
    thinking = [block for block in message.content if block.type == "thinking"]
    assert thinking and thinking[0].thinking
    assert message.stop_reason == "max_tokens"


def test_agents_openai_responses():
    client = openai_client()
    tool = {"type": "function", **WEATHER["function"]}
    reply = client.responses.create(
        model=TOOL_MODEL,
        input="What is the weather in Paris?",
        tools=[tool],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=60,
        store=False,
    )
    calls = [item for item in reply.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    check_weather(calls[0].arguments)
    final = client.responses.create(
        model=TOOL_MODEL,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            calls[0].model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C, clear"},
        ],
        tools=[tool],
        tool_choice="none",
        temperature=0,
        max_output_tokens=20,
        store=False,
    )
    assert final.output_text
    kinds, reasoning = [], ""
    for event in client.responses.create(
        model=THINKING_MODEL, input="Why is the sky blue?", max_output_tokens=16, temperature=0, store=False, stream=True
    ):
        kinds.append(event.type)
        if event.type == "response.reasoning_text.delta":
            reasoning += event.delta
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert reasoning
