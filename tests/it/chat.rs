//! `olm chat` driven through a real pseudo-terminal (tmux): turns, the KV
//! cache reuse between turns, multi-line input, slash commands, transcripts,
//! Ctrl-C and Ctrl-D, context trimming and the history file; and what
//! `run` and `show` write to a terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{gemma3, model_with_template, smollm2, TestEnv};

/// How long any one expected screen may take to appear (model load and a
/// short answer on one thread take a few seconds; CI runs tests in parallel).
const WAIT: Duration = Duration::from_secs(90);
const PROMPT: &str = ">>> ";

/// A tmux server of its own running one olm command; killed on drop, even when
/// the test fails.
struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Start `olm ARGS` in a 160x50 terminal. When olm ends, the pane prints
    /// `[olm exited CODE]` and stays open to be read.
    fn start(env: &TestEnv, args: &[&str]) -> Self {
        // A socket of its own: a server killed by the previous terminal's
        // drop may still be exiting, and a new one on its socket fails.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        let socket = env.path().join(format!("tmux-{number}.sock"));
        let mut words = vec![shell_quote(env!("CARGO_BIN_EXE_olm"))];
        words.extend(args.iter().map(|arg| shell_quote(arg)));
        let script = format!(
            "cd {} && {}; echo \"[olm exited $?]\"; sleep 600",
            shell_quote_path(env.path()),
            words.join(" ")
        );
        let mut command = Command::new("tmux");
        env.olm_env(&mut command)
            .env("TERM", "xterm-256color")
            .args([
                "-S",
                path_text(&socket),
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "olm",
                "-x",
                "160",
                "-y",
                "50",
                &script,
            ]);
        let output = tmux_output(&mut command);
        assert!(
            output.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let terminal = Self { socket };
        terminal.tmux(&["set-option", "-t", "olm", "history-limit", "100000"]);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = tmux_output(
            Command::new("tmux")
                .args(["-S", path_text(&self.socket)])
                .args(args),
        );
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Paste `text` (as a terminal does, bracketed) and press Enter: for
    /// text too long for one tmux command line.
    fn paste_line(&self, text: &str) -> String {
        let before = prompts(&self.screen());
        let file = self.socket.with_extension("paste");
        std::fs::write(&file, text).expect("write the paste buffer");
        self.tmux(&["load-buffer", path_text(&file)]);
        self.tmux(&["paste-buffer", "-p", "-t", "olm"]);
        self.send_key("Enter");
        self.wait_for_prompt(before + 1)
    }

    /// Type `text` and press Enter.
    fn send_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "olm", "-l", text]);
        self.send_key("Enter");
    }

    /// Press a key such as `C-c` or `C-d`.
    fn send_key(&self, key: &str) {
        self.tmux(&["send-keys", "-t", "olm", key]);
    }

    /// The whole pane, scrollback included, wrapped lines joined.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "olm", "-S", "-100000"])
    }

    /// Wait until `condition` holds for the screen; fail with the screen after [`WAIT`].
    #[track_caller]
    fn wait_until(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[track_caller]
    fn wait_for(&self, needle: &str) -> String {
        self.wait_until(&format!("{needle:?}"), |screen| screen.contains(needle))
    }

    /// Wait for the `count`th prompt (counting from the first, after start).
    #[track_caller]
    fn wait_for_prompt(&self, count: usize) -> String {
        self.wait_until(&format!("prompt number {count}"), |screen| {
            prompts(screen) >= count
        })
    }

    /// Send a line and wait for the prompt after it.
    #[track_caller]
    fn say(&self, text: &str) -> String {
        let before = prompts(&self.screen());
        self.send_line(text);
        self.wait_for_prompt(before + 1)
    }

    /// Wait for olm to end and return its exit code.
    #[track_caller]
    fn wait_for_exit(&self) -> i32 {
        let screen = self.wait_for("[olm exited ");
        let (_, rest) = screen.rsplit_once("[olm exited ").expect("exit line");
        let code = rest.split(']').next().unwrap_or_default();
        code.parse()
            .unwrap_or_else(|_| panic!("bad exit line in:\n{screen}"))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-S", path_text(&self.socket), "kill-server"])
            .output();
    }
}

