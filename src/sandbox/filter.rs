//! The seccomp layer of the sandbox, compiled by `seccompiler` (no
//! hand-written BPF). It refuses with `EACCES`:
//!
//! - `socket()` of any family but Unix and netlink (local only): no UDP, so
//!   no DNS, no raw or packet sockets, whatever Landlock covers; with
//!   [`Policy::tcp_sockets`] TCP stream sockets stay allowed, and Landlock
//!   decides which port they may bind or connect to;
//! - sending with `MSG_FASTOPEN`, which connects without `connect()`;
//! - `io_uring_setup`: io_uring makes sockets and connects without the
//!   system calls this filter sees.
//!
//! Anything else is allowed: this filter only takes the network away. A
//! system call of another architecture (32-bit x86 on x86-64) ends the
//! process, as seccompiler's architecture check does.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::{Policy, SandboxError};

/// `MSG_FASTOPEN` (linux/socket.h).
const MSG_FASTOPEN: u64 = 0x2000_0000;
/// The socket type bits of `socket()`'s second argument (the rest are flags).
const SOCKET_TYPE_MASK: u64 = 0xf;
/// x32 system calls on x86-64 are the same numbers with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// Install the filter for `policy` on this thread (and what it starts).
pub fn install(policy: &Policy) -> Result<(), SandboxError> {
    let program = compile(&refusals(policy))?;
    seccompiler::apply_filter(&program).map_err(|error| SandboxError::Install(error.to_string()))
}

/// No new network socket at all, in every thread of the process.
pub fn close_network() -> Result<(), SandboxError> {
    let program = compile(&refusals(&Policy::offline()))?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|error| SandboxError::Install(error.to_string()))
}

/// Whether this kernel has seccomp filters.
pub fn available() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer; it answers 0, 1 or 2, or -1
    // with EINVAL on a kernel built without seccomp.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    mode >= 0
        && std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|status| status.contains("Seccomp:"))
}

