//! Who may talk to the server: the `Host` allowlist (DNS rebinding), the
//! browser `Origin` allowlist (CORS, and refusing cross-site "simple"
//! requests), and the API key.
//!
//! Owns: these decisions as pure functions over header values, tested
//! without a server. Must not touch: routing, the engine.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Access rules, fixed at startup.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Host names (without port) accepted besides the loopback names; empty
    /// with `any_host` when bound to a wildcard address behind a key.
    pub extra_hosts: Vec<String>,
    /// Accept any `Host` (a wildcard bind, which requires an API key).
    pub any_host: bool,
    /// Browser origins allowed to call the API (`--cors-origin`), exact.
    pub origins: Vec<String>,
    /// The API key; `None` on a loopback bind without one.
    pub api_key: Option<String>,
}

/// Host names a loopback server answers to.
const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

impl AccessPolicy {
    /// Whether a request's `Host` header names this server. A missing or
    /// empty host is refused.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(name) = host.and_then(host_name) else {
            return false;
        };
        if self.any_host {
            return true;
        }
        let name = name.to_ascii_lowercase();
        LOOPBACK_HOSTS.contains(&name.as_str())
            || self
                .extra_hosts
                .iter()
                .any(|extra| extra.eq_ignore_ascii_case(&name))
    }

    /// Whether a browser `Origin` may call the API. Requests without an
    /// `Origin` (curl, SDKs) are not browsers and pass.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(origin) => {
                let origin = origin.trim_end_matches('/');
                self.origins
                    .iter()
                    .any(|allowed| allowed.trim_end_matches('/') == origin)
            }
        }
    }

    /// Whether the `Authorization` header carries the key (always true
    /// without a key). Compared in constant time over SHA-256 digests, so
    /// neither the content nor the length of the key leaks through timing.
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let Some(given) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else {
            return false;
        };
        keys_match(given, key)
    }
}

/// Constant-time comparison of two keys.
pub fn keys_match(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.ct_eq(&expected).into()
}

/// The name part of a `Host` header value: `name[:port]` or `[v6][:port]`.
fn host_name(host: &str) -> Option<&str> {
    let name = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        if !(rest.is_empty() || is_port_suffix(rest)) {
            return None;
        }
        &host[..=end]
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port_suffix(&format!(":{port}")) => name,
            Some(_) => return None,
            None => host,
        }
    };
    (!name.is_empty()).then_some(name)
}

fn is_port_suffix(text: &str) -> bool {
    text.strip_prefix(':').is_some_and(|port| {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Whether `host` (a `--host` value) is a loopback address or name.
pub fn is_loopback(host: &str) -> bool {
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    trimmed.eq_ignore_ascii_case("localhost")
        || trimmed
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Whether `host` binds every interface (`0.0.0.0`, `::`).
pub fn is_wildcard(host: &str) -> bool {
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    trimmed
        .parse::<std::net::IpAddr>()
        .is_ok_and(|address| address.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> AccessPolicy {
        AccessPolicy::default()
    }

    #[test]
    fn loopback_names_with_and_without_port_are_allowed() {
        let policy = loopback();
        for host in [
            "localhost:11435",
            "127.0.0.1:11435",
            "[::1]:11435",
            "localhost",
            "LOCALHOST:1",
        ] {
            assert!(policy.host_allowed(Some(host)), "{host}");
        }
    }

    /// T-D2: DNS rebinding names and empty hosts are refused.
    #[test]
    fn rebinding_hosts_are_refused() {
        let policy = loopback();
        for host in [
            "evil.example:11435",
            "127.0.0.1.nip.io",
            "attacker.localhost",
            "x.internal",
            "x.local",
            ":11435",
            "",
            "localhost:abc",
            "[::1]x",
            "[::2]:80",
        ] {
            assert!(!policy.host_allowed(Some(host)), "{host:?}");
        }
        assert!(!policy.host_allowed(None));
    }

    #[test]
    fn configured_host_is_allowed() {
        let policy = AccessPolicy {
            extra_hosts: vec!["box.lan".into()],
            ..loopback()
        };
        assert!(policy.host_allowed(Some("box.lan:8080")));
        assert!(!policy.host_allowed(Some("other.lan:8080")));
    }

    #[test]
    fn origins_must_match_exactly() {
        let policy = AccessPolicy {
            origins: vec!["http://localhost:3000".into()],
            ..loopback()
        };
        assert!(policy.origin_allowed(None));
        assert!(policy.origin_allowed(Some("http://localhost:3000")));
        assert!(!policy.origin_allowed(Some("http://localhost:3001")));
        assert!(!policy.origin_allowed(Some("https://evil.example")));
        assert!(!policy.origin_allowed(Some("null")));
        assert!(!loopback().origin_allowed(Some("http://localhost:3000")));
    }

    /// T-D1: missing header, wrong key, `Bearer` alone, trailing space.
    #[test]
    fn api_key_is_checked_exactly() {
        let policy = AccessPolicy {
            api_key: Some("secret".into()),
            ..loopback()
        };
        assert!(policy.authorized(Some("Bearer secret")));
        for header in [
            None,
            Some("Bearer wrong"),
            Some("Bearer "),
            Some("Bearer"),
            Some("Bearer secret "),
            Some("secret"),
            Some("bearer secret"),
        ] {
            assert!(!policy.authorized(header), "{header:?}");
        }
        assert!(loopback().authorized(None));
    }

    #[test]
    fn comparator_compares_whole_keys() {
        assert!(keys_match("abc", "abc"));
        assert!(!keys_match("abc", "abd"));
        assert!(!keys_match("ab", "abc"));
        assert!(!keys_match("", "abc"));
    }

    #[test]
    fn bind_addresses_are_classified() {
        assert!(
            is_loopback("127.0.0.1")
                && is_loopback("::1")
                && is_loopback("[::1]")
                && is_loopback("localhost")
        );
        assert!(!is_loopback("0.0.0.0") && !is_loopback("192.168.1.2"));
        assert!(is_wildcard("0.0.0.0") && is_wildcard("::"));
        assert!(!is_wildcard("127.0.0.1"));
    }
}