fn tmux_output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| {
        panic!("cannot run tmux ({error}); install it (scripts/setup-build-deps.sh does)")
    })
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn shell_quote_path(path: &Path) -> String {
    shell_quote(path_text(path))
}

/// Prompts shown so far (lines that start with `>>> `).
fn prompts(screen: &str) -> usize {
    screen
        .lines()
        .filter(|line| line.starts_with(PROMPT))
        .count()
}

/// Counts from the last `/stats`.
#[derive(Debug)]
struct TurnStats {
    /// Prompt tokens of the last turn.
    prompt: usize,
    /// Of those, evaluated now (the rest came from the KV cache).
    evaluated: usize,
    /// Tokens in the KV cache after the answer.
    context_used: usize,
}

/// Parse the last `/stats`: `prompt: P tokens, E evaluated (C from cache) ...`
/// and `context: U of N tokens used`.
fn last_turn_stats(screen: &str) -> TurnStats {
    let numbers = |prefix: &str| -> Vec<usize> {
        let line = screen
            .lines()
            .rev()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{screen}"));
        line.split(|c: char| !c.is_ascii_digit())
            .filter(|part| !part.is_empty())
            .map(|part| part.parse().expect("digits"))
            .collect()
    };
    let prompt = numbers("prompt: ");
    let context = numbers("context: ");
    TurnStats {
        prompt: prompt[0],
        evaluated: prompt[1],
        context_used: context[0],
    }
}

fn chat(env: &TestEnv, extra: &[&str]) -> Terminal {
    let model = smollm2();
    let mut args = vec!["chat", path_text(&model), "--temperature", "0"];
    args.extend_from_slice(extra);
    let terminal = Terminal::start(env, &args);
    terminal.wait_for("/help for commands");
    terminal.wait_for_prompt(1);
    terminal
}

/// Issue 5: each turn evaluates only its new tokens; the KV cache keeps the rest.
#[test]
fn three_turns_evaluate_only_new_tokens() {
    let env = TestEnv::new();
    let terminal = chat(&env, &["-n", "24"]);

    terminal.say("What is the capital of France?");
    let screen = terminal.say("/stats");
    let mut previous = last_turn_stats(&screen);
    assert_eq!(
        previous.prompt, previous.evaluated,
        "turn 1 evaluates its whole prompt:\n{screen}"
    );

    for question in ["And of Italy?", "Which one is bigger?"] {
        terminal.say(question);
        let screen = terminal.say("/stats");
        let turn = last_turn_stats(&screen);
        // Everything the cache held after the last answer is reused...
        assert_eq!(
            turn.prompt - turn.evaluated,
            previous.context_used,
            "{question:?} re-evaluated part of the conversation:\n{screen}"
        );
        // ...so only the new message is evaluated, plus SmolLM2's template
        // (`<|im_end|>\n<|im_start|>user\n` before it, `<|im_end|>\n<|im_start|>assistant\n`
        // after it: 10 tokens) and the previous answer's last token when -n cut it.
        let message_tokens_at_most = 2 * question.split_whitespace().count();
        assert!(
            turn.evaluated <= message_tokens_at_most + 11,
            "{question:?} evaluated {} of {} prompt tokens:\n{screen}",
            turn.evaluated,
            turn.prompt
        );
        previous = turn;
    }
    assert_eq!(
        prompts(&terminal.screen()),
        7,
        "three answers and three /stats"
    );

    terminal.send_line("/bye");
    assert_eq!(terminal.wait_for_exit(), 0);
    let history = std::fs::read_to_string(env.path().join("olm-home").join("chat_history"))
        .expect("the history file is written in OLM_HOME");
    for entry in [
        "What is the capital of France?",
        "And of Italy?",
        "/stats",
        "/bye",
    ] {
        assert!(
            history.contains(entry),
            "history lacks {entry:?}:\n{history}"
        );
    }
}

