//! The offline sandbox: olm asks the kernel to make network access
//! impossible for itself, so that no bug, template, tokenizer or library can
//! send a byte, whatever the code tries.
//!
//! Two layers, each from a well-kept crate: Landlock's network rules
//! ([`landlock_rules`]: no TCP connect, bind only on `serve`'s port, no
//! abstract Unix sockets outside the sandbox; with `--rpc`, connect to the
//! workers' ports; `olm worker`, bind and reach its own port) and a seccomp filter
//! ([`filter`]: no new sockets of any family but Unix and netlink, except the
//! TCP listener `serve` needs; Landlock does not cover UDP before ABI 10, so
//! DNS would otherwise pass). Both are inherited by every child process (the
//! template process, a server's model workers) and cannot be lifted.
//!
//! Where the kernel lacks a feature, [`apply`] goes on without it and says
//! which in its [`Enforcement`] (`--verbose`, `olm doctor`).
//!
//! Owns: the policies and applying them. Must not touch: what commands do,
//! the terminal (callers print the [`Enforcement`]).

mod filter;
mod landlock_rules;
#[cfg(debug_assertions)]
mod probe;

use std::sync::OnceLock;

pub use landlock_rules::LandlockSupport;
#[cfg(debug_assertions)]
pub use probe::probe;

/// What a command may do on the network. Everything not granted here is
/// refused by the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The one TCP port the process may bind (`serve`; 0 is an ephemeral
    /// port the kernel picks).
    pub bind_port: Option<u16>,
    /// The one TCP port the process may connect to (`ps`, a client of a
    /// running server).
    pub connect_port: Option<u16>,
    /// Whether new TCP sockets may be made (the listener of `serve` until it
    /// exists, the one connection of `ps`). Never UDP or raw sockets.
    pub tcp_sockets: bool,
    /// Whether datagram sockets may be made to look a host name up (`ps
    /// --host NAME`: DNS). Off for every command that needs no host name.
    pub name_lookup: bool,
    /// More TCP ports the process may connect to: the RPC workers of
    /// `--rpc` (their names are looked up before the sandbox, so no DNS).
    /// Landlock's rules name ports, not addresses: the port is what the
    /// kernel can hold a process to.
    pub rpc_ports: Vec<u16>,
}

impl Policy {
    /// No network at all: every command but `pull`, `serve` and `ps`.
    pub fn offline() -> Self {
        Self::default()
    }

    /// `serve` before its listener exists: make TCP sockets and bind `port`
    /// only; connect nowhere. [`close_network`] ends even that once the
    /// listener is bound.
    pub fn listener(port: u16) -> Self {
        Self {
            bind_port: Some(port),
            tcp_sockets: true,
            ..Self::default()
        }
    }

    /// A command that uses RPC workers (`run`, `chat`, `bench` with
    /// `--rpc`): connect to their ports only, bind nothing.
    pub fn rpc_client(ports: &[u16]) -> Self {
        Self::offline().with_rpc_ports(ports)
    }

    /// This policy, and connections to RPC workers on `ports` (none: unchanged).
    pub fn with_rpc_ports(mut self, ports: &[u16]) -> Self {
        for &port in ports {
            if !self.rpc_ports.contains(&port) {
                self.rpc_ports.push(port);
            }
        }
        if !self.rpc_ports.is_empty() {
            self.tcp_sockets = true;
        }
        self
    }

    /// `olm worker`: listen on `port`, and connect to it (the worker checks
    /// its own RPC server's handshake); nowhere else.
    pub fn rpc_worker(port: u16) -> Self {
        Self {
            bind_port: Some(port),
            connect_port: Some(port),
            tcp_sockets: true,
            ..Self::default()
        }
    }

    /// A client of one server (`ps`): connect to `port` only; `name_lookup`
    /// when the server is named by a host name that DNS may have to answer.
    pub fn client(port: u16, name_lookup: bool) -> Self {
        Self {
            connect_port: Some(port),
            tcp_sockets: true,
            name_lookup,
            ..Self::default()
        }
    }
}

/// A layer of the sandbox that is not in force, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub feature: &'static str,
    pub reason: String,
}

/// What [`apply`] put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// The policy asked for.
    pub policy: Policy,
    /// The Landlock ABI of this kernel (0: none).
    pub landlock_abi: i32,
    /// Whether Landlock's network rules restrict this process.
    pub landlock_network: bool,
    /// Whether the seccomp socket filter restricts this process.
    pub seccomp_filter: bool,
    /// Features not in force here, each with its reason.
    pub missing: Vec<Missing>,
}

impl Enforcement {
    /// Whether no network access is possible beyond what the policy grants:
    /// both layers in force.
    pub fn is_complete(&self) -> bool {
        self.landlock_network && self.seccomp_filter
    }

    /// One line for `--verbose`.
    pub fn summary(&self) -> String {
        let layer = |on: bool| if on { "on" } else { "OFF" };
        format!(
            "sandbox: landlock network rules {} (kernel ABI {}), seccomp socket filter {}",
            layer(self.landlock_network),
            self.landlock_abi,
            layer(self.seccomp_filter)
        )
    }
}

