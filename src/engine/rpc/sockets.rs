//! Timeouts on the sockets of llama.cpp's RPC backend, which makes them
//! itself, blocking and with none: a worker that stops answering (stopped,
//! wedged, its machine gone) would leave `send`/`recv` waiting forever.
//! ggml offers no hook, so a guard thread finds them (every socket of this
//! process connected to a worker olm attached, or, in a worker, listening or
//! accepted on its port) and sets:
//!
//! - TCP keepalive and `TCP_USER_TIMEOUT`: a peer whose machine or network
//!   is gone is noticed within about half a minute, on both sides;
//! - on a client, `SO_RCVTIMEO`/`SO_SNDTIMEO`: a worker whose machine still
//!   answers TCP but whose process does not answer requests fails the wait
//!   after the answer timeout. (Not on a worker: a client may rightly stay
//!   idle for hours between requests.)
//! - while a model loads, a deadline: no progress for the answer timeout and
//!   the guard shuts the sockets down, which ends even a wait that began
//!   before the timeouts were set.
//!
//! A failed wait makes llama.cpp abort; `engine/abort.rs` turns that into one
//! error line naming the workers.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How often the guard looks for new sockets.
const SCAN_INTERVAL: Duration = Duration::from_millis(50);
/// Keepalive: first probe after this much silence, then every
/// `KEEPALIVE_INTERVAL`, `KEEPALIVE_PROBES` times.
const KEEPALIVE_IDLE_S: libc::c_int = 10;
const KEEPALIVE_INTERVAL_S: libc::c_int = 5;
const KEEPALIVE_PROBES: libc::c_int = 3;
/// Data the peer's kernel has not acknowledged for this long drops the connection.
const USER_TIMEOUT_MS: libc::c_uint = 30_000;

#[derive(Default)]
struct Guarded {
    /// Client side: the workers' addresses, and how long an answer may take.
    endpoints: Vec<SocketAddrV4>,
    answer_timeout: Option<Duration>,
    /// Worker side: the port it listens on.
    server_port: Option<u16>,
    /// Sockets already tuned, by (fd, inode): a closed fd's number may come back.
    tuned: HashSet<(i32, u64)>,
    /// While a model loads: when the guard gives up on the workers.
    deadline: Option<Instant>,
}

static GUARDED: Mutex<Option<Guarded>> = Mutex::new(None);
static THREAD: OnceLock<()> = OnceLock::new();

fn with<T>(action: impl FnOnce(&mut Guarded) -> T) -> T {
    let mut guard = GUARDED.lock().unwrap_or_else(PoisonError::into_inner);
    action(guard.get_or_insert_with(Guarded::default))
}

/// Guard the sockets this process opens to `endpoints`.
pub fn guard_client(endpoints: &[SocketAddrV4], answer_timeout: Duration) {
    with(|guarded| {
        for endpoint in endpoints {
            if !guarded.endpoints.contains(endpoint) {
                guarded.endpoints.push(*endpoint);
            }
        }
        guarded.answer_timeout = Some(answer_timeout);
    });
    start();
    // The sockets made so far (the probe's are closed) are tuned now, not
    // one scan later.
    scan();
}

/// Guard the sockets of a worker listening on `port`.
pub fn guard_server(port: u16) {
    with(|guarded| guarded.server_port = Some(port));
    start();
}

/// While a model loads: give up on the workers at `deadline` (moved on by
/// each sign of progress); `None` ends the watch.
pub fn set_deadline(deadline: Option<Instant>) {
    with(|guarded| guarded.deadline = deadline);
}

fn start() {
    THREAD.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("olm-rpc-sockets".into())
            .spawn(|| loop {
                scan();
                std::thread::sleep(SCAN_INTERVAL);
            });
        if let Err(error) = spawned {
            tracing::warn!("cannot start the RPC socket guard: {error}");
        }
    });
}