#[test]
fn multi_line_input_commands_and_transcripts() {
    let env = TestEnv::new();
    let terminal = chat(&env, &["-n", "12"]);

    terminal.send_line("\"\"\"");
    terminal.wait_until("a continuation prompt", |screen| screen.contains("... "));
    terminal.send_line("Say hello");
    terminal.send_line("in one word.\"\"\"");
    terminal.wait_for_prompt(2);

    let screen = terminal.say("/set temperature 0.2");
    assert!(screen.contains("set temperature = 0.2"), "{screen}");
    let screen = terminal.say("/set top-p 7");
    assert!(screen.contains("top-p must be between 0 and 1"), "{screen}");
    let screen = terminal.say("/system You are terse.");
    assert!(screen.contains("system prompt set"), "{screen}");
    let screen = terminal.say("/show system");
    assert!(
        screen.lines().any(|line| line == "You are terse."),
        "{screen}"
    );
    let screen = terminal.say("/show params");
    assert!(screen.contains("temperature = 0.2, top-k = 40"), "{screen}");
    let screen = terminal.say("/frobnicate");
    assert!(
        screen.contains("unknown command /frobnicate; /help lists the commands"),
        "{screen}"
    );

    terminal.say("/save talk.md");
    let screen = terminal.say("/save talk.json");
    assert!(screen.contains("saved 3 messages to talk.json"), "{screen}");
    let markdown = std::fs::read_to_string(env.path().join("talk.md")).expect("talk.md");
    assert!(
        markdown.contains(
            "## System\n\nYou are terse.\n\n## User\n\nSay hello\nin one word.\n\n## Assistant\n\n"
        ),
        "{markdown}"
    );

    let screen = terminal.say("/clear");
    assert!(screen.contains("conversation cleared"), "{screen}");
    let screen = terminal.say("/show info");
    assert!(screen.contains("conversation: 0 messages"), "{screen}");
    let screen = terminal.say("/load talk.json");
    assert!(
        screen.contains("loaded 3 messages from talk.json"),
        "{screen}"
    );
    let screen = terminal.say("/show template");
    assert!(
        screen.contains("<|im_start|>user\nSay hello\nin one word.<|im_end|>"),
        "{screen}"
    );

    terminal.say("Thanks!");
    let screen = terminal.say("/stats");
    let turn = last_turn_stats(&screen);
    assert!(
        turn.evaluated > 20,
        "a loaded conversation is read in full once: {turn:?}\n{screen}"
    );

    // Lines typed (or pasted) faster than they are read all arrive.
    let before = prompts(&terminal.screen());
    terminal.tmux(&[
        "send-keys",
        "-t",
        "olm",
        "-l",
        "/set seed 7\r/set top-k 5\r/show params\r",
    ]);
    let screen = terminal.wait_for_prompt(before + 3);
    assert!(screen.contains("seed = 7, max-tokens"), "{screen}");
    assert!(screen.contains("top-k = 5"), "{screen}");

    terminal.send_key("C-d");
    assert_eq!(terminal.wait_for_exit(), 0);
}

#[test]
fn ctrl_c_stops_an_answer_and_the_next_turn_works() {
    let env = TestEnv::new();
    let terminal = chat(&env, &["-n", "2000"]);

    terminal.send_line("Write a long story about a dragon who learns to bake bread.");
    terminal.wait_until("the answer to start", |screen| {
        screen
            .split_once("bake bread.")
            .is_some_and(|(_, answer)| answer.trim().len() > 40)
    });
    terminal.send_key("C-c");
    let screen = terminal.wait_for_prompt(2);
    assert!(
        screen.contains("stopped; the partial answer stays in the conversation"),
        "{screen}"
    );
    let (_, after_question) = screen.split_once("bake bread.\n").expect("the question");
    let partial_start: String = after_question.chars().take(30).collect();
    let screen = terminal.say("/stats");
    assert!(screen.contains("stop: cancelled"), "{screen}");

    // The tiny model may ramble; the next turn only has to answer.
    terminal.say("/set max-tokens 48");
    let screen = terminal.say("Now say hi.");
    let (_, answer) = screen
        .rsplit_once("Now say hi.\n")
        .expect("the second question");
    assert!(
        !answer.trim_end_matches(PROMPT).trim().is_empty(),
        "the next turn answers:\n{screen}"
    );
    let screen = terminal.say("/show template");
    let (_, template) = screen
        .rsplit_once("as the model sees it:")
        .expect("/show template");
    assert!(
        template.contains(&format!("<|im_start|>assistant\n{partial_start}")),
        "the partial answer {partial_start:?} is in the conversation:\n{screen}"
    );

    terminal.send_key("C-c");
    terminal.wait_for("use /bye or Ctrl-D to quit");
    terminal.send_key("C-d");
    assert_eq!(terminal.wait_for_exit(), 0);
}

