//! Tool calling and reasoning through `olm serve` (issue 13), on copies of
//! the SmolLM2 test model whose GGUF carries a tool-aware template (Qwen 2.5
//! style), a DeepSeek-R1 style thinking template or a Qwen3 style switch.
//!
//! The model is tiny and picks tools badly, so the protocol is tested where
//! it is deterministic: `required` and named calls run under the grammar,
//! and `auto` calls are made after a few-shot history the model copies
//! (greedy decoding), whereupon the lazy grammar keeps them valid. The
//! real clients (openai, ollama, LangChain, LiteLLM) run in
//! `python_agent_clients`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::common::model_with_template;
use crate::common::server::{pytest, sse_events, Server, MODEL};

pub const HERMES_TEMPLATE: &str = include_str!("../templates/hermes-tools.jinja");
const THINKING_TEMPLATE: &str = include_str!("../templates/thinking-r1.jinja");
const SWITCH_TEMPLATE: &str = include_str!("../templates/thinking-switch.jinja");

/// The API name of the tool-aware copy (its file stem).
pub const TOOLS: &str = "tools";

/// `olm serve` with the test model, its tool-aware copy and the thinking copies.
fn server(directory: &Path) -> Server {
    let tools = model_with_template(directory, TOOLS, HERMES_TEMPLATE);
    let thinking = model_with_template(directory, "thinking", THINKING_TEMPLATE);
    let switch = model_with_template(directory, "switch", SWITCH_TEMPLATE);
    let paths: Vec<PathBuf> = vec![tools, thinking, switch];
    let args: Vec<&str> = paths
        .iter()
        .map(|path| path.to_str().expect("utf-8 path"))
        .chain(["-c", "1024", "--parallel", "2"])
        .collect();
    Server::start(&args)
}

fn weather() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}})
}

fn clock() -> Value {
    json!({"type": "function", "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone",
        "parameters": {"type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 40}},
            "required": ["zone"]}}})
}

/// A history after which the model, copying it, starts a call by itself.
fn few_shot(question: &str) -> Value {
    json!([
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call00001", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call00002", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "user", "content": question},
    ])
}

/// The call's arguments, checked against get_weather's schema by hand.
fn weather_arguments(arguments: &Value) -> Value {
    let arguments = match arguments {
        Value::String(text) => serde_json::from_str(text)
            .unwrap_or_else(|error| panic!("arguments are not JSON ({error}): {text}")),
        other => other.clone(),
    };
    let city = arguments["city"].as_str().expect("a city");
    assert!(
        !city.is_empty() && city.chars().count() <= 40,
        "{arguments}"
    );
    if let Some(unit) = arguments.get("unit") {
        assert!(unit == "celsius" || unit == "fahrenheit", "{arguments}");
    }
    assert!(
        arguments
            .as_object()
            .expect("an object")
            .keys()
            .all(|key| key == "city" || key == "unit"),
        "{arguments}"
    );
    arguments
}

