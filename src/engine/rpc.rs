//! llama.cpp's RPC backend (ggml-rpc): another machine's CPU or GPU becomes
//! a device, and a model's layers are split over this machine's devices and
//! the workers'. Both ends live in olm: [`attach`] makes workers devices of
//! this process, [`serve`] is the worker (`olm worker`).
//!
//! What olm adds to ggml-rpc, which trusts its peer and its network:
//!
//! - before llama.cpp connects, olm connects itself ([`probe`]): a worker
//!   that cannot be reached, does not answer, or speaks another protocol
//!   version is refused with an error naming it, within seconds, where
//!   llama.cpp would block or abort;
//! - timeouts on llama.cpp's own sockets ([`sockets`]), so a worker that
//!   dies or wedges mid-generation ends the request with an error (see
//!   `abort.rs`), never a hang;
//! - the split: how many layers stay here and which worker gets which
//!   ([`Split`]), by each device's memory unless `--tensor-split` says.
//!
//! The RPC functions are reached through ggml's backend registry
//! (`ggml_backend_reg_get_proc_address`), as llama.cpp's own tools do, so a
//! build without `GGML_RPC` still links and says what it lacks.
//!
//! Owns: RPC endpoints, the probe, attaching workers, placing layers, the
//! RPC server. Must not touch: terminals, exit codes, the sandbox (callers
//! allow the ports).

mod sockets;
mod wire;

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use llama_cpp_sys_2::{ggml_backend_dev_t, ggml_backend_reg_t};

pub use wire::{Version, PROTOCOL};

/// How long olm waits for a worker to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the probe waits for each answer of an idle worker.
const PROBE_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `OLM_RPC_TIMEOUT`: how long one answer of a worker may take
/// once llama.cpp talks to it. A worker computes its layers of a whole
/// prompt batch before answering, which can take long on a slow CPU.
pub const DEFAULT_ANSWER_TIMEOUT_S: u64 = 300;
/// `GGML_RPC_MAX_SERVERS`.
pub const MAX_WORKERS: usize = 16;
/// Devices a model may be offloaded to: llama-cpp-2's list holds 16, and
/// llama.cpp reads it up to a null entry.
const MAX_OFFLOAD_DEVICES: usize = 15;
/// Ports `olm worker` listens on by default (llama.cpp's rpc-server's).
pub const DEFAULT_PORT: u16 = 50052;

/// Why a worker could not be used, or the RPC server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("this olm was built without llama.cpp's RPC backend (GGML_RPC)")]
    NotBuilt,
    #[error("invalid RPC worker '{endpoint}': {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("cannot reach the RPC worker at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error(
        "the RPC worker at {endpoint} accepted the connection but did not answer \
         within {seconds} s"
    )]
    NoAnswer { endpoint: String, seconds: u64 },
    #[error(
        "the RPC worker at {endpoint} speaks RPC protocol {theirs}, this olm speaks {ours}: \
         refusing to mix them"
    )]
    VersionMismatch {
        endpoint: String,
        theirs: Version,
        ours: Version,
    },
    #[error("{endpoint} does not answer as an RPC worker: {what}")]
    Protocol { endpoint: String, what: String },
    #[error("llama.cpp could not attach the RPC worker at {0}")]
    Attach(String),
    #[error("--tensor-split gives {given} weights for {expected} devices ({names})")]
    SplitCount {
        given: usize,
        expected: usize,
        names: String,
    },
    #[error("--tensor-split: {0}")]
    InvalidSplit(String),
    #[error("cannot apply --tensor-split with this llama.cpp build: {0}")]
    SplitUnsupported(String),
    #[error("cannot serve RPC on {bind}: {reason}")]
    Serve { bind: String, reason: String },
}

impl RpcError {
    /// Whether the fault is the network's or the worker's (exit 4), as
    /// opposed to the arguments' (see [`RpcError::is_usage`]) or olm's.
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            RpcError::Unreachable { .. } | RpcError::NoAnswer { .. } | RpcError::Protocol { .. }
        )
    }

    /// Whether the arguments are wrong (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RpcError::InvalidEndpoint { .. }
                | RpcError::SplitCount { .. }
                | RpcError::InvalidSplit(_)
        )
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RpcError::NotBuilt => Some(
                "rebuild olm: .cargo/config.toml sets GGML_RPC=ON; a build directory made \
                 before that needs `cargo clean -p llama-cpp-sys-2` once"
                    .into(),
            ),
            RpcError::Unreachable { .. } => Some(
                "is `olm worker` running there, on that port, and can this machine reach it \
                 (WireGuard, `ssh -L`)?"
                    .into(),
            ),
            RpcError::NoAnswer { .. } => Some(
                "a worker serves one client at a time: is another olm using it? Is it stopped?"
                    .into(),
            ),
            RpcError::VersionMismatch { .. } | RpcError::Protocol { .. } => Some(
                "run the same olm release on every machine; `olm worker --version` shows the \
                 RPC protocol a worker speaks"
                    .into(),
            ),
            RpcError::SplitCount { .. } => Some(
                "give one weight for this machine's CPU, then one per GPU here, then one per \
                 device of each worker, in --rpc order"
                    .into(),
            ),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Endpoints