/// Issue 5: when the conversation outgrows the context, the oldest turns go
/// (the system prompt stays) and the user is told.
#[test]
fn a_long_conversation_drops_its_oldest_turns() {
    let env = TestEnv::new();
    let terminal = chat(
        &env,
        &[
            "-c",
            "256",
            "-n",
            "48",
            "--system",
            "You answer in English.",
        ],
    );
    let questions = [
        "Tell me about the moon.",
        "Tell me about the sun.",
        "Tell me about the sea.",
        "Tell me about mountains.",
        "Tell me about rivers.",
        "Tell me about forests.",
    ];
    for question in questions {
        let screen = terminal.say(question);
        if screen.contains("oldest turn(s)") {
            break;
        }
    }
    let screen = terminal.screen();
    assert!(
        screen.contains("the conversation outgrew the context of 256 tokens: dropped the"),
        "{screen}"
    );
    let screen = terminal.say("/show template");
    let (_, template) = screen
        .rsplit_once("the conversation as the model sees it:")
        .expect("/show template");
    assert!(
        template.contains("You answer in English."),
        "the system prompt stays:\n{screen}"
    );
    assert!(
        !template.contains("Tell me about the moon."),
        "the oldest turn is gone:\n{screen}"
    );
    terminal.send_line("/bye");
    assert_eq!(terminal.wait_for_exit(), 0);
}

/// design.md: `olm run MODEL` with no prompt on a terminal is `olm chat MODEL`.
#[test]
fn run_without_a_prompt_on_a_terminal_chats() {
    let env = TestEnv::new();
    let model = smollm2();
    let terminal = Terminal::start(
        &env,
        &["run", path_text(&model), "-n", "8", "--temperature", "0"],
    );
    terminal.wait_for("/help for commands");
    terminal.wait_for_prompt(1);
    terminal.say("Hi");
    terminal.send_key("C-d");
    assert_eq!(terminal.wait_for_exit(), 0);
}

/// A document can make a model copy escape sequences into its answer
/// (here gemma copies a window-title sequence from its prompt). On a
/// terminal they are shown, not obeyed; a pipe gets the answer byte for
/// byte. A model file's template printed by `show` is treated the same.
#[test]
fn escape_sequences_from_a_model_are_shown_not_obeyed() {
    let title = "\x1b]2;PWNED\x07";
    let shown = "\\u{1b}]2;PWNED\\u{7}";
    let env = TestEnv::new();
    let model = gemma3();
    let prompt = format!("a{title}\n").repeat(12);
    let args = [
        "run",
        path_text(&model),
        "--raw",
        "--temperature",
        "0",
        "-n",
        "30",
        &prompt,
    ];
    let piped = crate::common::run(env.olm().args(args));
    crate::common::assert_exit(&piped, 0);
    assert!(
        String::from_utf8_lossy(&piped.stdout).contains(title),
        "the model no longer copies the sequence, so this test proves nothing: {:?}",
        String::from_utf8_lossy(&piped.stdout)
    );

    let assert_shown_not_obeyed = |terminal: &Terminal| {
        assert_eq!(terminal.wait_for_exit(), 0);
        let screen = terminal.screen();
        assert!(screen.contains(shown), "sequence not shown:\n{screen}");
        let pane_title = terminal.tmux(&["display-message", "-p", "-t", "olm", "#{pane_title}"]);
        assert!(
            !pane_title.contains("PWNED"),
            "the terminal obeyed the sequence: title {pane_title:?}"
        );
    };
    assert_shown_not_obeyed(&Terminal::start(&env, &args));

    let template = format!("{title}{{% for m in messages %}}{{{{ m.content }}}}{{% endfor %}}");
    let model = model_with_template(env.path(), "title", &template);
    assert_shown_not_obeyed(&Terminal::start(
        &env,
        &["show", "--template", path_text(&model)],
    ));
}

