//! Slash commands: what a line starting with `/` means.
//!
//! Owns: command names, their arguments and the help text. Must not touch:
//! the terminal, the model, files (a command names a file; `repl` opens it).

use std::path::PathBuf;

use super::settings::{Parameter, Setting, SettingError};

/// What `/show` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowTopic {
    /// The model: name, description, file, context.
    Info,
    /// The generation parameters.
    Params,
    /// The conversation as the model sees it, after the chat template.
    Template,
    /// The system prompt.
    System,
}

/// A parsed slash command.
#[derive(Debug, Clone, PartialEq)]
pub enum SlashCommand {
    Help,
    Bye,
    /// Forget the conversation (the system prompt stays).
    Clear,
    /// Set the system prompt; `None` removes it.
    System(Option<String>),
    Set(Setting),
    Show(ShowTopic),
    Stats,
    Save(PathBuf),
    Load(PathBuf),
    /// Switch to another model, keeping the conversation.
    Model(String),
}

/// Why a slash command could not be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command /{0}; /help lists the commands")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error(transparent)]
    Setting(#[from] SettingError),
}

/// The help text for `/help`.
pub const HELP: &str = "\
commands:
  /help                 this help
  /bye                  quit (also Ctrl-D)
  /clear                forget the conversation (the system prompt stays)
  /system [TEXT]        set the system prompt (without TEXT: remove it)
  /set PARAM VALUE      temperature, top-k, top-p, min-p, seed, max-tokens, repeat-penalty
  /show info|params|template|system
  /stats                tokens and speed of the last answer, context used
  /save FILE            save the transcript (FILE.json: JSON, otherwise markdown)
  /load FILE            continue a conversation saved as JSON
  /model NAME           switch to another model, keeping the conversation
input:
  \"\"\" starts and ends a multi-line message; a line ending in \\ continues
  Ctrl-C stops an answer; Ctrl-R searches the history; Up/Down walk it
  start a message with a space to send text that begins with /";

/// Parse `line` if it is a slash command: `None` when it is a message.
///
/// A line is a command when its first character is `/`; a message that must
/// start with `/` can be sent with a leading space.
pub fn parse(line: &str) -> Option<Result<SlashCommand, CommandError>> {
    let body = line.strip_prefix('/')?.trim();
    let (name, argument) = match body.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (body, ""),
    };
    Some(parse_named(&name.to_ascii_lowercase(), argument))
}

fn parse_named(name: &str, argument: &str) -> Result<SlashCommand, CommandError> {
    let command = match name {
        "help" | "?" | "h" => SlashCommand::Help,
        "bye" | "exit" | "quit" | "q" => SlashCommand::Bye,
        "clear" => SlashCommand::Clear,
        "system" => SlashCommand::System((!argument.is_empty()).then(|| argument.to_owned())),
        "set" => SlashCommand::Set(parse_set(argument)?),
        "show" => SlashCommand::Show(parse_show(argument)?),
        "stats" => SlashCommand::Stats,
        "save" => SlashCommand::Save(required(argument, "/save FILE")?.into()),
        "load" => SlashCommand::Load(required(argument, "/load FILE.json")?.into()),
        "model" => SlashCommand::Model(required(argument, "/model NAME")?.to_owned()),
        other => return Err(CommandError::Unknown(other.to_owned())),
    };
    Ok(command)
}

fn required<'a>(argument: &'a str, usage: &'static str) -> Result<&'a str, CommandError> {
    if argument.is_empty() {
        Err(CommandError::Usage(usage))
    } else {
        Ok(argument)
    }
}

fn parse_set(argument: &str) -> Result<Setting, CommandError> {
    const USAGE: &str =
        "/set PARAM VALUE (temperature, top-k, top-p, min-p, seed, max-tokens, repeat-penalty)";
    let Some((name, value)) = argument.split_once(char::is_whitespace) else {
        return Err(CommandError::Usage(USAGE));
    };
    let parameter: Parameter = name.parse()?;
    Ok(Setting::parse(parameter, value)?)
}

fn parse_show(argument: &str) -> Result<ShowTopic, CommandError> {
    match argument.to_ascii_lowercase().as_str() {
        "" | "info" => Ok(ShowTopic::Info),
        "params" | "parameters" => Ok(ShowTopic::Params),
        "template" => Ok(ShowTopic::Template),
        "system" => Ok(ShowTopic::System),
        _ => Err(CommandError::Usage("/show info|params|template|system")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> Result<SlashCommand, CommandError> {
        parse(line).expect("a slash command")
    }

    #[test]
    fn messages_are_not_commands() {
        assert!(parse("hello").is_none());
        assert!(parse(" /not a command").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn commands_and_their_arguments() {
        assert_eq!(command("/help"), Ok(SlashCommand::Help));
        assert_eq!(command("/BYE"), Ok(SlashCommand::Bye));
        assert_eq!(command("/clear  "), Ok(SlashCommand::Clear));
        assert_eq!(
            command("/system You are terse."),
            Ok(SlashCommand::System(Some("You are terse.".into())))
        );
        assert_eq!(command("/system"), Ok(SlashCommand::System(None)));
        assert_eq!(
            command("/set temperature 0.2"),
            Ok(SlashCommand::Set(Setting::Temperature(0.2)))
        );
        assert_eq!(
            command("/show params"),
            Ok(SlashCommand::Show(ShowTopic::Params))
        );
        assert_eq!(command("/show"), Ok(SlashCommand::Show(ShowTopic::Info)));
        assert_eq!(
            command("/save talk.md"),
            Ok(SlashCommand::Save("talk.md".into()))
        );
        assert_eq!(
            command("/load a b.json"),
            Ok(SlashCommand::Load("a b.json".into()))
        );
        assert_eq!(
            command("/model qwen-7b"),
            Ok(SlashCommand::Model("qwen-7b".into()))
        );
    }

    #[test]
    fn mistakes_get_a_one_line_hint() {
        assert_eq!(
            command("/frobnicate"),
            Err(CommandError::Unknown("frobnicate".into()))
        );
        assert!(matches!(command("/save"), Err(CommandError::Usage(_))));
        assert!(matches!(
            command("/set temperature"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            command("/set warmth 3"),
            Err(CommandError::Setting(_))
        ));
        assert!(matches!(
            command("/set top-p 7"),
            Err(CommandError::Setting(_))
        ));
        assert!(matches!(
            command("/show everything"),
            Err(CommandError::Usage(_))
        ));
        for error in [command("/frobnicate"), command("/set top-p 7")] {
            let text = error.expect_err("an error").to_string();
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }
}