/// `HOST:PORT` as written in `--rpc` (checked, not looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}", self.host, self.port)
    }
}

impl Endpoint {
    /// Check one `HOST:PORT`: an IPv4 address or a host name, and a port.
    /// llama.cpp's RPC transport speaks IPv4 only.
    pub fn parse(text: &str) -> Result<Self, RpcError> {
        let invalid = |reason: &str| RpcError::InvalidEndpoint {
            endpoint: crate::store::names::escaped(text),
            reason: reason.into(),
        };
        let text = text.trim();
        if text.starts_with('[') {
            return Err(invalid("llama.cpp's RPC backend speaks IPv4 only"));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(invalid("give HOST:PORT, e.g. 10.0.0.2:50052"));
        };
        if host.contains(':') {
            return Err(invalid("llama.cpp's RPC backend speaks IPv4 only"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?;
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && !host.starts_with(['-', '.']);
        if !valid_name {
            return Err(invalid("not an IPv4 address or host name"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// Whether no name lookup is needed to reach it.
    pub fn is_literal(&self) -> bool {
        self.host.parse::<Ipv4Addr>().is_ok() || self.host.eq_ignore_ascii_case("localhost")
    }

    /// The IPv4 address to connect to (a host name is looked up now).
    pub fn resolve(&self) -> Result<SocketAddrV4, RpcError> {
        if let Ok(ip) = self.host.parse::<Ipv4Addr>() {
            return Ok(SocketAddrV4::new(ip, self.port));
        }
        if self.host.eq_ignore_ascii_case("localhost") {
            return Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        }
        let unreachable = |reason: String| RpcError::Unreachable {
            endpoint: self.to_string(),
            reason,
        };
        let addresses = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| unreachable(format!("cannot look the name up: {error}")))?;
        addresses
            .filter_map(|address| match address {
                SocketAddr::V4(v4) => Some(v4),
                SocketAddr::V6(_) => None,
            })
            .next()
            .ok_or_else(|| unreachable("the name has no IPv4 address".into()))
    }
}

/// Check a whole `--rpc` list: at most [`MAX_WORKERS`], no worker twice.
pub fn parse_endpoints(list: &[String]) -> Result<Vec<Endpoint>, RpcError> {
    let endpoints = list
        .iter()
        .filter(|text| !text.trim().is_empty())
        .map(|text| Endpoint::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.len() > MAX_WORKERS {
        return Err(RpcError::InvalidEndpoint {
            endpoint: format!("{} workers", endpoints.len()),
            reason: format!("llama.cpp takes at most {MAX_WORKERS}"),
        });
    }
    for (index, endpoint) in endpoints.iter().enumerate() {
        if endpoints[..index].contains(endpoint) {
            return Err(RpcError::InvalidEndpoint {
                endpoint: endpoint.to_string(),
                reason: "given twice (a worker serves one client at a time)".into(),
            });
        }
    }
    Ok(endpoints)
}

/// `OLM_RPC_TIMEOUT`: how long one answer of a worker may take.
pub fn answer_timeout() -> Duration {
    Duration::from_secs(crate::env::number(
        crate::env::OLM_RPC_TIMEOUT,
        DEFAULT_ANSWER_TIMEOUT_S,
    ))
    .max(Duration::from_secs(1))
}

// ---------------------------------------------------------------------------
// The probe

/// A device of a worker, as the worker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

/// What a worker answered to olm's own handshake.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub endpoint: SocketAddrV4,
    pub version: Version,
    pub devices: Vec<DeviceMemory>,
}

/// Connect to a worker, check its protocol version and ask for its devices,
/// each step with a bounded wait. The connection is closed before llama.cpp
/// makes its own (a worker serves one client at a time).
pub fn probe(endpoint: SocketAddrV4) -> Result<WorkerInfo, RpcError> {
    let shown = endpoint.to_string();
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(endpoint), CONNECT_TIMEOUT)
        .map_err(|error| RpcError::Unreachable {
            endpoint: shown.clone(),
            reason: connect_reason(&error),
        })?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(PROBE_ANSWER_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_ANSWER_TIMEOUT));
    let version = {
        let payload = exchange(
            &mut stream,
            &shown,
            &wire::hello(),
            "HELLO",
            wire::hello_size(),
        )?;
        wire::parse_hello(&payload)
    };
    if version != PROTOCOL {
        return Err(RpcError::VersionMismatch {
            endpoint: shown,
            theirs: version,
            ours: PROTOCOL,
        });
    }
    let payload = exchange(
        &mut stream,
        &shown,
        &wire::device_count(),
        "DEVICE_COUNT",
        4,
    )?;
    let count = wire::parse_device_count(&payload).map_err(|error| RpcError::Protocol {
        endpoint: shown.clone(),
        what: error.to_string(),
    })?;
    let mut devices = Vec::new();
    for device in 0..count {
        let payload = exchange(
            &mut stream,
            &shown,
            &wire::device_memory(device),
            "GET_DEVICE_MEMORY",
            16,
        )?;
        let (free, total) = wire::parse_device_memory(&payload);
        devices.push(DeviceMemory { free, total });
    }
    Ok(WorkerInfo {
        endpoint,
        version,
        devices,
    })
}

fn exchange(
    stream: &mut TcpStream,
    endpoint: &str,
    request: &[u8],
    what: &'static str,
    expected: usize,
) -> Result<Vec<u8>, RpcError> {
    let failed = |error: wire::ReadError| match error {
        wire::ReadError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            RpcError::NoAnswer {
                endpoint: endpoint.to_owned(),
                seconds: PROBE_ANSWER_TIMEOUT.as_secs(),
            }
        }
        wire::ReadError::Io(io) if what == "HELLO" => RpcError::Protocol {
            endpoint: endpoint.to_owned(),
            what: format!(
                "it ended the handshake ({io}): an RPC worker of another protocol version \
                 (another llama.cpp or olm release) does that"
            ),
        },
        wire::ReadError::Io(io) => RpcError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: io.to_string(),
        },
        wire::ReadError::Wire(wire) => RpcError::Protocol {
            endpoint: endpoint.to_owned(),
            what: wire.to_string(),
        },
    };
    stream
        .write_all(request)
        .map_err(|error| failed(error.into()))?;
    wire::read_response(stream, what, expected).map_err(failed)
}

fn connect_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused: nothing listens there".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => format!(
            "no answer within {} s (a firewall, or no such machine?)",
            CONNECT_TIMEOUT.as_secs()
        ),
        std::io::ErrorKind::PermissionDenied => {
            "the sandbox refused the connection (this port was not given in --rpc)".into()
        }
        _ => error.to_string(),
    }
}