/// Lines piped into `olm chat` by a script are answered but kept out of
/// the user's history file.
#[test]
fn piped_input_is_answered_and_not_written_to_the_history() {
    let env = TestEnv::new();
    let mut child = env
        .olm()
        .args(["chat"])
        .arg(smollm2())
        .args(["-n", "8", "--temperature", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn olm chat");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(b"Say hi\n/bye\n")
            .expect("write the conversation");
    }
    let output = child.wait_with_output().expect("olm chat ends");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).trim().is_empty(),
        "an answer: {output:?}"
    );
    assert!(
        !env.path().join("olm-home").join("chat_history").exists(),
        "piped lines went into the history file"
    );
}

/// T-G4: `/load` of a FIFO or a device is refused at once (it used to wait
/// for a writer forever), and a message too long for any context is refused
/// before it is rendered; the chat goes on after both.
#[test]
fn unbounded_loads_and_messages_are_refused_and_the_chat_goes_on() {
    let env = TestEnv::new();
    let fifo = env.path().join("talk.json");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo gets a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    let terminal = chat(&env, &["-n", "4", "-c", "256"]);

    let started = Instant::now();
    let screen = terminal.say("/load talk.json");
    assert!(screen.contains("not a regular file"), "{screen}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let screen = terminal.say("/load /dev/zero");
    assert!(screen.contains("not a regular file"), "{screen}");

    let screen = terminal.paste_line(&"word ".repeat(40_000));
    assert!(
        screen.contains("cannot fit a context of 256 tokens"),
        "{screen}"
    );

    let screen = terminal.say("/show info");
    assert!(screen.contains("conversation: 0 messages"), "{screen}");
    terminal.say("Say hi.");
    let screen = terminal.say("/show info");
    assert!(screen.contains("conversation: 2 messages"), "{screen}");
    terminal.send_key("C-d");
    assert_eq!(terminal.wait_for_exit(), 0);
}

/// A chat (with `args`) that says each of `messages`, then `/save
/// talk.json`, which keeps the model's state in `talk.kv`; then quits.
fn save_chat_with_state(env: &TestEnv, args: &[&str], messages: &[&str]) {
    let terminal = chat(env, args);
    for message in messages {
        terminal.say(message);
    }
    let screen = terminal.say("/save talk.json");
    assert!(screen.contains("and the model's state"), "{screen}");
    assert!(env.path().join("talk.kv").is_file());
    terminal.send_key("C-d");
    assert_eq!(terminal.wait_for_exit(), 0);
}

/// Issue 16: `/save FILE.json` keeps the model's state beside the transcript
/// and `/load` in a new chat restores it, so the loaded conversation is not
/// evaluated again: the next turn evaluates little more than itself.
#[test]
fn a_saved_conversation_loads_with_its_state() {
    let env = TestEnv::new();
    save_chat_with_state(
        &env,
        &["-n", "16"],
        &["Name three colours.", "Now name three animals."],
    );

    let second = chat(&env, &["-n", "16"]);
    let screen = second.say("/load talk.json");
    assert!(
        screen.contains("loaded 4 messages from talk.json and the model's state"),
        "{screen}"
    );
    second.say("And three fruits?");
    let turn = last_turn_stats(&second.say("/stats"));
    assert!(
        turn.evaluated * 2 < turn.prompt,
        "most of the loaded conversation comes from its saved state: {turn:?}"
    );
    second.send_key("C-d");
    assert_eq!(second.wait_for_exit(), 0);
}

/// A saved state is llama.cpp's own bytes, checked by olm's hash, which a
/// hostile file can forge. A state whose positions do not end where its
/// tokens do (here every cell claims position 7), or whose tokens hold an
/// id past the vocabulary, is not restored: the
/// conversation loads, the model reads it again, and the chat goes on.
#[test]
fn a_saved_state_with_forged_positions_is_not_restored() {
    let env = TestEnv::new();
    save_chat_with_state(&env, &["-n", "8"], &["Name three colours."]);

    let path = env.path().join("talk.kv");
    let bytes = std::fs::read(&path).expect("talk.kv");
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[12..12 + header_len]).expect("the header");
    let key = header["key"].as_str().expect("a key");
    let any_size = olm::promptcache::StateBound {
        bytes_per_token: 1 << 30,
        max_tokens: 1 << 20,
    };
    let (tokens, mut state) =
        olm::promptcache::read_file(&path, key, 1 << 30, any_size).expect("intact");
    // llama.cpp's layout of one sequence's state here: 8 bytes, the stream
    // count, the cell count, then (position, 1, sequence 0) per cell.
    let word = |state: &[u8], at: usize| i32::from_le_bytes(state[at..at + 4].try_into().unwrap());
    assert_eq!(
        (word(&state, 8), word(&state, 12)),
        (1, tokens.len() as i32),
        "llama.cpp's state layout changed"
    );
    for cell in 0..tokens.len() {
        let at = 16 + 12 * cell;
        let saved = (word(&state, at), word(&state, at + 4), word(&state, at + 8));
        assert_eq!(
            saved,
            (cell as i32, 1, 0),
            "llama.cpp's state layout changed"
        );
        state[at..at + 4].copy_from_slice(&7i32.to_le_bytes());
    }
    let label = header["label"].as_str().unwrap_or_default();
    olm::promptcache::write_file(&path, key, label, &tokens, &state).expect("write");
    assert_state_not_restored(&env);

    // Its cells put right, but a token id past the vocabulary: not restored.
    for cell in 0..tokens.len() {
        let at = 16 + 12 * cell;
        state[at..at + 4].copy_from_slice(&(cell as i32).to_le_bytes());
    }
    let mut forged_tokens = tokens.clone();
    forged_tokens[1] = 1_000_000;
    olm::promptcache::write_file(&path, key, label, &forged_tokens, &state).expect("write");
    assert_state_not_restored(&env);
}