fn chat(server: &Server, body: Value) -> Value {
    let reply = server.post("/v1/chat/completions", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// `required` and a named function: a valid call under the grammar, by
/// both a template with tools and one without (olm's fallback prompt).
#[test]
fn required_and_named_calls_match_their_schemas() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    for model in [TOOLS, MODEL] {
        let reply = chat(
            &server,
            json!({"model": model, "temperature": 0, "max_tokens": 80, "parallel_tool_calls": false,
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": [weather(), clock()], "tool_choice": "required"}),
        );
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{model}: {reply}");
        let calls = choice["message"]["tool_calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 1, "{reply}");
        let mut ids = std::collections::HashSet::new();
        for call in calls {
            assert_eq!(call["type"], "function");
            assert!(
                ids.insert(call["id"].as_str().expect("an id").to_owned()),
                "{reply}"
            );
            match call["function"]["name"].as_str() {
                Some("get_weather") => {
                    weather_arguments(&call["function"]["arguments"]);
                }
                Some("get_time") => {
                    let arguments: Value =
                        serde_json::from_str(call["function"]["arguments"].as_str().expect("text"))
                            .expect("JSON");
                    assert!(arguments["zone"].is_string(), "{reply}");
                }
                other => panic!("{model} called {other:?}: {reply}"),
            }
        }

        let reply = chat(
            &server,
            json!({"model": model, "temperature": 0, "max_tokens": 80, "parallel_tool_calls": false,
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": [weather(), clock()],
                "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
        );
        let calls = reply["choices"][0]["message"]["tool_calls"]
            .as_array()
            .expect("calls");
        assert_eq!(calls.len(), 1, "{reply}");
        assert_eq!(calls[0]["function"]["name"], "get_time", "{reply}");
        assert!(
            reply["choices"][0]["message"]["content"].is_null(),
            "{reply}"
        );
    }
}

/// Streaming: the call arrives as deltas (index, id, name, then the
/// arguments), the stream ends with finish_reason tool_calls and [DONE].
#[test]
fn streamed_calls_arrive_as_deltas() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    let reply = server.post(
        "/v1/chat/completions",
        &json!({"model": TOOLS, "temperature": 0, "max_tokens": 80, "stream": true,
            "stream_options": {"include_usage": true}, "parallel_tool_calls": false,
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let events = sse_events(&reply.body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        reply.body
    );
    let mut name = String::new();
    let mut id = String::new();
    let mut arguments = String::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).expect("a JSON chunk");
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0, "{event}");
            if let Some(text) = call["id"].as_str() {
                id.push_str(text);
            }
            if let Some(text) = call["function"]["name"].as_str() {
                name.push_str(text);
            }
            if let Some(text) = call["function"]["arguments"].as_str() {
                arguments.push_str(text);
            }
        }
    }
    assert_eq!(name, "get_weather", "{}", reply.body);
    assert!(!id.is_empty(), "{}", reply.body);
    weather_arguments(&Value::String(arguments));
    assert_eq!(finish, "tool_calls", "{}", reply.body);
    assert!(
        usage["completion_tokens"].as_u64() > Some(0),
        "{}",
        reply.body
    );
}

/// `auto`: the model starts a call by itself after the few-shot history,
/// on both APIs; on a plain question it answers in prose. Then the loop:
/// the call's result goes back and the model answers.
#[test]
fn auto_calls_and_the_full_loop() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    let reply = chat(
        &server,
        json!({"model": TOOLS, "temperature": 0, "max_tokens": 60,
            "messages": few_shot("Weather in Paris?"), "tools": [weather()]}),
    );
    let message = &reply["choices"][0]["message"];
    assert_eq!(
        reply["choices"][0]["finish_reason"], "tool_calls",
        "{reply}"
    );
    let call = &message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{reply}");
    assert_eq!(
        weather_arguments(&call["function"]["arguments"])["city"],
        "Paris"
    );

    let mut messages = few_shot("Weather in Paris?");
    let list = messages.as_array_mut().expect("a list");
    list.push(message.clone());
    list.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"sky\": \"clear\", \"celsius\": 18}"}));
    let answer = chat(
        &server,
        json!({"model": TOOLS, "temperature": 0, "max_tokens": 30, "messages": messages,
            "tools": [weather()], "tool_choice": "none"}),
    );
    let choice = &answer["choices"][0];
    assert!(choice["message"]["tool_calls"].is_null(), "{answer}");
    assert!(
        !choice["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{answer}"
    );
    assert!(
        choice["finish_reason"] == "stop" || choice["finish_reason"] == "length",
        "{answer}"
    );

    let prose = chat(
        &server,
        json!({"model": TOOLS, "temperature": 0, "max_tokens": 20,
            "messages": [{"role": "user", "content": "Say hello."}], "tools": [weather()]}),
    );
    assert!(
        prose["choices"][0]["message"]["tool_calls"].is_null(),
        "{prose}"
    );
    assert!(
        prose["choices"][0]["message"]["content"].is_string(),
        "{prose}"
    );

    // Ollama's API: no tool_choice, the calls in its own shape.
    let ollama_history: Vec<Value> = few_shot("Weather in Paris?")
        .as_array()
        .expect("a list")
        .iter()
        .map(|message| {
            let mut message = message.clone();
            if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    let arguments: Value = serde_json::from_str(
                        call["function"]["arguments"].as_str().expect("text"),
                    )
                    .expect("JSON");
                    *call = json!({"function": {"name": call["function"]["name"], "arguments": arguments}});
                }
            }
            message
        })
        .collect();
    let reply = server.post(
        "/api/chat",
        &json!({"model": TOOLS, "stream": false, "messages": ollama_history,
            "tools": [weather()], "options": {"temperature": 0, "num_predict": 60}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    let call = &reply["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{reply}");
    assert_eq!(
        weather_arguments(&call["function"]["arguments"])["city"],
        "Paris"
    );
    assert!(call["function"]["arguments"].is_object(), "{reply}");
    assert_eq!(reply["done"], true);

    let streamed = server.post(
        "/api/chat",
        &json!({"model": TOOLS, "messages": ollama_history, "tools": [weather()],
            "options": {"temperature": 0, "num_predict": 60}}),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let lines: Vec<Value> = streamed
        .body
        .lines()
        .map(|line| serde_json::from_str(line).expect("NDJSON"))
        .collect();
    let calls: Vec<&Value> = lines
        .iter()
        .filter_map(|line| line["message"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{}", streamed.body);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(lines.last().expect("a last line")["done"], true);
}

/// A DeepSeek-R1 style template opens a think block: the answer is
/// reasoning until `</think>`, in `reasoning_content` and Ollama's
/// `thinking`, never in `content`; turning thinking off closes the block
/// in the prompt. A model without reasoning refuses `think`.
#[test]
fn reasoning_is_apart_from_content() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    let reply = chat(
        &server,
        json!({"model": "thinking", "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
    );
    let message = &reply["choices"][0]["message"];
    let reasoning = message["reasoning_content"].as_str().unwrap_or_default();
    assert!(!reasoning.is_empty(), "{reply}");
    assert!(
        !message["content"]
            .as_str()
            .unwrap_or_default()
            .contains(reasoning),
        "{reply}"
    );

    let streamed = server.post(
        "/v1/chat/completions",
        &json!({"model": "thinking", "temperature": 0, "max_tokens": 24, "stream": true,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
    );
    let mut streamed_reasoning = String::new();
    for event in sse_events(&streamed.body)
        .iter()
        .filter(|event| *event != "[DONE]")
    {
        let chunk: Value = serde_json::from_str(event).expect("JSON");
        if let Some(text) = chunk["choices"][0]["delta"]["reasoning_content"].as_str() {
            streamed_reasoning.push_str(text);
        }
    }
    assert_eq!(streamed_reasoning, reasoning, "{}", streamed.body);

    let ollama = server.post(
        "/api/chat",
        &json!({"model": "thinking", "stream": false, "think": true,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "options": {"temperature": 0, "num_predict": 24}}),
    );
    assert_eq!(ollama.status, 200, "{}", ollama.body);
    assert_eq!(
        ollama.json()["message"]["thinking"],
        reasoning,
        "{}",
        ollama.body
    );

    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "thinking", "temperature": 0, "max_tokens": 24, "reasoning_effort": "none",
                "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
        ),
        (
            "/api/chat",
            json!({"model": "switch", "stream": false, "think": false,
                "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                "options": {"temperature": 0, "num_predict": 24}}),
        ),
    ] {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let reply = reply.json();
        let message = reply["choices"][0]["message"].clone();
        let message = if message.is_null() {
            reply["message"].clone()
        } else {
            message
        };
        assert!(
            message.get("reasoning_content").is_none() && message.get("thinking").is_none(),
            "{reply}"
        );
        assert!(
            !message["content"].as_str().unwrap_or_default().is_empty(),
            "{reply}"
        );
    }

    for (path, body) in [
        (
            "/api/chat",
            json!({"model": MODEL, "think": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "reasoning_effort": "high", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert!(
            reply.body.contains("does not support thinking"),
            "{}",
            reply.body
        );
    }
}

/// Fields a client sends that olm cannot honour are refused out loud, in
/// each API's error shape, before any generation.
#[test]
fn what_cannot_be_honoured_is_refused() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    let user = json!([{"role": "user", "content": "hi"}]);
    for (path, body, says) in [
        (
            "/v1/chat/completions",
            json!({"model": TOOLS, "messages": user, "logprobs": true}),
            "logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"model": TOOLS, "messages": user, "functions": []}),
            "'functions'",
        ),
        (
            "/v1/chat/completions",
            json!({"model": TOOLS, "messages": [{"role": "user",
            "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]}]}),
            "vision",
        ),
        (
            "/v1/chat/completions",
            json!({"model": TOOLS, "messages": user, "tools": [weather()],
            "tool_choice": {"type": "function", "function": {"name": "launch"}}}),
            "not among the tools",
        ),
        (
            "/v1/chat/completions",
            json!({"model": TOOLS, "messages": user, "tools": [weather()],
            "response_format": {"type": "json_object"}}),
            "cannot be combined",
        ),
        (
            "/v1/completions",
            json!({"model": TOOLS, "prompt": "hi", "suffix": "end"}),
            "suffix",
        ),
        (
            "/api/chat",
            json!({"model": TOOLS, "messages": [{"role": "user", "content": "what is this?", "images": ["aGk="]}]}),
            "vision",
        ),
        (
            "/api/generate",
            json!({"model": TOOLS, "prompt": "hi", "options": {"mirostat": 2}}),
            "mirostat",
        ),
        (
            "/api/generate",
            json!({"model": TOOLS, "prompt": "hi", "options": {"num_ctx": 100000}}),
            "num_ctx",
        ),
        (
            "/api/chat",
            json!({"model": TOOLS, "messages": user, "truncate": true}),
            "'truncate'",
        ),
    ] {
        let reply = server.post(path, &body);
        assert_eq!(reply.status, 400, "{path} {body}: {}", reply.body);
        assert!(reply.body.contains(says), "{path} {body}: {}", reply.body);
        let error = &reply.json()["error"];
        if path.starts_with("/api/") {
            assert!(error.is_string(), "{}", reply.body);
        } else {
            assert!(error["message"].is_string(), "{}", reply.body);
        }
    }
}

/// The real clients: openai and ollama `tools=`, LangChain's `bind_tools`
/// and `with_structured_output`, LiteLLM's openai and ollama providers,
/// the anthropic client on /v1/messages and openai's on /v1/responses.
#[test]
fn python_agent_clients() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    let report = pytest(
        server.port,
        Some("agents"),
        &[
            ("OLM_MODEL", MODEL),
            ("OLM_TOOL_MODEL", TOOLS),
            ("OLM_THINKING_MODEL", "thinking"),
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ],
    );
    // Every client test ran: none was skipped for want of a package.
    assert!(report.contains("14 passed"), "{report}");
    assert!(!report.contains("skipped"), "{report}");
}

/// A tools file in the shape both APIs take.
fn tools_file(directory: &Path) -> PathBuf {
    let path = directory.join("tools.json");
    std::fs::write(&path, json!([weather(), clock()]).to_string()).expect("write tools");
    path
}

/// `olm run --tools --tool-choice NAME`: the call on stdout as one JSON
/// line, its arguments matching the schema; `--json` carries it too.
#[test]
fn run_prints_calls_as_json_lines() {
    use crate::common::{assert_exit, run, smollm2, stdout, TestEnv};
    let env = TestEnv::new();
    let directory = tempfile::tempdir().expect("temp dir");
    let tools = tools_file(directory.path());
    let model = model_with_template(directory.path(), TOOLS, HERMES_TEMPLATE);
    for model in [model, smollm2()] {
        let output = run(env
            .olm()
            .args(["run"])
            .arg(&model)
            .arg("--tools")
            .arg(&tools)
            .args([
                "--tool-choice",
                "get_weather",
                "--temperature",
                "0",
                "-n",
                "80",
                "What is the weather in Paris?",
            ]));
        assert_exit(&output, 0);
        let text = stdout(&output);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let call: Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(call["name"], "get_weather", "{text}");
        assert_eq!(call["id"].as_str().map(str::len), Some(9), "{text}");
        weather_arguments(&call["arguments"]);

        let output = run(env
            .olm()
            .args(["run"])
            .arg(&model)
            .arg("--tools")
            .arg(&tools)
            .args([
                "--tool-choice",
                "get_time",
                "--temperature",
                "0",
                "-n",
                "80",
                "--json",
                "What time is it in Tokyo?",
            ]));
        assert_exit(&output, 0);
        let report: Value = serde_json::from_str(&stdout(&output)).expect("one JSON object");
        assert_eq!(
            report["tool_calls"][0]["function"]["name"], "get_time",
            "{report}"
        );
        assert!(
            report["tool_calls"][0]["function"]["arguments"]["zone"].is_string(),
            "{report}"
        );
    }
}

/// Bad tool files and conflicting flags: exit 2 with one error line,
/// before the model loads.
#[test]
fn run_refuses_bad_tools() {
    use crate::common::{assert_exit, run, smollm2, stderr, TestEnv};
    let env = TestEnv::new();
    let directory = tempfile::tempdir().expect("temp dir");
    let tools = tools_file(directory.path());
    let not_json = directory.path().join("not-json.json");
    std::fs::write(&not_json, "[{").expect("write");
    let bad_name = directory.path().join("bad-name.json");
    std::fs::write(
        &bad_name,
        json!([{"type": "function", "function": {"name": "rm -rf", "parameters": {}}}]).to_string(),
    )
    .expect("write");
    let tools = tools.to_str().expect("utf-8");
    for (args, says) in [
        (
            vec!["--tools", tools, "--tool-choice", "launch"],
            "names no tool",
        ),
        (
            vec!["--tools", not_json.to_str().expect("utf-8")],
            "not JSON",
        ),
        (
            vec!["--tools", bad_name.to_str().expect("utf-8")],
            "tool names",
        ),
        (vec!["--tools", tools, "--raw"], "--raw"),
        (vec!["--tools", tools, "--format", "json"], "--format"),
        (vec!["--tools", "/no/such/file.json"], "cannot read"),
        (vec!["--tool-choice", "required"], "--tools"),
    ] {
        let output = run(env.olm().args(["run"]).arg(smollm2()).args(&args).arg("hi"));
        assert_exit(&output, 2);
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

/// `olm run` on a model that reasons: the reasoning goes to stderr (not
/// stdout, so pipes get only the answer), `--hide-thinking` drops it,
/// `--json` carries it as "thinking".
#[test]
fn run_keeps_thinking_off_stdout() {
    use crate::common::{assert_exit, run, stderr, stdout, TestEnv};
    let env = TestEnv::new();
    let directory = tempfile::tempdir().expect("temp dir");
    let model = model_with_template(directory.path(), "thinking", THINKING_TEMPLATE);
    let ask = |extra: &[&str]| {
        run(env
            .olm()
            .args(["run"])
            .arg(&model)
            .args(["--temperature", "0", "-n", "16"])
            .args(extra)
            .arg("Why is the sky blue?"))
    };
    let shown = ask(&[]);
    assert_exit(&shown, 0);
    let json = ask(&["--json"]);
    assert_exit(&json, 0);
    let report: Value = serde_json::from_str(&stdout(&json)).expect("one JSON object");
    let thinking = report["thinking"].as_str().expect("thinking").to_owned();
    assert!(!thinking.is_empty(), "{report}");
    assert!(
        !stdout(&shown).contains(thinking.trim()),
        "{}",
        stdout(&shown)
    );
    assert!(
        stderr(&shown).contains(thinking.trim()),
        "{}",
        stderr(&shown)
    );
    let hidden = ask(&["--hide-thinking"]);
    assert_exit(&hidden, 0);
    assert!(
        !stderr(&hidden).contains(thinking.trim()),
        "{}",
        stderr(&hidden)
    );
    assert!(
        !stdout(&hidden).contains(thinking.trim()),
        "{}",
        stdout(&hidden)
    );
}

/// `n`: several choices of one prompt, decoded together; each has its own
/// index, the usage counts the prompt once and every answer.
#[test]
fn several_choices() {
    let server = Server::start(&["--parallel", "3"]);
    let reply = chat(
        &server,
        json!({"model": MODEL, "n": 3, "max_tokens": 6, "seed": 7,
            "messages": [{"role": "user", "content": "Name a fruit."}]}),
    );
    let choices = reply["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3, "{reply}");
    let indices: Vec<u64> = choices.iter().filter_map(|c| c["index"].as_u64()).collect();
    assert_eq!(indices, [0, 1, 2], "{reply}");
    let completion: u64 = reply["usage"]["completion_tokens"].as_u64().expect("usage");
    assert!(completion >= 3, "{reply}");

    let streamed = server.post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "The sky is", "n": 2, "max_tokens": 4, "stream": true, "echo": true}),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let mut texts = [String::new(), String::new()];
    let mut finished = [false, false];
    for event in sse_events(&streamed.body)
        .iter()
        .filter(|event| *event != "[DONE]")
    {
        let chunk: Value = serde_json::from_str(event).expect("JSON");
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().expect("index") as usize;
            texts[index].push_str(choice["text"].as_str().unwrap_or_default());
            finished[index] |= !choice["finish_reason"].is_null();
        }
    }
    assert_eq!(finished, [true, true], "{}", streamed.body);
    for text in &texts {
        assert!(
            text.starts_with("The sky is") && text.len() > "The sky is".len(),
            "{texts:?}"
        );
    }
    assert!(
        streamed.body.ends_with("data: [DONE]\n\n"),
        "{}",
        streamed.body
    );
}

/// Anthropic's Messages API: a required tool use under the grammar, the
/// loop with a tool result, thinking blocks, and the named event stream.
#[test]
fn anthropic_messages() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    let tool = json!({"name": "get_weather", "description": "Get the current weather in a city",
        "input_schema": weather()["function"]["parameters"].clone()});
    let reply = server.post(
        "/v1/messages",
        &json!({"model": TOOLS, "max_tokens": 80, "temperature": 0,
            "system": [{"type": "text", "text": "Use the tools.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [tool], "tool_choice": {"type": "any", "disable_parallel_tool_use": true}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["stop_reason"], "tool_use", "{reply}");
    let used: Vec<&Value> = reply["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter(|block| block["type"] == "tool_use")
        .collect();
    assert_eq!(used.len(), 1, "{reply}");
    assert!(
        used[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_")),
        "{reply}"
    );
    weather_arguments(&used[0]["input"]);

    let answer = server.post(
        "/v1/messages",
        &json!({"model": TOOLS, "max_tokens": 20, "temperature": 0,
            "messages": [
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": [used[0].clone()]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": used[0]["id"], "content": "18 C, clear"}]},
            ],
            "tools": [tool], "tool_choice": {"type": "none"}}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(answer["content"][0]["type"], "text", "{answer}");
    assert!(
        answer["usage"]["input_tokens"].as_u64() > Some(0),
        "{answer}"
    );

    let streamed = server.post(
        "/v1/messages",
        &json!({"model": "thinking", "max_tokens": 16, "temperature": 0, "stream": true,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]}),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let names: Vec<&str> = streamed
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"), "{}", streamed.body);
    assert_eq!(names.last(), Some(&"message_stop"), "{}", streamed.body);
    assert!(
        streamed.body.contains("\"thinking_delta\""),
        "{}",
        streamed.body
    );
    assert!(
        streamed.body.contains("\"stop_reason\":\"max_tokens\""),
        "{}",
        streamed.body
    );

    let refused = server.post(
        "/v1/messages",
        &json!({"model": TOOLS, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "mcp_servers": []}),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(
        refused.json()["error"]["type"],
        "invalid_request_error",
        "{}",
        refused.body
    );
}

/// OpenAI's Responses API: a required function call, the loop with its
/// output, reasoning items, and the named event stream.
#[test]
fn openai_responses() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = server(directory.path());
    let tool = json!({"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": weather()["function"]["parameters"].clone()});
    let reply = server.post(
        "/v1/responses",
        &json!({"model": TOOLS, "max_output_tokens": 80, "temperature": 0, "store": false,
            "input": "What is the weather in Paris?", "tools": [tool], "tool_choice": "required",
            "parallel_tool_calls": false}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    assert_eq!(
        (reply["object"].as_str(), reply["status"].as_str()),
        (Some("response"), Some("completed")),
        "{reply}"
    );
    let calls: Vec<&Value> = reply["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter(|item| item["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 1, "{reply}");
    weather_arguments(&calls[0]["arguments"]);

    let answer = server.post(
        "/v1/responses",
        &json!({"model": TOOLS, "max_output_tokens": 20, "temperature": 0,
            "input": [
                {"role": "user", "content": "What is the weather in Paris?"},
                calls[0].clone(),
                {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "18 C, clear"},
            ],
            "tools": [tool], "tool_choice": "none"}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(answer["output"][0]["type"], "message", "{answer}");
    assert_eq!(
        answer["output"][0]["content"][0]["type"], "output_text",
        "{answer}"
    );

    let streamed = server.post(
        "/v1/responses",
        &json!({"model": "thinking", "max_output_tokens": 16, "temperature": 0, "stream": true,
            "input": "Why is the sky blue?"}),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let names: Vec<&str> = streamed
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names.first(),
        Some(&"response.created"),
        "{}",
        streamed.body
    );
    assert_eq!(
        names.last(),
        Some(&"response.incomplete"),
        "{}",
        streamed.body
    );
    assert!(
        names.contains(&"response.reasoning_text.delta"),
        "{}",
        streamed.body
    );
    let sequence: Vec<u64> = sse_events(&streamed.body)
        .iter()
        .map(|event| {
            serde_json::from_str::<Value>(event).expect("JSON")["sequence_number"]
                .as_u64()
                .expect("a number")
        })
        .collect();
    assert_eq!(sequence, (0..sequence.len() as u64).collect::<Vec<_>>());

    for (body, says) in [
        (
            json!({"model": TOOLS, "input": "hi", "store": true}),
            "store",
        ),
        (
            json!({"model": TOOLS, "input": "hi", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
    ] {
        let refused = server.post("/v1/responses", &body);
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(refused.body.contains(says), "{}", refused.body);
    }
}
