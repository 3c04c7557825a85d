//! Timeouts on the sockets of llama.cpp's RPC backend, which makes them
//! itself, blocking and with none: a worker that stops answering (stopped,
//! wedged, its machine gone) would leave `send`/`recv` waiting forever.
//! ggml offers no hook, so a guard thread finds them (every socket of this
//! process connected to a worker olm attached, or, in a worker, listening or
//! accepted on its port) and:
//!
//! - sets TCP keepalive and `TCP_USER_TIMEOUT`: a peer whose machine or
//!   network is gone is noticed within about half a minute, on both sides;
//! - when a thread of this process has been waiting on a worker (blocked
//!   in `recv` or `send` on its socket) and no byte has crossed any worker
//!   socket for the answer timeout, shuts the client sockets down: a worker
//!   whose machine still answers TCP but whose process does not answer (or
//!   read) requests ends the wait. An idle client waits on no socket, so it
//!   may stay idle for hours;
//! - while a model loads, the same on a deadline that each tensor loaded
//!   moves on ([`set_deadline`]).
//!
//! Not `SO_RCVTIMEO`/`SO_SNDTIMEO`: with them set, Linux ends a blocked
//! `recv`/`send` with `EINTR` whenever the process is stopped and continued
//! (Ctrl-Z then `fg`, a debugger, `strace`) or a signal handler runs, and
//! ggml-rpc takes any failed call for a lost worker. A shutdown socket
//! fails every wait on it at once, whenever the wait began.
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
        let mut seen = HashSet::new();
        let mut clients = Vec::new();
        for fd in fds {
            let Some(inode) = socket_inode(fd) else {
                continue;
            };
            let Some(role) = role(guarded, fd) else {
                continue;
            };
            seen.insert((fd, inode));
            if role == Role::Client {
                clients.push(fd);
            }
            if guarded.tuned.contains(&(fd, inode)) {
                continue;
            }
            tune(fd);
            guarded.tuned.insert((fd, inode));
        }
        guarded.tuned.retain(|key| seen.contains(key));
        if gave_up(guarded, &clients) {
            for &fd in &clients {
                // SAFETY: shutdown on a socket fd; a wait on it returns at once.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
    });
}

/// Whether the workers have kept llama.cpp waiting too long: past the load
/// deadline, or a thread waits on a worker's socket and no byte has crossed
/// any of them for the answer timeout (while one worker computes, llama.cpp
/// waits on it and the others are quiet).
fn gave_up(guarded: &Guarded, clients: &[i32]) -> bool {
    if clients.is_empty() {
        return false;
    }
    if guarded
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline)
    {
        return true;
    }
    let Some(timeout) = guarded.answer_timeout else {
        return false;
    };
    let quiet = clients
        .iter()
        .map(|&fd| since_last_data(fd).unwrap_or(Duration::ZERO))
        .min()
        .unwrap_or(Duration::ZERO);
    quiet >= timeout && waiting_on(clients)
}

/// Whether a thread of this process is blocked sending to or receiving
/// from one of `fds` (`/proc/self/task/*/syscall`: the call's number and
/// arguments, the first being the descriptor).
fn waiting_on(fds: &[i32]) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("syscall"))
            .ok()
            .and_then(|line| blocked_on(&line))
            .is_some_and(|fd| fds.contains(&fd))
    })
}

/// The descriptor a `/proc/PID/task/TID/syscall` line shows a thread
/// blocked sending or receiving on, if it does.
fn blocked_on(line: &str) -> Option<i32> {
    const SOCKET_IO: [libc::c_long; 6] = [
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_read,
        libc::SYS_write,
    ];
    let mut fields = line.split_whitespace();
    let number: libc::c_long = fields.next()?.parse().ok()?;
    if !SOCKET_IO.contains(&number) {
        return None;
    }
    let fd = fields.next()?.strip_prefix("0x")?;
    i32::from_str_radix(fd, 16).ok()
}

/// How long ago `fd` last sent or received data (`TCP_INFO`). A send
/// blocked on a peer that reads nothing sends no data (window probes carry
/// none), so a stopped worker leaves both growing.
fn since_last_data(fd: i32) -> Option<Duration> {
    // SAFETY: a zeroed tcp_info and its size; the kernel writes at most that.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: see above.
    let status = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut length,
        )
    };
    (status == 0).then(|| {
        Duration::from_millis(u64::from(
            info.tcpi_last_data_recv.min(info.tcpi_last_data_sent),
        ))
    })
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

type NameCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

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

fn tune(fd: i32) {
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int);
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_S);
    set(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        KEEPALIVE_INTERVAL_S,
    );
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES);
    set(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        USER_TIMEOUT_MS,
    );
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
    use std::io::{Read, Write};
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

    /// One test, because the guard is one per process: its timeout is the
    /// last one given.
    #[test]
    fn guarded_sockets_get_keepalive_and_a_silent_worker_ends_a_wait_only() {
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let SocketAddr4(endpoint) = SocketAddr4::of(&silent);
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut guarded = TcpStream::connect(endpoint).expect("connect");
        let (_accepted, _) = silent.accept().expect("accept");
        let unrelated = TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        guard_client(&[endpoint], Duration::from_secs(1));

        let keepalive: libc::c_int =
            option(guarded.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE);
        assert_eq!(keepalive, 1);
        let user_timeout: libc::c_uint = option(
            guarded.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
        );
        assert_eq!(user_timeout, USER_TIMEOUT_MS);
        // No receive timeout: it would turn a stop and continue into EINTR.
        let receive_timeout: libc::timeval = {
            // SAFETY: a zeroed timeval is a valid value.
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
        assert_eq!((receive_timeout.tv_sec, receive_timeout.tv_usec), (0, 0));
        let untouched: libc::c_int =
            option(unrelated.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE);
        assert_eq!(untouched, 0);

        // Idle past the timeout, nobody waiting on it: the connection stays.
        std::thread::sleep(Duration::from_millis(1500));
        guarded.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let idle = guarded.read(&mut byte);
        assert_eq!(
            idle.as_ref().map_err(std::io::Error::kind).err(),
            Some(std::io::ErrorKind::WouldBlock),
            "{idle:?}"
        );
        guarded.set_nonblocking(false).expect("blocking");

        // A request, then a wait for the answer, which never comes: the wait
        // ends (end of stream) about the timeout after the request. The
        // read timeout only keeps a failing test from hanging.
        guarded
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let started = Instant::now();
        guarded.write_all(b"request").expect("send a request");
        let waited = guarded.read(&mut byte);
        assert_eq!(
            waited.expect("ended by a shutdown, not the read timeout"),
            0
        );
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
        drop(guarded);

        // Waiting on it, and the worker sends a byte every 200 ms for longer
        // than the timeout: nothing is cut.
        let talking = TcpListener::bind("127.0.0.1:0").expect("bind");
        let SocketAddr4(endpoint) = SocketAddr4::of(&talking);
        const BYTES: usize = 12;
        let sender = std::thread::spawn(move || {
            let (mut stream, _) = talking.accept().expect("accept");
            for _ in 0..BYTES {
                std::thread::sleep(Duration::from_millis(200));
                stream.write_all(b"x").expect("the client still reads");
            }
        });
        let mut client = TcpStream::connect(endpoint).expect("connect");
        guard_client(&[endpoint], Duration::from_secs(1));
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut received = Vec::new();
        client.read_to_end(&mut received).expect("read to the end");
        sender.join().expect("sender");
        assert_eq!(received.len(), BYTES);
    }

    #[test]
    fn a_thread_blocked_on_a_socket_is_told_by_its_syscall_line() {
        let line = |number: libc::c_long, fd: &str| {
            format!("{number} {fd} 0x7fa9495daa58 0x8 0x0 0x0 0x0 0x7fa9495daa00 0x7fa949d1c5ce")
        };
        assert_eq!(blocked_on(&line(libc::SYS_recvfrom, "0x4")), Some(4));
        assert_eq!(blocked_on(&line(libc::SYS_sendto, "0x1f")), Some(31));
        assert_eq!(blocked_on(&line(libc::SYS_futex, "0x4")), None);
        assert_eq!(blocked_on("running"), None);
        assert_eq!(blocked_on("-1 0x7ffd 0x7f"), None);
        assert_eq!(blocked_on(""), None);
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
