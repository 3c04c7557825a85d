//! `olm serve`: check the bind and key, resolve the MODELs given on the
//! command line, and run the HTTP server until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::resolve::{draft_config, load_options, resolve_model};
use super::{Interrupted, UsageError};
use anyhow::Context;

use crate::cli::ServeArgs;
use crate::engine::{self, SchedulerOptions};
use crate::sandbox::{self, Policy};
use crate::server::{
    self, is_loopback, is_wildcard, AccessPolicy, ConnectionLimits, ModelSettings, ServerConfig,
    Shutdown,
};
use crate::store::ModelRef;
use crate::ui::Printer;

/// Context of each sequence when `--ctx-size` is not given (capped at the model's own).
const DEFAULT_CONTEXT_PER_SEQUENCE: u32 = 4096;
/// Tokens one decode step may carry (prompt chunks plus one per generating sequence).
const BATCH_SIZE: u32 = 512;
/// How long running requests may take to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (T-E1).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body (T-E1).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write to a client that stopped reading may stay blocked (T-E2).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a loaded model may make no progress before `/health` says so:
/// far longer than any decode step or prompt preparation should take.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Connections open at once, well under the usual 1024 file descriptors.
const MAX_CONNECTIONS: usize = 512;

/// `sandboxed`: lock the server out of the network (all but its listener)
/// once its pull process runs; `--allow-network` leaves it off.
pub fn run(args: ServeArgs, printer: &Printer, sandboxed: bool) -> anyhow::Result<ExitCode> {
    crate::ui::init_tracing(args.verbose);
    engine::configure_logging(args.verbose);
    let access = access_policy(&args)?;
    let models = command_line_models(&args.models)?;
    let mut host = args.host.clone();
    let mut enforcement = None;
    if sandboxed {
        // Before the sandbox: a host name's lookup may need DNS, and the pull
        // process must keep the network the server gives up.
        host = listen_host(&args.host, args.port)?;
        #[cfg(debug_assertions)]
        let pull_process = !args.test_pull_in_server;
        #[cfg(not(debug_assertions))]
        let pull_process = true;
        if pull_process {
            server::start_pull_process(args.verbose)
                .context("cannot start the server's pull process")?;
        }
        // `--rpc`: the model processes connect to the workers' ports.
        let rpc_ports = super::resolve::rpc_ports(&args.load);
        let applied = sandbox::apply(&Policy::listener(args.port).with_rpc_ports(&rpc_ports));
        super::report_sandbox(&applied, args.verbose, printer);
        enforcement = Some(applied);
    }
    let config = ServerConfig {
        host,
        port: args.port,
        access,
        models,
        settings: ModelSettings {
            scheduler: SchedulerOptions {
                parallel: args.parallel,
                context_per_sequence: args.ctx_size.unwrap_or(DEFAULT_CONTEXT_PER_SEQUENCE),
                queue_capacity: args.max_queue,
                threads: args.threads.unwrap_or_else(engine::physical_cores),
                batch_size: BATCH_SIZE,
            },
            load: load_options(&args.load, args.chat_template.as_deref())?,
            keep_alive: Duration::from_secs(args.keep_alive),
            draft: draft_config(&args.draft),
            max_loaded: args.max_loaded as usize,
            verbose: args.verbose,
        },
        body_limit: usize::try_from(args.max_body_mib << 20).unwrap_or(usize::MAX),
        shutdown_grace: milliseconds(args.shutdown_grace_ms, SHUTDOWN_GRACE),
        stall_limit: milliseconds(args.stall_limit_ms, STALL_LIMIT),
        connections: ConnectionLimits {
            header_timeout: milliseconds(args.header_timeout_ms, HEADER_TIMEOUT),
            body_timeout: milliseconds(args.body_timeout_ms, BODY_TIMEOUT),
            write_timeout: milliseconds(args.write_timeout_ms, WRITE_TIMEOUT),
            max_connections: args.max_connections.map_or(MAX_CONNECTIONS, |count| {
                usize::try_from(count).unwrap_or(usize::MAX)
            }),
        },
    };
    let close_network = args.load.rpc.is_empty();
    let shutdown = server::run(config, |address| {
        // The listener exists: from now on no thread makes a network socket
        // (but model processes that connect to --rpc workers need them).
        if let Some(enforcement) = enforcement.as_ref().filter(|_| close_network) {
            if let Err(error) = sandbox::close_network() {
                if enforcement.seccomp_filter {
                    printer.warn(&format!("sandbox: {error}"));
                }
            }
        }
        printer.status(&format!("listening on http://{address}"))
    })?;
    match shutdown {
        Shutdown::Drained | Shutdown::GraceExpired => Ok(ExitCode::SUCCESS),
        // A second SIGINT/SIGTERM during the drain: exit 130, as for Ctrl-C.
        Shutdown::Interrupted => Err(Interrupted.into()),
    }
}

/// The address to bind: an IP address or `localhost` as given (no network
/// needed to read them), a host name looked up now, while DNS still works.
fn listen_host(host: &str, port: u16) -> anyhow::Result<String> {
    let bare = host.trim_matches(['[', ']']);
    if bare.parse::<std::net::IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost") {
        return Ok(host.to_owned());
    }
    use std::net::ToSocketAddrs;
    let address = (bare, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| {
            UsageError::new(format!(
                "cannot resolve --host {}",
                crate::store::names::escaped(host)
            ))
        })?;
    Ok(address.ip().to_string())
}

fn milliseconds(given: Option<u64>, default: Duration) -> Duration {
    given.map_or(default, Duration::from_millis)
}

/// Loopback needs nothing; any other address needs a key (T-D1).
fn access_policy(args: &ServeArgs) -> anyhow::Result<AccessPolicy> {
    let api_key = args.api_key.clone().filter(|key| !key.is_empty());
    let loopback = is_loopback(&args.host);
    if !loopback && api_key.is_none() {
        return Err(UsageError::new(format!(
            "refusing to listen on {} without an API key",
            args.host
        ))
        .with_hint("pass --api-key KEY (or set OLM_API_KEY), or keep the default --host 127.0.0.1")
        .into());
    }
    let wildcard = is_wildcard(&args.host);
    let extra_hosts = if loopback || wildcard {
        Vec::new()
    } else {
        vec![args.host.clone()]
    };
    Ok(AccessPolicy {
        extra_hosts,
        any_host: wildcard,
        origins: args.cors_origins.clone(),
        api_key,
    })
}

/// MODELs from the command line by API name: a path is named by its file
/// stem, anything else by what was typed.
fn command_line_models(references: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut models = BTreeMap::new();
    for reference in references {
        let path = if server::gguf_check_skipped_for_tests() {
            crate::store::Store::from_env()
                .resolve(&ModelRef::parse(reference)?)?
                .path
        } else {
            // Checked here to fail at start; each worker checks again on load.
            resolve_model(reference)?.path().to_owned()
        };
        let name = match ModelRef::parse(reference)? {
            ModelRef::Path(given) => file_stem(&given),
            _ => reference.clone(),
        };
        if models.insert(name.clone(), path).is_some() {
            return Err(UsageError::new(format!("two MODELs are both named '{name}'")).into());
        }
    }
    Ok(models)
}

fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".gguf")
        .map(str::to_owned)
        .unwrap_or(name)
}