/// The enforcement of this process, once [`apply`] ran.
static APPLIED: OnceLock<Enforcement> = OnceLock::new();

/// What [`apply`] put in force in this process, if it ran (`olm doctor`
/// reports it).
pub fn applied() -> Option<&'static Enforcement> {
    APPLIED.get()
}

/// Restrict this process, and every process it starts, to `policy`.
///
/// Call it before any thread starts: Landlock restricts the calling thread
/// and the threads and processes it creates afterwards, not threads that
/// already run (their number is checked and reported as missing). A layer
/// the kernel does not support is left out and named in the result; olm goes
/// on without it.
pub fn apply(policy: &Policy) -> Enforcement {
    let mut missing = Vec::new();
    let threads = thread_count();
    if threads > 1 {
        missing.push(Missing {
            feature: "sandbox of threads started earlier",
            reason: format!("{threads} threads ran before the sandbox was applied"),
        });
    }
    let landlock = landlock_rules::restrict(policy);
    let landlock_network = match &landlock {
        Ok(outcome) => {
            missing.extend(outcome.missing.iter().cloned());
            outcome.network
        }
        Err(reason) => {
            missing.push(Missing {
                feature: "Landlock network rules",
                reason: reason.clone(),
            });
            false
        }
    };
    let seccomp_filter = match filter::install(policy) {
        Ok(()) => true,
        Err(error) => {
            missing.push(Missing {
                feature: "seccomp socket filter",
                reason: error.to_string(),
            });
            false
        }
    };
    let enforcement = Enforcement {
        policy: policy.clone(),
        landlock_abi: landlock_rules::support().abi,
        landlock_network,
        seccomp_filter,
        missing,
    };
    let _ = APPLIED.set(enforcement.clone());
    enforcement
}

/// `serve` once its listener is bound: no new network socket of any kind
/// from now on, in every thread of the process (seccomp's thread sync).
pub fn close_network() -> Result<(), SandboxError> {
    filter::close_network()
}

/// Why the sandbox could not be tightened.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
    #[error("the kernel refused the seccomp filter: {0}")]
    Install(String),
}

/// What this kernel offers the sandbox, whether or not it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSupport {
    /// `uname -r`.
    pub release: String,
    pub landlock: LandlockSupport,
    /// Whether seccomp filters are available (`CONFIG_SECCOMP_FILTER`).
    pub seccomp: bool,
}

impl KernelSupport {
    /// Features this kernel lacks that the sandbox would use.
    pub fn missing(&self) -> Vec<Missing> {
        let mut missing = self.landlock.missing();
        if !self.seccomp {
            missing.push(Missing {
                feature: "seccomp socket filter",
                reason: "the kernel has no seccomp filters (CONFIG_SECCOMP_FILTER)".into(),
            });
        }
        missing
    }
}

/// Probe the running kernel (no restriction is applied).
pub fn kernel_support() -> KernelSupport {
    KernelSupport {
        release: kernel_release(),
        landlock: landlock_rules::support(),
        seccomp: filter::available(),
    }
}

/// `uname -r`, or `unknown`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Threads of this process now (1 when none was started).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |tasks| tasks.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_grant_only_what_their_command_needs() {
        assert_eq!(Policy::offline(), Policy::default());
        let serve = Policy::listener(11435);
        assert_eq!(serve.bind_port, Some(11435));
        assert_eq!(serve.connect_port, None);
        assert!(serve.tcp_sockets && !serve.name_lookup);
        let ps = Policy::client(8080, false);
        assert_eq!(ps.connect_port, Some(8080));
        assert_eq!(ps.bind_port, None);
        let rpc = Policy::rpc_client(&[50052, 50053, 50052]);
        assert_eq!(rpc.rpc_ports, [50052, 50053]);
        assert!(rpc.tcp_sockets && !rpc.name_lookup);
        assert_eq!((rpc.bind_port, rpc.connect_port), (None, None));
        assert_eq!(Policy::offline().with_rpc_ports(&[]), Policy::offline());
        let serve = Policy::listener(11435).with_rpc_ports(&[50052]);
        assert_eq!(serve.bind_port, Some(11435));
        assert_eq!(serve.rpc_ports, [50052]);
        let worker = Policy::rpc_worker(50052);
        assert_eq!(worker.bind_port, Some(50052));
        assert_eq!(worker.connect_port, Some(50052));
        assert!(worker.rpc_ports.is_empty() && !worker.name_lookup);
    }

    #[test]
    fn a_summary_names_each_layer() {
        let enforcement = Enforcement {
            policy: Policy::offline(),
            landlock_abi: 3,
            landlock_network: false,
            seccomp_filter: true,
            missing: Vec::new(),
        };
        assert!(!enforcement.is_complete());
        let summary = enforcement.summary();
        assert!(
            summary.contains("landlock network rules OFF (kernel ABI 3)"),
            "{summary}"
        );
        assert!(summary.contains("seccomp socket filter on"), "{summary}");
    }
}
