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
        // `--host ::2` is matched by `Host: [::2]:PORT`.
        let bare = |host: &str| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        };
        LOOPBACK_HOSTS.contains(&name.as_str())
            || self
                .extra_hosts
                .iter()
                .any(|extra| bare(extra).eq_ignore_ascii_case(&bare(&name)))
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

/// Why a request's `Host` cannot be trusted to name anything (RFC 9112
/// §3.2): answered with 400 before the allowlist looks at the name. The
/// messages never repeat the header, so a client cannot make the server
/// echo (or log) what it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request has no Host header; HTTP/1.1 requires exactly one")]
    Missing,
    #[error("the request has {0} Host headers; exactly one is allowed")]
    Repeated(usize),
    #[error("invalid Host header: {0}")]
    Invalid(AuthorityError),
    #[error("invalid request target: {0}")]
    InvalidTarget(AuthorityError),
    #[error("the request target names a scheme other than http or https")]
    TargetScheme,
    #[error("the request target names another host or port than the Host header")]
    Mismatch,
}

/// What is wrong with a `host[:port]` (RFC 3986 §3.2.2, §3.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("it is not ASCII text")]
    NotText,
    #[error("the port after the colon is empty")]
    EmptyPort,
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
    #[error("a colon outside brackets (an IPv6 address needs [brackets])")]
    SecondColon,
    #[error("the brackets do not hold an IPv6 address")]
    BadLiteral,
    #[error("text around the [IPv6] address")]
    AroundLiteral,
    #[error("the host name has a character a host name cannot have")]
    BadCharacter,
}

/// A parsed `host[:port]`: the name as sent (IPv6 literals keep their
/// brackets) and the port, if one was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    pub name: &'a str,
    pub port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// Parse a `Host` value or the authority of an absolute request target:
    /// `reg-name[:port]`, `IPv4[:port]` or `[IPv6][:port]`. An empty name
    /// is well-formed (the allowlist refuses it); userinfo (`user@`) is not.
    pub fn parse(text: &'a str) -> Result<Self, AuthorityError> {
        let (name, port) = if let Some(literal) = text.strip_prefix('[') {
            let end = literal.find(']').ok_or(AuthorityError::BadLiteral)?;
            literal[..end]
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| AuthorityError::BadLiteral)?;
            let after = &literal[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(AuthorityError::AroundLiteral),
            };
            (&text[..end + 2], port)
        } else {
            if text.contains(['[', ']']) {
                return Err(AuthorityError::AroundLiteral);
            }
            match text.split_once(':') {
                Some((_, port)) if port.contains(':') => return Err(AuthorityError::SecondColon),
                Some((name, port)) => (name, Some(port)),
                None => (text, None),
            }
        };
        if !name.starts_with('[') && !is_reg_name(name) {
            return Err(AuthorityError::BadCharacter);
        }
        let port = port.map(parse_port).transpose()?;
        Ok(Self { name, port })
    }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`; IPv4 addresses
/// are made of these characters too.
fn is_reg_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let escape = bytes.get(index + 1..index + 3);
            if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            index += 3;
            continue;
        }
        let allowed = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte);
        if !allowed {
            return false;
        }
        index += 1;
    }
    true
}

/// `port = *DIGIT`, here 1 to 5 digits worth at most 65535.
fn parse_port(port: &str) -> Result<u16, AuthorityError> {
    if port.is_empty() {
        return Err(AuthorityError::EmptyPort);
    }
    if port.len() > 5 || !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(AuthorityError::BadPort);
    }
    port.parse().map_err(|_| AuthorityError::BadPort)
}

/// RFC 9112 §3.2's checks on a request: exactly one `Host` in an HTTP/1.1
/// request (at most one in HTTP/1.0), a well-formed value, and, when the
/// request target is in absolute form (`GET http://host:port/path`), an
/// authority that names the same host and port as the `Host` header (the
/// server would otherwise have to choose which of the two to believe).
///
/// `hosts` are the raw `Host` values in the order received; `target` is
/// the absolute target's scheme and authority, if it has them.
pub fn check_host(
    hosts: &[&[u8]],
    requires_host: bool,
    target: Option<(&str, &str)>,
) -> Result<(), HostError> {
    let host = match hosts {
        [] if requires_host => return Err(HostError::Missing),
        [] => None,
        [host] => Some(
            std::str::from_utf8(host)
                .map_err(|_| HostError::Invalid(AuthorityError::NotText))
                .and_then(|host| Authority::parse(host).map_err(HostError::Invalid))?,
        ),
        many => return Err(HostError::Repeated(many.len())),
    };
    let Some((scheme, authority)) = target else {
        return Ok(());
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(HostError::TargetScheme),
    };
    let target = Authority::parse(authority).map_err(HostError::InvalidTarget)?;
    let same = host.is_some_and(|host| {
        host.name.eq_ignore_ascii_case(target.name)
            && host.port.unwrap_or(default_port) == target.port.unwrap_or(default_port)
    });
    if same {
        Ok(())
    } else {
        Err(HostError::Mismatch)
    }
}