/// One pass over this process's file descriptors.
fn scan() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    with(|guarded| {
        let expired = guarded
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline);
        let mut seen = HashSet::new();
        for fd in fds {
            let Some(inode) = socket_inode(fd) else {
                continue;
            };
            let Some(role) = role(guarded, fd) else {
                continue;
            };
            seen.insert((fd, inode));
            if expired && role == Role::Client {
                // SAFETY: shutdown on a socket fd; a wait on it returns at once.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
            if guarded.tuned.contains(&(fd, inode)) {
                continue;
            }
            tune(fd, role, guarded.answer_timeout);
            guarded.tuned.insert((fd, inode));
        }
        guarded.tuned.retain(|key| seen.contains(key));
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// The inode of `fd` when it is a socket.
fn socket_inode(fd: i32) -> Option<u64> {
    // SAFETY: fstat writes into a zeroed struct of the right type.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: see above; an fd closed meanwhile makes fstat fail.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return None;
    }
    (stat.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(stat.st_ino)
}

fn role(guarded: &Guarded, fd: i32) -> Option<Role> {
    if let Some(peer) = address(fd, libc::getpeername) {
        if guarded.endpoints.contains(&peer) {
            return Some(Role::Client);
        }
    }
    let port = guarded.server_port?;
    let local = address(fd, libc::getsockname)?;
    (local.port() == port).then_some(Role::Server)
}

type NameCall = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// The IPv4 address `call` (getpeername or getsockname) gives for `fd`.
fn address(fd: i32, call: NameCall) -> Option<SocketAddrV4> {
    // SAFETY: a zeroed sockaddr_in and its size; the call writes at most that.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: see above.
    let status = unsafe { call(fd, (&raw mut address).cast(), &mut length) };
    if status != 0 || i32::from(address.sin_family) != libc::AF_INET {
        return None;
    }
    Some(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)),
        u16::from_be(address.sin_port),
    ))
}

fn tune(fd: i32, role: Role, answer_timeout: Option<Duration>) {
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int);
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_S);
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S);
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES);
    set(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, USER_TIMEOUT_MS);
    if let (Role::Client, Some(timeout)) = (role, answer_timeout) {
        let value = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
        };
        set(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, value);
        set(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, value);
    }
}

fn set<T>(fd: i32, level: libc::c_int, option: libc::c_int, value: T) {
    // SAFETY: the value lives across the call and its size is passed.
    let status = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&raw const value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if status != 0 {
        tracing::debug!(
            "setsockopt({level}, {option}) on fd {fd}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn option<T: Default>(fd: i32, level: libc::c_int, name: libc::c_int) -> T {
        let mut value = T::default();
        let mut length = std::mem::size_of::<T>() as libc::socklen_t;
        // SAFETY: a value of the option's type and its size.
        let status =
            unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut length) };
        assert_eq!(status, 0);
        value
    }

    #[test]
    fn sockets_to_a_guarded_endpoint_get_timeouts_and_others_do_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let SocketAddr4(endpoint) = SocketAddr4::of(&listener);
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let guarded = TcpStream::connect(endpoint).expect("connect");
        let unrelated = TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        guard_client(&[endpoint], Duration::from_secs(7));
        let timeout: libc::timeval = {
            let mut value: libc::timeval = unsafe { std::mem::zeroed() };
            let mut length = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            // SAFETY: a timeval and its size.
            let status = unsafe {
                libc::getsockopt(
                    guarded.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw mut value).cast(),
                    &mut length,
                )
            };
            assert_eq!(status, 0);
            value
        };
        assert_eq!(timeout.tv_sec, 7);
        let keepalive: libc::c_int =
            option(guarded.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE);
        assert_eq!(keepalive, 1);
        let user_timeout: libc::c_uint =
            option(guarded.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT);
        assert_eq!(user_timeout, USER_TIMEOUT_MS);
        let untouched: libc::c_int =
            option(unrelated.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE);
        assert_eq!(untouched, 0);
    }

    struct SocketAddr4(SocketAddrV4);

    impl SocketAddr4 {
        fn of(listener: &TcpListener) -> Self {
            match listener.local_addr().expect("addr") {
                std::net::SocketAddr::V4(v4) => Self(v4),
                std::net::SocketAddr::V6(_) => panic!("bound IPv4"),
            }
        }
    }
}
