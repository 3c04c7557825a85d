//! Tests only, debug builds only (`olm __net-probe`): try to reach the
//! network from inside the sandbox this process runs in, and report what
//! the kernel answered to each attempt. Release builds do not contain it.

use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use serde_json::{json, Map, Value};

/// What one attempt gave: `{"ok": true}` or `{"ok": false, "errno": N, "error": TEXT}`.
fn outcome<T>(result: std::io::Result<T>) -> Value {
    match result {
        Ok(_) => json!({"ok": true}),
        Err(error) => json!({
            "ok": false,
            "errno": error.raw_os_error(),
            "error": error.to_string(),
        }),
    }
}

/// Try to reach `target` (an IPv4 address): a TCP connection, a UDP
/// datagram, and a TCP bind on another port.
///
/// With `listen` (the sandbox of `olm serve --port PORT`): first bind PORT
/// as serve does, make a TCP socket and try to bind a second one elsewhere
/// (Landlock's bind rule), close the network as serve does once it listens,
/// then try to connect with the socket made before (Landlock's connect rule
/// alone stands between it and `target`).
pub fn probe(target: SocketAddr, listen: Option<u16>) -> Value {
    let SocketAddr::V4(target) = target else {
        return json!({"error": "IPv4 targets only"});
    };
    let mut report = Map::new();
    let mut keep = Vec::new();
    if let Some(port) = listen {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => {
                report.insert("listener".into(), json!({"ok": true}));
                keep.push(listener);
            }
            Err(error) => {
                report.insert("listener".into(), outcome::<()>(Err(error)));
            }
        }
        let early = tcp_socket();
        let elsewhere = tcp_socket()
            .and_then(|socket| bind(&socket, SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)));
        report.insert("bind_other_port".into(), outcome(elsewhere));
        report.insert(
            "close_network".into(),
            outcome(super::close_network().map_err(std::io::Error::other)),
        );
        let connected = early.and_then(|socket| connect(&socket, target));
        report.insert("early_socket_connect".into(), outcome(connected));
    }
    report.insert(
        "tcp_connect".into(),
        outcome(TcpStream::connect_timeout(
            &SocketAddr::V4(target),
            Duration::from_secs(2),
        )),
    );
    let udp = UdpSocket::bind("0.0.0.0:0").and_then(|socket| socket.send_to(b"olm", target));
    report.insert("udp_send".into(), outcome(udp));
    report.insert("tcp_bind".into(), outcome(TcpListener::bind("127.0.0.1:0")));
    drop(keep);
    Value::Object(report)
}

/// An unconnected, unbound IPv4 TCP socket (std has none).
fn tcp_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; a valid descriptor is owned below.
    let descriptor =
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if descriptor < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(descriptor) })
}

fn socket_address(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const ADDRESS_SIZE: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

fn bind(socket: &OwnedFd, address: SocketAddrV4) -> std::io::Result<()> {
    let address = socket_address(address);
    // SAFETY: `address` is a valid sockaddr_in of ADDRESS_SIZE bytes.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::addr_of!(address).cast(),
            ADDRESS_SIZE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn connect(socket: &OwnedFd, address: SocketAddrV4) -> std::io::Result<()> {
    let address = socket_address(address);
    // SAFETY: `address` is a valid sockaddr_in of ADDRESS_SIZE bytes.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            std::ptr::addr_of!(address).cast(),
            ADDRESS_SIZE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