fn condition(
    argument: u8,
    operator: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(argument, SeccompCmpArgLen::Dword, operator, value)
        .map_err(|error| SandboxError::Build(error.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conditions).map_err(|error| SandboxError::Build(error.to_string()))
}

/// System call → the argument patterns refused (an empty list: always).
type Refusals = BTreeMap<i64, Vec<Vec<(u8, SeccompCmpOp, u64)>>>;

/// What `policy` refuses, as plain data (tested without a kernel).
fn refusals(policy: &Policy) -> Refusals {
    let family = |value: libc::c_int| u64::try_from(value).unwrap_or(0);
    // Any family but the local ones (and, when allowed, TCP's two).
    let mut other_family = vec![
        (0, SeccompCmpOp::Ne, family(libc::AF_UNIX)),
        (0, SeccompCmpOp::Ne, family(libc::AF_NETLINK)),
    ];
    let mut socket = Vec::new();
    if policy.tcp_sockets {
        other_family.push((0, SeccompCmpOp::Ne, family(libc::AF_INET)));
        other_family.push((0, SeccompCmpOp::Ne, family(libc::AF_INET6)));
        let stream = family(libc::SOCK_STREAM);
        let datagram = family(libc::SOCK_DGRAM);
        for inet in [libc::AF_INET, libc::AF_INET6] {
            for kind in 0..=SOCKET_TYPE_MASK {
                if kind == stream || (policy.name_lookup && kind == datagram) {
                    continue;
                }
                socket.push(vec![
                    (0, SeccompCmpOp::Eq, family(inet)),
                    (1, SeccompCmpOp::MaskedEq(SOCKET_TYPE_MASK), kind),
                ]);
            }
        }
    }
    socket.push(other_family);
    let fast_open = |flags: u8| {
        vec![vec![(
            flags,
            SeccompCmpOp::MaskedEq(MSG_FASTOPEN),
            MSG_FASTOPEN,
        )]]
    };
    let mut refusals = Refusals::new();
    refusals.insert(libc::SYS_socket, socket);
    refusals.insert(libc::SYS_sendto, fast_open(3));
    refusals.insert(libc::SYS_sendmsg, fast_open(2));
    refusals.insert(libc::SYS_sendmmsg, fast_open(3));
    refusals.insert(libc::SYS_io_uring_setup, Vec::new());
    #[cfg(target_arch = "x86_64")]
    {
        let x32: Vec<(i64, Vec<_>)> = refusals
            .iter()
            .map(|(number, patterns)| (number | X32_SYSCALL_BIT, patterns.clone()))
            .collect();
        refusals.extend(x32);
    }
    refusals
}

fn compile(refusals: &Refusals) -> Result<BpfProgram, SandboxError> {
    let mut rules = BTreeMap::new();
    for (number, patterns) in refusals {
        let mut chain = Vec::new();
        for pattern in patterns {
            let conditions = pattern
                .iter()
                .map(|(argument, operator, value)| condition(*argument, operator.clone(), *value))
                .collect::<Result<Vec<_>, _>>()?;
            chain.push(rule(conditions)?);
        }
        rules.insert(*number, chain);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|error| SandboxError::Build(error.to_string()))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(u32::try_from(libc::EACCES).unwrap_or(13)),
        arch,
    )
    .map_err(|error| SandboxError::Build(error.to_string()))?;
    BpfProgram::try_from(filter).map_err(|error| SandboxError::Build(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `refusals` refuse `socket(family, kind)`.
    fn refuses_socket(refusals: &Refusals, family: libc::c_int, kind: libc::c_int) -> bool {
        let arguments = [family as u64, kind as u64];
        refusals[&libc::SYS_socket].iter().any(|pattern| {
            pattern.iter().all(|(argument, operator, value)| {
                let actual = arguments[usize::from(*argument)];
                match operator {
                    SeccompCmpOp::Eq => actual == *value,
                    SeccompCmpOp::Ne => actual != *value,
                    SeccompCmpOp::MaskedEq(mask) => actual & mask == *value,
                    _ => unreachable!("not used by the filter"),
                }
            })
        })
    }

    #[test]
    fn offline_refuses_every_network_socket_and_keeps_local_ones() {
        let offline = refusals(&Policy::offline());
        for family in [
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_PACKET,
            libc::AF_VSOCK,
        ] {
            for kind in [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_RAW] {
                assert!(refuses_socket(&offline, family, kind), "{family} {kind}");
            }
        }
        assert!(!refuses_socket(&offline, libc::AF_UNIX, libc::SOCK_STREAM));
        assert!(!refuses_socket(&offline, libc::AF_NETLINK, libc::SOCK_RAW));
    }

    #[test]
    fn a_listener_may_make_tcp_sockets_only() {
        let serve = refusals(&Policy::listener(0));
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        assert!(!refuses_socket(
            &serve,
            libc::AF_INET,
            libc::SOCK_STREAM | flags
        ));
        assert!(!refuses_socket(&serve, libc::AF_INET6, libc::SOCK_STREAM));
        assert!(refuses_socket(
            &serve,
            libc::AF_INET,
            libc::SOCK_DGRAM | flags
        ));
        assert!(refuses_socket(&serve, libc::AF_INET6, libc::SOCK_RAW));
        assert!(refuses_socket(&serve, libc::AF_PACKET, libc::SOCK_RAW));
        let lookup = refusals(&Policy::client(80, true));
        assert!(!refuses_socket(&lookup, libc::AF_INET, libc::SOCK_DGRAM));
        assert!(refuses_socket(&lookup, libc::AF_INET, libc::SOCK_RAW));
    }

    #[test]
    fn fast_open_and_io_uring_are_refused_and_the_filter_compiles() {
        let offline = refusals(&Policy::offline());
        assert!(offline[&libc::SYS_io_uring_setup].is_empty());
        assert_eq!(
            offline[&libc::SYS_sendto][0][0],
            (3, SeccompCmpOp::MaskedEq(MSG_FASTOPEN), MSG_FASTOPEN)
        );
        #[cfg(target_arch = "x86_64")]
        assert!(offline.contains_key(&(libc::SYS_socket | X32_SYSCALL_BIT)));
        assert!(!compile(&offline).expect("compiles").is_empty());
        assert!(!compile(&refusals(&Policy::listener(8080)))
            .expect("compiles")
            .is_empty());
    }
}
