//! `olm worker`: lend this machine's devices to another olm as an RPC worker
//! of llama.cpp (not `olm __worker`, a server's model process).
//!
//! The worker is a small supervisor: it checks the address (loopback unless
//! `--allow-unauthenticated-network`), then runs llama.cpp's RPC server in a
//! child process (`olm __rpc-server`), checks its handshake, and starts it
//! again whenever it ends: llama.cpp's RPC server trusts its peer and aborts
//! on some malformed requests, and one such request must not take the
//! worker away. SIGINT or SIGTERM stops the child and exits 0.
//!
//! Owns: the worker's arguments, the supervision loop, the child's limits.
//! Must not touch: llama.cpp (the engine's `rpc` module serves).

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::UsageError;
use crate::cli::{RpcServerArgs, RpcWorkerArgs};
use crate::engine::{self, rpc};
use crate::sandbox::Policy;
use crate::ui::Printer;

/// How long the RPC server may take to listen after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the supervisor looks at its child and the signals.
const POLL: Duration = Duration::from_millis(100);
/// How long a stopped child may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Restarts back off from this...
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// ...doubling up to this while the child keeps ending soon after starting.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that ran this long counts as healthy: the back-off starts over.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// Consecutive starts that never listened before the worker gives up.
const MAX_FAILED_STARTS: u32 = 3;

/// The sandbox of `olm worker`: listen on its port, reach only that port
/// (its own handshake check). An address that does not parse gets no
/// network at all; `run` then says why.
pub(super) fn sandbox_policy(args: &RpcWorkerArgs) -> Policy {
    match parse_bind(&args.bind) {
        Ok(bind) => Policy::rpc_worker(bind.port()),
        Err(_) => Policy::offline(),
    }
}

fn parse_bind(text: &str) -> Result<SocketAddrV4, UsageError> {
    let shown = crate::store::names::escaped(text);
    let address: std::net::SocketAddr = text.trim().parse().map_err(|_| {
        UsageError::new(format!("invalid --bind '{shown}'"))
            .with_hint("give an IPv4 address and port, e.g. 127.0.0.1:50052")
    })?;
    match address {
        std::net::SocketAddr::V4(v4) if v4.port() != 0 => Ok(v4),
        std::net::SocketAddr::V4(_) => Err(UsageError::new(format!(
            "invalid --bind '{shown}': the port must be from 1 to 65535"
        ))),
        std::net::SocketAddr::V6(_) => Err(UsageError::new(format!(
            "invalid --bind '{shown}': llama.cpp's RPC server listens on IPv4 only"
        ))),
    }
}

/// `--mem`: `24G`, `512M`, `1.5G`, `1048576` (bytes); K, M, G, T in 1024s.
fn parse_size(text: &str) -> Result<u64, UsageError> {
    let invalid = || {
        UsageError::new(format!(
            "invalid --mem '{}'",
            crate::store::names::escaped(text)
        ))
        .with_hint("give a size such as 24G or 512M")
    };
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(invalid()),
    };
    let number: f64 = number.trim().parse().map_err(|_| invalid())?;
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < (64u64 << 20) as f64 || bytes > u64::MAX as f64 {
        return Err(invalid().with_hint("give at least 64M"));
    }
    Ok(bytes as u64)
}