// ---------------------------------------------------------------------------
// llama.cpp's side: the registry, attaching workers, the server

/// `ggml_backend_rpc_add_server` (ggml-rpc.h): connects, asks the device
/// count and returns a registry of the worker's devices.
type AddServerFn = unsafe extern "C" fn(endpoint: *const c_char) -> ggml_backend_reg_t;
/// `ggml_backend_rpc_start_server` (ggml-rpc.h): serves clients one after
/// the other until it fails to accept.
type StartServerFn = unsafe extern "C" fn(
    endpoint: *const c_char,
    cache_dir: *const c_char,
    n_threads: usize,
    n_devices: usize,
    devices: *mut ggml_backend_dev_t,
);

/// The RPC backend's registry entry, if this build has it.
fn rpc_registry() -> Option<ggml_backend_reg_t> {
    // SAFETY: a NUL-terminated name; the registry outlives the program.
    let registry = unsafe { llama_cpp_sys_2::ggml_backend_reg_by_name(c"RPC".as_ptr()) };
    (!registry.is_null()).then_some(registry)
}

/// One of the RPC backend's functions, by its name in ggml-rpc.h.
fn rpc_function(name: &CStr) -> Result<*mut c_void, RpcError> {
    let registry = rpc_registry().ok_or(RpcError::NotBuilt)?;
    // SAFETY: a valid registry and a NUL-terminated name.
    let function =
        unsafe { llama_cpp_sys_2::ggml_backend_reg_get_proc_address(registry, name.as_ptr()) };
    if function.is_null() {
        return Err(RpcError::NotBuilt);
    }
    Ok(function)
}

/// Whether this build has the RPC backend.
pub fn available() -> bool {
    super::backend().is_ok() && rpc_registry().is_some()
}

/// The workers attached to this process, by address (llama.cpp keeps them
/// for the life of the process): registry pointer as an integer.
static ATTACHED: Mutex<Option<HashMap<SocketAddrV4, usize>>> = Mutex::new(None);

/// A worker attached as devices of this process.
#[derive(Debug, Clone)]
pub struct Attached {
    pub info: WorkerInfo,
    /// Its devices' indices in ggml's device list.
    pub devices: Vec<usize>,
}