/// `/load talk.json` reads the conversation again rather than restore the
/// state beside it, and the chat goes on.
fn assert_state_not_restored(env: &TestEnv) {
    let second = chat(env, &["-n", "8"]);
    let screen = second.say("/load talk.json");
    assert!(
        screen.contains("loaded 2 messages from talk.json; the model reads them"),
        "{screen}"
    );
    let screen = second.say("And three fruits?");
    assert!(!screen.contains("error"), "{screen}");
    second.send_key("C-d");
    assert_eq!(second.wait_for_exit(), 0);
}

/// Issue 16: a chat at temperature 0 gives the same answers with drafting on
/// and off, turn after turn (the cached conversation stays right when
/// drafts are rejected).
#[test]
fn a_chat_with_drafting_gives_the_same_transcript() {
    let transcript = |draft: &str| {
        let env = TestEnv::new();
        let terminal = chat(&env, &["-n", "60", "--draft", draft]);
        terminal.say("Write the numbers from one to twenty in words, comma separated.");
        terminal.say("Write them again, in capital letters.");
        terminal.say("Now repeat your first answer exactly.");
        terminal.say("/save talk.md");
        terminal.send_key("C-d");
        assert_eq!(terminal.wait_for_exit(), 0);
        std::fs::read_to_string(env.path().join("talk.md")).expect("talk.md")
    };
    assert_eq!(transcript("off"), transcript("ngram"));
}
