//! olm starts itself again for work that must not share a process with the
//! caller: a model's worker process for `olm serve` (a crash in llama.cpp
//! ends only that model) and the template process that renders chat
//! templates from model files (a hostile template can exhaust only that
//! process's memory and time), and the pull process of `olm serve` (the one
//! part of a server that may use the network).
//!
//! Owns: how to find the running executable and the names of the hidden
//! subcommands these children run. Must not touch: what the children do
//! (each lives with the module that owns its work).

use std::path::PathBuf;

/// The hidden subcommand of a model's worker process (`olm serve`).
pub const WORKER_COMMAND: &str = "__worker";

/// The hidden subcommand of the template process (chat template rendering).
pub const TEMPLATE_COMMAND: &str = "__template";

/// The hidden subcommand of `olm serve`'s pull process: the one part of a
/// server that keeps the network (`/api/pull`), started before the server
/// locks itself in.
pub const PULL_COMMAND: &str = "__pull";

/// The hidden subcommand of `olm worker`'s RPC server process (llama.cpp's
/// RPC server, started again by `olm worker` if a request makes it stop).
pub const RPC_SERVER_COMMAND: &str = "__rpc-server";

/// The hidden subcommand that tries to reach the network from inside the
/// sandbox (tests; debug builds only).
pub const NET_PROBE_COMMAND: &str = "__net-probe";

/// This very program, even if its file was replaced since it started (an
/// upgrade or a rebuild while a server runs): on Linux `/proc/self/exe`
/// still opens the running binary.
pub fn own_executable() -> std::io::Result<PathBuf> {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self);
    }
    std::env::current_exe()
}

/// A command that runs olm's hidden `subcommand`, shown as `olm SUBCOMMAND`
/// by `ps`, with stdin and stdout piped to the caller.
pub fn olm_command(subcommand: &str) -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(own_executable()?);
    command
        .arg0("olm")
        .arg(subcommand)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    Ok(command)
}