/// Make each worker devices of this process: probe all of them first (so
/// that a bad one is named before llama.cpp connects anywhere), then let
/// llama.cpp connect, and guard its sockets.
pub fn attach(endpoints: &[SocketAddrV4]) -> Result<Vec<Attached>, RpcError> {
    super::backend().map_err(|_| RpcError::NotBuilt)?;
    let add_server: AddServerFn = {
        let function = rpc_function(c"ggml_backend_rpc_add_server")?;
        // SAFETY: ggml returns this very function for this name; its C
        // signature is AddServerFn's (ggml-rpc.h).
        unsafe { std::mem::transmute::<*mut c_void, AddServerFn>(function) }
    };
    let infos = endpoints
        .iter()
        .map(|&endpoint| probe(endpoint))
        .collect::<Result<Vec<_>, _>>()?;
    super::abort::note_rpc_endpoints(
        &endpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    );
    sockets::guard_client(endpoints, answer_timeout());
    let mut attached = Vec::new();
    for info in infos {
        let registry = {
            let mut map = ATTACHED.lock().unwrap_or_else(PoisonError::into_inner);
            let map = map.get_or_insert_with(HashMap::new);
            match map.get(&info.endpoint) {
                Some(&registry) => registry as ggml_backend_reg_t,
                None => {
                    let name = CString::new(info.endpoint.to_string())
                        .map_err(|_| RpcError::Attach(info.endpoint.to_string()))?;
                    // SAFETY: a NUL-terminated "a.b.c.d:port"; ggml copies it.
                    let registry = unsafe { add_server(name.as_ptr()) };
                    if registry.is_null() {
                        return Err(RpcError::Attach(info.endpoint.to_string()));
                    }
                    // SAFETY: a registry ggml made; registering adds its
                    // devices to ggml's device list for the process's life.
                    unsafe { llama_cpp_sys_2::ggml_backend_register(registry) };
                    map.insert(info.endpoint, registry as usize);
                    registry
                }
            }
        };
        let devices = registry_devices(registry);
        if devices.is_empty() {
            return Err(RpcError::Attach(info.endpoint.to_string()));
        }
        attached.push(Attached { info, devices });
    }
    Ok(attached)
}

/// Indices in ggml's device list of the devices of `registry`.
fn registry_devices(registry: ggml_backend_reg_t) -> Vec<usize> {
    // SAFETY: a registry ggml made; device pointers live as long as it.
    let count = unsafe { llama_cpp_sys_2::ggml_backend_reg_dev_count(registry) };
    let wanted: Vec<ggml_backend_dev_t> = (0..count)
        // SAFETY: index below the registry's count.
        .map(|index| unsafe { llama_cpp_sys_2::ggml_backend_reg_dev_get(registry, index) })
        .collect();
    let all = unsafe { llama_cpp_sys_2::ggml_backend_dev_count() };
    wanted
        .iter()
        .filter_map(|&device| {
            // SAFETY: indices below ggml's device count.
            (0..all)
                .find(|&index| unsafe { llama_cpp_sys_2::ggml_backend_dev_get(index) } == device)
        })
        .collect()
}

/// A device of this process: local, or a worker's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    pub description: String,
    /// `cpu`, `gpu`, `igpu`, `accel`, `rpc`.
    pub kind: &'static str,
    pub memory_free: u64,
    pub memory_total: u64,
}

fn device_info(index: usize) -> DeviceInfo {
    // SAFETY: an index below ggml's device count; the strings are static
    // for the device's life.
    unsafe {
        let device = llama_cpp_sys_2::ggml_backend_dev_get(index);
        let text = |pointer: *const c_char| {
            if pointer.is_null() {
                String::new()
            } else {
                CStr::from_ptr(pointer).to_string_lossy().into_owned()
            }
        };
        let registry = llama_cpp_sys_2::ggml_backend_dev_backend_reg(device);
        let kind = if Some(registry) == rpc_registry() {
            "rpc"
        } else {
            match llama_cpp_sys_2::ggml_backend_dev_type(device) {
                llama_cpp_sys_2::GGML_BACKEND_DEVICE_TYPE_CPU => "cpu",
                llama_cpp_sys_2::GGML_BACKEND_DEVICE_TYPE_GPU => "gpu",
                llama_cpp_sys_2::GGML_BACKEND_DEVICE_TYPE_IGPU => "igpu",
                _ => "accel",
            }
        };
        let (mut free, mut total) = (0usize, 0usize);
        if kind != "rpc" {
            // An RPC device's memory is a question over the network; the
            // probe already asked it.
            llama_cpp_sys_2::ggml_backend_dev_memory(device, &mut free, &mut total);
        }
        DeviceInfo {
            index,
            name: text(llama_cpp_sys_2::ggml_backend_dev_name(device)),
            description: text(llama_cpp_sys_2::ggml_backend_dev_description(device)),
            kind,
            memory_free: free as u64,
            memory_total: total as u64,
        }
    }
}

/// This machine's devices (no worker's).
pub fn local_devices() -> Vec<DeviceInfo> {
    if super::backend().is_err() {
        return Vec::new();
    }
    // SAFETY: reads ggml's device count.
    let count = unsafe { llama_cpp_sys_2::ggml_backend_dev_count() };
    (0..count)
        .map(device_info)
        .filter(|device| device.kind != "rpc")
        .collect()
}