/// The name part of a well-formed `Host` value, without IPv6 brackets
/// being removed (`[::1]`); `None` when malformed or empty.
fn host_name(host: &str) -> Option<&str> {
    let name = Authority::parse(host).ok()?.name;
    (!name.is_empty()).then_some(name)
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
    fn configured_ipv6_host_matches_its_bracketed_form() {
        let policy = AccessPolicy {
            extra_hosts: vec!["fd00::2".into()],
            ..loopback()
        };
        assert!(policy.host_allowed(Some("[fd00::2]:8080")));
        assert!(policy.host_allowed(Some("[FD00::2]")));
        assert!(!policy.host_allowed(Some("[fd00::3]:8080")));
    }

    fn one_host(host: &str) -> Result<(), HostError> {
        check_host(&[host.as_bytes()], true, None)
    }

    /// T-G6: RFC 9112 §3.2's well-formed values pass (the allowlist
    /// decides about them), whatever their name.
    #[test]
    fn well_formed_hosts_pass_the_syntax_check() {
        for host in [
            "localhost:11435",
            "127.0.0.1:11435",
            "[::1]:11435",
            "[::1]",
            "localhost",
            "localhost:0",
            "localhost:65535",
            "localhost:00080",
            "evil.example:11435",
            "attacker.localhost",
            ":11435",
            "",
            "[fe80::1:2]:1",
            "xn--bcher-kva.example",
            "a%2Db",
        ] {
            assert_eq!(one_host(host), Ok(()), "{host:?}");
        }
    }

    /// T-G6: an invalid port, a second colon, garbage around an IPv6
    /// literal, characters no host name has: 400, whatever the name.
    #[test]
    fn malformed_hosts_are_invalid() {
        use AuthorityError::*;
        for (host, why) in [
            ("localhost:", EmptyPort),
            ("[::1]:", EmptyPort),
            ("localhost:abc", BadPort),
            ("localhost:65536", BadPort),
            ("localhost:99999", BadPort),
            ("localhost:123456", BadPort),
            ("localhost:-1", BadPort),
            ("localhost:+80", BadPort),
            ("localhost:8 0", BadPort),
            ("[::1]:1e3", BadPort),
            ("localhost:80:80", SecondColon),
            ("::1", SecondColon),
            ("::1:11435", SecondColon),
            ("[::1]x", AroundLiteral),
            ("x[::1]:80", AroundLiteral),
            ("[::1]]:80", AroundLiteral),
            ("localhost]:80", AroundLiteral),
            ("[::1", BadLiteral),
            ("[localhost]:80", BadLiteral),
            ("[127.0.0.1]:80", BadLiteral),
            ("[]:80", BadLiteral),
            ("[[::1]]:80", BadLiteral),
            ("user@localhost:80", BadCharacter),
            ("local host", BadCharacter),
            ("localhost/x", BadCharacter),
            ("a%zzb", BadCharacter),
            ("a%2", BadCharacter),
        ] {
            assert_eq!(one_host(host), Err(HostError::Invalid(why)), "{host:?}");
            assert!(!loopback().host_allowed(Some(host)), "{host:?}");
        }
        assert_eq!(
            check_host(&[b"local\xffhost"], true, None),
            Err(HostError::Invalid(AuthorityError::NotText))
        );
    }

    #[test]
    fn host_must_be_present_once() {
        assert_eq!(check_host(&[], true, None), Err(HostError::Missing));
        // HTTP/1.0 may leave it out (the allowlist then refuses the request).
        assert_eq!(check_host(&[], false, None), Ok(()));
        let same: &[&[u8]] = &[b"localhost:1", b"localhost:1"];
        assert_eq!(check_host(same, true, None), Err(HostError::Repeated(2)));
        assert_eq!(check_host(same, false, None), Err(HostError::Repeated(2)));
    }

    /// An absolute request target must name what the Host header names.
    #[test]
    fn absolute_targets_must_agree_with_host() {
        let host: &[&[u8]] = &[b"localhost:11435"];
        for (scheme, authority) in [
            ("http", "localhost:11435"),
            ("HTTP", "LocalHost:11435"),
            ("https", "localhost:11435"),
        ] {
            assert_eq!(check_host(host, true, Some((scheme, authority))), Ok(()));
        }
        assert_eq!(
            check_host(&[b"localhost"], true, Some(("http", "localhost:80"))),
            Ok(())
        );
        for (scheme, authority) in [
            ("http", "evil.example:11435"),
            ("http", "localhost:11436"),
            ("http", "localhost"),
            ("http", "127.0.0.1:11435"),
        ] {
            assert_eq!(
                check_host(host, true, Some((scheme, authority))),
                Err(HostError::Mismatch),
                "{authority}"
            );
        }
        assert_eq!(
            check_host(host, true, Some(("ftp", "localhost:11435"))),
            Err(HostError::TargetScheme)
        );
        assert_eq!(
            check_host(host, true, Some(("http", "user@localhost:11435"))),
            Err(HostError::InvalidTarget(AuthorityError::BadCharacter))
        );
        // The Host header is checked first, and is required all the same.
        assert_eq!(
            check_host(&[], true, Some(("http", "localhost:11435"))),
            Err(HostError::Missing)
        );
    }

    #[test]
    fn host_errors_do_not_repeat_the_header() {
        let message = one_host("evil\u{7f}:99999").map_err(|error| error.to_string());
        assert!(message.is_err_and(|message| !message.contains("evil")));
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