/// `olm worker`.
pub fn run(args: RpcWorkerArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    crate::ui::init_tracing(args.verbose);
    engine::configure_logging(args.verbose);
    if args.show_version {
        let text = format!(
            "olm {}\nRPC protocol {}\nllama.cpp: {}\n",
            env!("CARGO_PKG_VERSION"),
            rpc::PROTOCOL,
            engine::llama_cpp_description()
        );
        std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let bind = parse_bind(&args.bind)?;
    if !bind.ip().is_loopback() && !args.allow_unauthenticated_network {
        return Err(UsageError::new(format!(
            "refusing to listen on {bind}: llama.cpp's RPC protocol has no authentication \
             and no encryption, so anyone who reaches that address could use this machine"
        ))
        .with_hint(
            "keep the default 127.0.0.1 and reach it through `ssh -L`, or bind a private \
             (WireGuard) address with --allow-unauthenticated-network (README: Several machines)",
        )
        .into());
    }
    let mem_bytes = args.mem.as_deref().map(parse_size).transpose()?;
    if !rpc::available() {
        return Err(rpc::RpcError::NotBuilt.into());
    }
    // Say now, clearly, when the port is taken, rather than through the child.
    drop(std::net::TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?);
    let threads = args.threads.unwrap_or_else(engine::physical_cores);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    if !bind.ip().is_loopback() {
        printer.warn(&format!(
            "listening on {bind} with no authentication and no encryption \
             (--allow-unauthenticated-network)"
        ));
    }
    let child_args = ChildArgs {
        bind,
        threads,
        mem_bytes,
        verbose: args.verbose,
    };
    supervise(&child_args, &stop, printer)
}

struct ChildArgs {
    bind: SocketAddrV4,
    threads: u32,
    mem_bytes: Option<u64>,
    verbose: bool,
}

/// Start the RPC server, check it, and start it again whenever it ends,
/// until a signal says stop.
fn supervise(args: &ChildArgs, stop: &AtomicBool, printer: &Printer) -> anyhow::Result<ExitCode> {
    let mut backoff = FIRST_BACKOFF;
    let mut failed_starts = 0;
    let mut announced = false;
    loop {
        let started = Instant::now();
        let mut child = spawn(args)?;
        match wait_listening(args.bind, &mut child, stop) {
            Listening::Yes => failed_starts = 0,
            Listening::Stopped => return Ok(stop_child(child)),
            Listening::Exited(status) => {
                failed_starts += 1;
                if failed_starts >= MAX_FAILED_STARTS {
                    anyhow::bail!(
                        "llama.cpp's RPC server did not start on {} ({})",
                        args.bind,
                        describe(status)
                    );
                }
                std::thread::sleep(backoff);
                continue;
            }
            Listening::TimedOut => {
                stop_child(child);
                anyhow::bail!(
                    "llama.cpp's RPC server did not listen on {} within {} s",
                    args.bind,
                    START_TIMEOUT.as_secs()
                );
            }
        }
        if !announced {
            announce(args, printer)?;
            announced = true;
        }
        let status = loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(stop_child(child));
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(POLL),
                Err(error) => return Err(error).context("cannot watch the RPC server"),
            }
        };
        if stop.load(Ordering::SeqCst) {
            return Ok(ExitCode::SUCCESS);
        }
        printer.warn(&format!(
            "llama.cpp's RPC server ended ({}); starting it again",
            describe(status)
        ));
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        } else {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Check the handshake of the first server started (its protocol is this
/// olm's) and say where the worker listens and what it offers.
fn announce(args: &ChildArgs, printer: &Printer) -> anyhow::Result<()> {
    let info = rpc::probe(reachable(args.bind)).context("the RPC server does not answer")?;
    let memory: u64 = info.devices.iter().map(|device| device.total).sum();
    let devices = rpc::local_devices();
    let offered: Vec<String> = devices
        .iter()
        .filter(|device| {
            if devices.iter().any(|d| matches!(d.kind, "gpu" | "igpu")) {
                matches!(device.kind, "gpu" | "igpu")
            } else {
                device.kind == "cpu"
            }
        })
        .map(|device| format!("{} ({})", device.name, device.description))
        .collect();
    let limit = args
        .mem_bytes
        .map(|bytes| format!(", at most {}", crate::human::size(bytes)))
        .unwrap_or_default();
    printer.status(&format!(
        "olm worker: RPC protocol {}, {} threads, devices: {} ({} reported{limit})",
        info.version,
        args.threads,
        offered.join(", "),
        crate::human::size(memory),
    ));
    printer.status(&format!("listening on {}", args.bind));
    Ok(())
}

fn spawn(args: &ChildArgs) -> anyhow::Result<Child> {
    let mut command = crate::process::olm_command(crate::process::RPC_SERVER_COMMAND)
        .context("cannot find olm's own executable")?;
    command
        .arg("--bind")
        .arg(args.bind.to_string())
        .arg("--threads")
        .arg(args.threads.to_string())
        .stdin(Stdio::null());
    if let Some(bytes) = args.mem_bytes {
        command.arg("--mem-bytes").arg(bytes.to_string());
    }
    if args.verbose {
        command.arg("--verbose");
        // llama.cpp's RPC server prints its clients on stdout: to stderr here.
        let stderr = std::io::stderr();
        let copy = std::os::fd::AsFd::as_fd(&stderr)
            .try_clone_to_owned()
            .context("cannot duplicate stderr")?;
        command.stdout(Stdio::from(copy));
    } else {
        command.stdout(Stdio::null());
    }
    command
        .spawn()
        .context("cannot start llama.cpp's RPC server")
}

enum Listening {
    Yes,
    Exited(ExitStatus),
    Stopped,
    TimedOut,
}

/// Wait until the child accepts connections on its port.
fn wait_listening(bind: SocketAddrV4, child: &mut Child, stop: &AtomicBool) -> Listening {
    let deadline = Instant::now() + START_TIMEOUT;
    let target = std::net::SocketAddr::V4(reachable(bind));
    loop {
        if stop.load(Ordering::SeqCst) {
            return Listening::Stopped;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Listening::Exited(status);
        }
        // A bare connection, closed at once: the server sees a client that
        // sent nothing and goes back to accepting.
        if TcpStream::connect_timeout(&target, POLL).is_ok() {
            return Listening::Yes;
        }
        if Instant::now() >= deadline {
            return Listening::TimedOut;
        }
        std::thread::sleep(POLL / 2);
    }
}

/// Where this machine reaches the server: its address, or loopback for the
/// wildcard address.
fn reachable(bind: SocketAddrV4) -> SocketAddrV4 {
    if bind.ip().is_unspecified() {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, bind.port())
    } else {
        bind
    }
}

/// SIGTERM, then SIGKILL after the grace; exit 0 either way.
fn stop_child(mut child: Child) -> ExitCode {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signals our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(POLL / 2);
    }
    let _ = child.kill();
    let _ = child.wait();
    ExitCode::SUCCESS
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// `olm __rpc-server`: llama.cpp's RPC server, until it fails. A request
/// that makes llama.cpp abort ends this process with one error line and
/// exit 1 (the supervisor starts it again).
pub fn run_server(args: &RpcServerArgs, printer: &Printer) -> ExitCode {
    crate::ui::init_tracing(args.verbose);
    engine::configure_logging(args.verbose);
    engine::install_abort_handler(engine::AbortPolicy::ExitWithError);
    if let Some(bytes) = args.mem_bytes {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: setrlimit with a valid struct; lowering a limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
            printer.error(
                &format!(
                    "cannot limit the worker's memory: {}",
                    std::io::Error::last_os_error()
                ),
                None,
            );
            return ExitCode::FAILURE;
        }
    }
    match rpc::serve(args.bind, args.threads, args.mem_bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            printer.error(&error.to_string(), None);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_are_ipv4_with_a_port() {
        assert_eq!(
            parse_bind("127.0.0.1:50052").expect("valid"),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 50052)
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "[::1]:50052",
            "localhost:50052",
            "",
        ] {
            assert!(parse_bind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("24G").expect("valid"), 24 << 30);
        assert_eq!(parse_size("512M").expect("valid"), 512 << 20);
        assert_eq!(parse_size("512MiB").expect("valid"), 512 << 20);
        assert_eq!(parse_size("1.5g").expect("valid"), 3 << 29);
        assert_eq!(parse_size("134217728").expect("valid"), 128 << 20);
        for bad in ["", "G", "12X", "-1G", "1M", "NaNG", "1e30T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sandbox_allows_the_workers_port_only() {
        let args = |bind: &str| RpcWorkerArgs {
            bind: bind.into(),
            allow_unauthenticated_network: false,
            threads: None,
            mem: None,
            show_version: false,
            verbose: false,
        };
        assert_eq!(
            sandbox_policy(&args("127.0.0.1:6000")),
            Policy::rpc_worker(6000)
        );
        assert_eq!(sandbox_policy(&args("nonsense")), Policy::offline());
    }
}