/// Run the RPC server on `bind` until it fails (`olm worker`'s child):
/// this machine's GPUs as devices, or its CPU when it has none, as
/// llama.cpp's rpc-server does. With `memory_cap`, each device reports at
/// most that much memory to clients, which split layers by it. Never
/// returns on success.
pub fn serve(bind: SocketAddrV4, threads: u32, memory_cap: Option<u64>) -> Result<(), RpcError> {
    super::backend().map_err(|_| RpcError::NotBuilt)?;
    let start_server: StartServerFn = {
        let function = rpc_function(c"ggml_backend_rpc_start_server")?;
        // SAFETY: ggml returns this very function for this name; its C
        // signature is StartServerFn's (ggml-rpc.h).
        unsafe { std::mem::transmute::<*mut c_void, StartServerFn>(function) }
    };
    let local = local_devices();
    let gpus: Vec<usize> = local
        .iter()
        .filter(|device| matches!(device.kind, "gpu" | "igpu"))
        .map(|device| device.index)
        .collect();
    let chosen = if gpus.is_empty() {
        local
            .iter()
            .filter(|device| device.kind == "cpu")
            .map(|device| device.index)
            .take(1)
            .collect()
    } else {
        gpus
    };
    // SAFETY: indices below ggml's device count.
    let mut devices: Vec<ggml_backend_dev_t> = chosen
        .iter()
        .map(|&index| unsafe { llama_cpp_sys_2::ggml_backend_dev_get(index) })
        .collect();
    if devices.is_empty() {
        return Err(RpcError::Serve {
            bind: bind.to_string(),
            reason: "llama.cpp found no device to offer".into(),
        });
    }
    // Held while the server runs: clients ask each device's memory.
    let _reported = match memory_cap {
        Some(cap) => {
            let memory: Vec<u64> = chosen
                .iter()
                .map(|&index| {
                    let free = local
                        .iter()
                        .find(|device| device.index == index)
                        .map_or(cap, |device| device.memory_free);
                    free.min(cap)
                })
                .collect();
            Some(
                ReportedMemory::install(&chosen, &memory).map_err(|error| RpcError::Serve {
                    bind: bind.to_string(),
                    reason: format!("cannot report the --mem limit: {error}"),
                })?,
            )
        }
        None => None,
    };
    sockets::guard_server(bind.port());
    let endpoint = CString::new(bind.to_string()).map_err(|_| RpcError::Serve {
        bind: bind.to_string(),
        reason: "invalid address".into(),
    })?;
    // SAFETY: a NUL-terminated endpoint, no cache directory, and a device
    // array that outlives the call (which returns only when serving fails).
    unsafe {
        start_server(
            endpoint.as_ptr(),
            std::ptr::null(),
            threads.max(1) as usize,
            devices.len(),
            devices.as_mut_ptr(),
        );
    }
    Err(RpcError::Serve {
        bind: bind.to_string(),
        reason: "llama.cpp's RPC server stopped (address in use, or accept failed)".into(),
    })
}

// ---------------------------------------------------------------------------
// Placing layers

/// How a model's layers are placed over devices, as `olm run --json` and
/// `olm ps` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    /// The model's repeating layers (the output layer is one more).
    pub n_layer: u32,
    pub devices: Vec<SplitShare>,
}

/// The layers one device holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitShare {
    /// ggml's name: `CPU`, `CUDA0`, `RPC0`, ...
    pub device: String,
    /// The worker's address; `None` for this machine.
    pub endpoint: Option<String>,
    /// Repeating layers held.
    pub layers: u32,
    /// First and last of them (layers are placed in contiguous runs).
    pub first_layer: Option<u32>,
    pub last_layer: Option<u32>,
    /// Whether it holds the output layer.
    pub output: bool,
    /// The weight the split gave it (memory in bytes, or `--tensor-split`'s).
    pub weight: f64,
}

impl Split {
    /// One line for people: `CPU 0-9 · RPC0 127.0.0.1:50052 10-19 · ...`.
    pub fn summary(&self) -> String {
        self.devices
            .iter()
            .map(|share| {
                let place = share
                    .endpoint
                    .as_deref()
                    .map_or_else(|| share.device.clone(), |e| format!("{} {e}", share.device));
                let layers = match (share.first_layer, share.last_layer) {
                    (Some(first), Some(last)) if first == last => format!("layer {first}"),
                    (Some(first), Some(last)) => format!("layers {first}-{last}"),
                    _ => "no layers".into(),
                };
                let output = if share.output { " + output" } else { "" };
                format!("{place}: {layers}{output}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One device of a split, with what llama.cpp needs to place layers on it.
#[derive(Debug, Clone)]
struct Candidate {
    index: usize,
    name: String,
    endpoint: Option<String>,
    /// What llama.cpp will read as its free memory (the split's weight).
    memory: u64,
}

/// What [`place`] decided: what to set on the model parameters, and the
/// split they make.
#[derive(Debug)]
pub(crate) struct Placement {
    pub n_gpu_layers: u32,
    /// ggml device indices to offload to, in order.
    pub devices: Vec<usize>,
    /// `--tensor-split`: the memory each offload device reports while the
    /// model loads (llama.cpp splits by it).
    pub reported_memory: Option<Vec<u64>>,
    pub split: Split,
}

/// Decide where layers go: the workers' devices (after this machine's GPUs)
/// take layers in proportion to their memory, and on a machine without GPU
/// this machine's CPU takes its share too, by its memory; `--tensor-split`
/// gives the weights instead (CPU first), `--gpu-layers` how many layers
/// leave the CPU.
pub(crate) fn place(
    n_layer: u32,
    attached: &[Attached],
    gpu_layers: Option<u32>,
    tensor_split: &[f32],
) -> Result<Placement, RpcError> {
    let local = local_devices();
    let mut candidates: Vec<Candidate> = local
        .iter()
        .filter(|device| matches!(device.kind, "gpu" | "igpu"))
        .map(|device| Candidate {
            index: device.index,
            name: device.name.clone(),
            endpoint: None,
            memory: device.memory_free,
        })
        .collect();
    let has_gpu = !candidates.is_empty();
    for worker in attached {
        for (&index, memory) in worker.devices.iter().zip(&worker.info.devices) {
            let memory = if memory.free == 0 && memory.total == 0 {
                // llama.cpp then counts the host's memory instead.
                cpu_memory(&local)
            } else {
                memory.free
            };
            candidates.push(Candidate {
                index,
                name: device_name(index),
                endpoint: Some(worker.info.endpoint.to_string()),
                memory,
            });
        }
    }
    if candidates.len() > MAX_OFFLOAD_DEVICES {
        return Err(RpcError::InvalidEndpoint {
            endpoint: format!("{} devices", candidates.len()),
            reason: format!("llama.cpp splits over at most {MAX_OFFLOAD_DEVICES}"),
        });
    }
    let total_layers = n_layer + 1;
    let (cpu_weight, weights, reported) = if tensor_split.is_empty() {
        let cpu = if has_gpu {
            0.0
        } else {
            cpu_memory(&local) as f64
        };
        let weights: Vec<f64> = candidates.iter().map(|c| c.memory as f64).collect();
        (cpu, weights, None)
    } else {
        check_split(tensor_split, &candidates)?;
        let weights: Vec<f64> = tensor_split[1..].iter().map(|&w| f64::from(w)).collect();
        // Bytes llama.cpp will read: the weights scaled, so that their
        // ratios survive its single-precision sums.
        let reported: Vec<u64> = weights.iter().map(|&w| (w * 1e6).round() as u64).collect();
        (f64::from(tensor_split[0]), weights, Some(reported))
    };
    let offloaded = match gpu_layers {
        Some(layers) => layers.min(total_layers),
        None => {
            let sum = cpu_weight + weights.iter().sum::<f64>();
            if candidates.is_empty() || sum <= 0.0 {
                0
            } else {
                let on_cpu = (f64::from(total_layers) * cpu_weight / sum).round() as u32;
                total_layers - on_cpu.min(total_layers)
            }
        }
    };
    let memories: Vec<u64> = match &reported {
        Some(reported) => reported.clone(),
        None => candidates.iter().map(|c| c.memory).collect(),
    };
    let assignment = assign_layers(n_layer, offloaded, &memories);
    let mut devices = vec![SplitShare {
        device: "CPU".into(),
        endpoint: None,
        layers: 0,
        first_layer: None,
        last_layer: None,
        output: false,
        weight: cpu_weight,
    }];
    devices.extend(
        candidates
            .iter()
            .zip(&weights)
            .map(|(candidate, &weight)| SplitShare {
                device: candidate.name.clone(),
                endpoint: candidate.endpoint.clone(),
                layers: 0,
                first_layer: None,
                last_layer: None,
                output: false,
                weight,
            }),
    );
    for (layer, &slot) in assignment.iter().enumerate() {
        let share = &mut devices[slot];
        let layer = layer as u32;
        if layer == n_layer {
            share.output = true;
            continue;
        }
        share.layers += 1;
        share.first_layer.get_or_insert(layer);
        share.last_layer = Some(layer);
    }
    Ok(Placement {
        n_gpu_layers: offloaded,
        devices: candidates.iter().map(|c| c.index).collect(),
        reported_memory: reported,
        split: Split { n_layer, devices },
    })
}

fn check_split(weights: &[f32], candidates: &[Candidate]) -> Result<(), RpcError> {
    let expected = candidates.len() + 1;
    if weights.len() != expected {
        let names = std::iter::once("CPU".to_owned())
            .chain(candidates.iter().map(|c| match &c.endpoint {
                Some(endpoint) => format!("{} {endpoint}", c.name),
                None => c.name.clone(),
            }))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(RpcError::SplitCount {
            given: weights.len(),
            expected,
            names,
        });
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(RpcError::InvalidSplit(
            "weights must be finite numbers of at least 0".into(),
        ));
    }
    if weights.iter().sum::<f32>() <= 0.0 {
        return Err(RpcError::InvalidSplit(
            "at least one weight must be above 0".into(),
        ));
    }
    Ok(())
}

/// Which device holds each layer (index `n_layer` is the output layer):
/// 0 for the CPU, `1 + i` for offload device `i`. The rule of llama.cpp's
/// `load_tensors` (llama-model.cpp), in its single precision, so that the
/// split shown is the split made.
fn assign_layers(n_layer: u32, n_gpu_layers: u32, memories: &[u64]) -> Vec<usize> {
    let n_layer = n_layer as i64;
    let n_gpu_layers = i64::from(n_gpu_layers);
    let mut splits: Vec<f32> = memories.iter().map(|&m| m as f32).collect();
    let mut sum = 0.0f32;
    for split in &mut splits {
        sum += *split;
        *split = sum;
    }
    for split in &mut splits {
        *split /= sum;
    }
    let gpu_start = (n_layer + 1 - n_gpu_layers).max(0);
    let active = if memories.is_empty() {
        0
    } else {
        n_gpu_layers.min(n_layer + 1)
    };
    (0..=n_layer)
        .map(|layer| {
            if layer < gpu_start || layer - gpu_start >= active {
                return 0;
            }
            let position = (layer - gpu_start) as f32 / active as f32;
            let device = splits.partition_point(|&split| split <= position);
            1 + device.min(memories.len() - 1)
        })
        .collect()
}

fn cpu_memory(local: &[DeviceInfo]) -> u64 {
    local
        .iter()
        .find(|device| device.kind == "cpu")
        .map_or(0, |device| device.memory_free)
}

fn device_name(index: usize) -> String {
    // SAFETY: an index below ggml's device count; the name lives as long
    // as the device.
    unsafe {
        let name =
            llama_cpp_sys_2::ggml_backend_dev_name(llama_cpp_sys_2::ggml_backend_dev_get(index));
        if name.is_null() {
            String::new()
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}

// ---------------------------------------------------------------------------
// While a model loads

/// While a model loads over workers: the deadline that ends a load whose
/// workers stop answering, and `--tensor-split`'s memory reports.
pub(crate) struct LoadWatch {
    timeout: Duration,
    reported: Option<ReportedMemory>,
}

impl LoadWatch {
    pub fn start(placement: &Placement) -> Result<Self, RpcError> {
        let timeout = answer_timeout();
        sockets::set_deadline(Some(Instant::now() + timeout));
        let reported = match &placement.reported_memory {
            Some(memory) => Some(ReportedMemory::install(&placement.devices, memory)?),
            None => None,
        };
        Ok(Self { timeout, reported })
    }

    /// A sign of progress (llama.cpp's load progress callback).
    pub fn progress(timeout: Duration) {
        sockets::set_deadline(Some(Instant::now() + timeout));
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Drop for LoadWatch {
    fn drop(&mut self) {
        sockets::set_deadline(None);
        drop(self.reported.take());
    }
}

/// llama.cpp splits layers over devices by the free memory each reports,
/// and llama-cpp-2 0.1.160 gives no way to pass `tensor_split` itself. So
/// for `--tensor-split`, while the model loads, each offload device reports
/// the memory its weight asks for (and in a worker with `--mem`, each
/// device reports at most the limit, for as long as it serves): its `get_memory` entry (the third of
/// `struct ggml_backend_device_i`, ggml-backend-impl.h) is replaced, and
/// put back after. The replacement is checked through ggml's public
/// `ggml_backend_dev_memory` before anything relies on it; a layout that
/// differs is put back at once and refused.
struct ReportedMemory {
    devices: Vec<(usize, *mut c_void)>,
}

/// Index of `get_memory` in `struct ggml_backend_device_i`, which starts
/// `struct ggml_backend_device`: get_name, get_description, get_memory.
const GET_MEMORY_SLOT: usize = 2;

/// device pointer → (free, total) it reports while a [`ReportedMemory`] lives.
static REPORTS: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());

unsafe extern "C" fn reported_memory(
    device: ggml_backend_dev_t,
    free: *mut usize,
    total: *mut usize,
) {
    let reports = REPORTS.lock().unwrap_or_else(PoisonError::into_inner);
    let bytes = reports
        .iter()
        .find(|(pointer, _)| *pointer == device as usize)
        .map_or(0, |(_, bytes)| *bytes);
    // SAFETY: ggml passes valid pointers to two size_t.
    unsafe {
        *free = bytes as usize;
        // Nonzero: llama.cpp counts a device reporting 0 of 0 as the host.
        *total = (bytes as usize).max(1);
    }
}

impl ReportedMemory {
    fn install(indices: &[usize], bytes: &[u64]) -> Result<Self, RpcError> {
        let mut installed = Self {
            devices: Vec::new(),
        };
        for (&index, &bytes) in indices.iter().zip(bytes) {
            // SAFETY: an index below ggml's device count.
            let device = unsafe { llama_cpp_sys_2::ggml_backend_dev_get(index) };
            REPORTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((device as usize, bytes));
            let slot = (device as *mut *mut c_void).wrapping_add(GET_MEMORY_SLOT);
            // SAFETY: the device struct begins with its table of function
            // pointers (ggml-backend-impl.h); slot 2 is inside it.
            let original = unsafe { slot.read() };
            // SAFETY: as above; the write is undone at once unless ggml's
            // public call shows it took the place of get_memory.
            unsafe { slot.write(reported_memory as *mut c_void) };
            installed.devices.push((device as usize, original));
            let (mut free, mut total) = (0usize, 0usize);
            // SAFETY: a valid device and two out-parameters.
            unsafe { llama_cpp_sys_2::ggml_backend_dev_memory(device, &mut free, &mut total) };
            if free as u64 != bytes || total as u64 != bytes.max(1) {
                return Err(RpcError::SplitUnsupported(
                    "its device table differs from the one olm knows".into(),
                ));
            }
        }
        Ok(installed)
    }
}

impl Drop for ReportedMemory {
    fn drop(&mut self) {
        for &(device, original) in self.devices.iter().rev() {
            let slot = (device as *mut *mut c_void).wrapping_add(GET_MEMORY_SLOT);
            // SAFETY: restores what `install` read from this very slot.
            unsafe { slot.write(original) };
        }
        REPORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(pointer, _)| !self.devices.iter().any(|(device, _)| device == pointer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_before_anything_connects() {
        assert_eq!(
            Endpoint::parse("10.0.0.2:50052").expect("valid"),
            Endpoint {
                host: "10.0.0.2".into(),
                port: 50052
            }
        );
        assert!(Endpoint::parse("worker-1.lan:50052").is_ok());
        for bad in [
            "10.0.0.2",
            "10.0.0.2:0",
            "10.0.0.2:70000",
            ":50052",
            "[::1]:50052",
            "::1:50052",
            "a b:1",
            "-x:1",
            "host:port",
        ] {
            let error = Endpoint::parse(bad).expect_err(bad);
            assert!(error.is_usage(), "{bad}: {error}");
        }
        let twice = parse_endpoints(&["127.0.0.1:1".into(), "127.0.0.1:1".into()]);
        assert!(twice.is_err());
        let many: Vec<String> = (1..=17).map(|port| format!("127.0.0.1:{port}")).collect();
        assert!(parse_endpoints(&many).is_err());
        assert!(Endpoint::parse("localhost:5").expect("valid").is_literal());
        assert!(!Endpoint::parse("worker:5").expect("valid").is_literal());
    }

    #[test]
    fn layers_are_assigned_as_llama_cpp_assigns_them() {
        // 30 layers + output, 20 offloaded over two equal devices: 11 on the
        // CPU, then 10 and 10 (the second holds the output layer).
        let assignment = assign_layers(30, 20, &[100, 100]);
        assert_eq!(assignment.len(), 31);
        assert_eq!(assignment.iter().filter(|&&d| d == 0).count(), 11);
        assert_eq!(assignment.iter().filter(|&&d| d == 1).count(), 10);
        assert_eq!(assignment.iter().filter(|&&d| d == 2).count(), 10);
        assert_eq!(assignment[30], 2);
        // Everything offloaded, weights 1:3.
        let assignment = assign_layers(8, 9, &[1, 3]);
        assert_eq!(assignment, [1, 1, 1, 2, 2, 2, 2, 2, 2]);
        // Nothing to offload to: all on the CPU.
        assert!(assign_layers(4, 5, &[]).iter().all(|&d| d == 0));
        // A weight of zero gets no layer.
        let assignment = assign_layers(4, 5, &[0, 1]);
        assert!(assignment.iter().all(|&d| d == 2));
    }

    #[test]
    fn a_split_reads_as_one_line() {
        let split = Split {
            n_layer: 4,
            devices: vec![
                SplitShare {
                    device: "CPU".into(),
                    endpoint: None,
                    layers: 2,
                    first_layer: Some(0),
                    last_layer: Some(1),
                    output: false,
                    weight: 1.0,
                },
                SplitShare {
                    device: "RPC0".into(),
                    endpoint: Some("127.0.0.1:50052".into()),
                    layers: 2,
                    first_layer: Some(2),
                    last_layer: Some(3),
                    output: true,
                    weight: 1.0,
                },
            ],
        };
        assert_eq!(
            split.summary(),
            "CPU: layers 0-1, RPC0 127.0.0.1:50052: layers 2-3 + output"
        );
    }
}
