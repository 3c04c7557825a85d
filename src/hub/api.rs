//! Sending requests to a hub (redirects, credentials only to the hub's own
//! origin, retries, telling "unreachable" from "answered"), and the Hugging
//! Face API: the file listing of a repo and the headers of a file's resolve
//! URL. ModelScope's API is in `modelscope.rs`.

use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{
    Hub, HubError, PullReporter, MAX_ATTEMPTS, MAX_FILE_BYTES, MAX_JSON_BYTES, MAX_REDIRECTS,
    MIN_BYTES_PER_WINDOW,
};
use crate::store::names::{check_repo_file_name, escaped, is_commit, is_sha256};
use crate::store::{HubKind, RepoId};

/// Resolve `netloc` (`host:port`), giving up after `timeout`: the system
/// resolver can take much longer to say a name does not resolve, and an
/// unreachable hub must be decided within seconds. The lookup thread is
/// left to finish on its own.
pub(crate) fn resolve_within(netloc: &str, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    let (sender, receiver) = mpsc::channel();
    let owned = netloc.to_owned();
    thread::Builder::new().name("dns".into()).spawn(move || {
        let _ = sender.send(owned.to_socket_addrs().map(Iterator::collect));
    })?;
    receiver.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no DNS answer within {} s", timeout.as_secs()),
        ))
    })
}

/// A transport failure as one short phrase without the URL (the error
/// names the URL once), and whether it means the hub cannot be reached at
/// all: the name did not resolve or no connection could be made.
fn describe_transport(transport: &ureq::Transport) -> (String, bool) {
    let (phrase, unreachable) = match transport.kind() {
        ureq::ErrorKind::Dns => ("DNS lookup failed", true),
        ureq::ErrorKind::ConnectionFailed => ("connection failed", true),
        ureq::ErrorKind::Io => ("connection error", false),
        ureq::ErrorKind::TooManyRedirects => ("too many redirects", false),
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => {
            ("the hub's answer is not valid HTTP", false)
        }
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => ("invalid URL", false),
        _ => ("request failed", false),
    };
    let detail = match (std::error::Error::source(transport), transport.message()) {
        (Some(source), _) => format!(": {source}"),
        (None, Some(message)) => format!(": {message}"),
        (None, None) => String::new(),
    };
    (format!("{phrase}{detail}"), unreachable)
}

/// A file in a repo's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path inside the repo, validated.
    pub name: String,
    pub size: u64,
    /// The LFS sha256, when the file is stored in LFS.
    pub sha256: Option<String>,
}

/// What the hub says about a file's bytes (Hugging Face: the resolve URL's
/// headers; ModelScope: its listing).
#[derive(Debug, Clone)]
pub struct FileHead {
    /// The revision the file was resolved at: a commit (40 hex digits) on
    /// Hugging Face, the revision asked for (`master`) on ModelScope.
    pub commit: String,
    /// The sha256 of the content (64 hex digits).
    pub sha256: String,
    pub size: u64,
    /// Where to GET the bytes.
    pub url: String,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct LfsInfo {
    oid: String,
    size: u64,
}

/// Why one attempt failed, and whether another may succeed.
pub(crate) enum Failure {
    Fatal(HubError),
    Retry(HubError, Option<Duration>),
    /// A body that came too slowly ([`Pace`]): tried again, and counted
    /// against [`MAX_ATTEMPTS`] even when some bytes arrived, so a hub that
    /// drips cannot keep a pull going for ever.
    Slow(HubError),
}

impl Hub {
    /// Every file of `repo` at `main` on Hugging Face, with sizes and LFS hashes.
    pub(super) fn hf_list_files(
        &self,
        repo: &RepoId,
        reporter: &dyn PullReporter,
    ) -> Result<Vec<RemoteFile>, HubError> {
        let url = format!(
            "{}/api/models/{repo}/tree/main?recursive=true",
            self.endpoint
        );
        let response = self
            .send_with_retries("GET", &url, None, reporter)
            .map_err(|error| match error {
                HubError::Status { status: 404, .. } => HubError::RepoNotFound(repo.to_string()),
                other => other,
            })?;
        let entries: Vec<TreeEntry> = self.read_json(response, &url)?;
        let mut files = Vec::new();
        for entry in entries.into_iter().filter(|entry| entry.kind == "file") {
            check_repo_file_name(&entry.path).map_err(|_| HubError::BadMetadata {
                what: "file name",
                value: escaped(&entry.path),
            })?;
            let (size, sha256) = match entry.lfs {
                Some(lfs) if is_sha256(&lfs.oid) => (lfs.size, Some(lfs.oid)),
                Some(lfs) => {
                    return Err(HubError::BadMetadata {
                        what: "LFS object id",
                        value: escaped(&lfs.oid),
                    })
                }
                None => (entry.size, None),
            };
            check_size(size)?;
            files.push(RemoteFile {
                name: entry.path,
                size,
                sha256,
            });
        }
        Ok(files)
    }

    /// The commit, sha256, size and download URL of one Hugging Face file.
    pub(super) fn hf_head_file(
        &self,
        repo: &RepoId,
        name: &str,
        reporter: &dyn PullReporter,
    ) -> Result<FileHead, HubError> {
        let url = format!(
            "{}/{repo}/resolve/main/{}",
            self.endpoint,
            encode_path(name)
        );
        let response = self.with_retries(reporter, || self.send_once("HEAD", &url, None, 0))?;
        let commit = response
            .header("x-repo-commit")
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !is_commit(&commit) {
            return Err(HubError::BadMetadata {
                what: "commit",
                value: escaped(&commit),
            });
        }
        let etag = response
            .header("x-linked-etag")
            .or_else(|| response.header("etag"))
            .unwrap_or_default();
        let sha256 = etag
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned();
        if !is_sha256(&sha256) {
            return Err(HubError::BadMetadata {
                what: "etag (expected a sha256)",
                value: escaped(&sha256),
            });
        }
        let size_text = response
            .header("x-linked-size")
            .or_else(|| response.header("content-length"))
            .unwrap_or_default();
        let size = size_text
            .trim()
            .parse::<u64>()
            .map_err(|_| HubError::BadMetadata {
                what: "size",
                value: escaped(size_text),
            })?;
        check_size(size)?;
        // The download URL the hub names is held to the same rules as a
        // redirect followed (it was taken as is: https could become http).
        let download = match response.header("location") {
            Some(location) if (300..400).contains(&response.status()) => {
                redirect_target(&url, location)?
            }
            _ => url,
        };
        Ok(FileHead {
            commit,
            sha256,
            size,
            url: download,
        })
    }

    /// The longest a request without a body range (a listing, a file's
    /// headers) may take from connecting to its last byte: twice the stall
    /// timeout. Listings are small; a hub that drips one is stuck.
    pub(crate) fn metadata_deadline(&self) -> Duration {
        self.stall_timeout * 2
    }

    /// One request, following up to [`MAX_REDIRECTS`] redirects when `follow`
    /// is non-zero. A request for metadata (no `range`) must be over within
    /// [`Hub::metadata_deadline`], headers and body. The token goes only to the endpoint's own origin (on
    /// ModelScope also as the `m_session_id` cookie, as the client sends
    /// it); a redirect from https to http is refused.
    pub(crate) fn send_once(
        &self,
        method: &str,
        url: &str,
        range: Option<(u64, u64)>,
        follow: u32,
    ) -> Result<ureq::Response, Failure> {
        let mut current = url.to_owned();
        for _ in 0..=follow {
            let mut request = self.agent.request(method, &current);
            if range.is_none() {
                request = request.timeout(self.metadata_deadline());
            }
            if let (Some(token), true) = (&self.token, origin(&current) == origin(&self.endpoint)) {
                request = request.set("Authorization", &format!("Bearer {token}"));
                if self.kind == HubKind::ModelScope {
                    request = request.set("Cookie", &format!("m_session_id={token}"));
                }
            }
            if let Some((start, end)) = range {
                request = request.set("Range", &format!("bytes={start}-{}", end.saturating_sub(1)));
            }
            let response = match request.call() {
                Ok(response) => response,
                Err(ureq::Error::Status(status, response)) => {
                    return Err(status_failure(self.kind, &current, status, &response))
                }
                Err(ureq::Error::Transport(transport)) => {
                    let (message, unreachable) = describe_transport(&transport);
                    return Err(Failure::Retry(
                        HubError::Network {
                            url: current,
                            message,
                            unreachable,
                        },
                        None,
                    ));
                }
            };
            let status = response.status();
            if !(300..400).contains(&status) || follow == 0 {
                return Ok(response);
            }
            let Some(location) = response.header("location") else {
                return Err(Failure::Fatal(HubError::Status {
                    url: current,
                    status,
                    hub: self.kind,
                }));
            };
            current = redirect_target(&current, location).map_err(Failure::Fatal)?;
        }
        Err(Failure::Fatal(HubError::Network {
            url: url.to_owned(),
            message: format!("more than {MAX_REDIRECTS} redirects"),
            unreachable: false,
        }))
    }

    pub(super) fn send_with_retries(
        &self,
        method: &str,
        url: &str,
        range: Option<(u64, u64)>,
        reporter: &dyn PullReporter,
    ) -> Result<ureq::Response, HubError> {
        self.with_retries(reporter, || {
            self.send_once(method, url, range, MAX_REDIRECTS)
        })
    }

    /// Run `attempt` until it succeeds, fails fatally, or [`MAX_ATTEMPTS`]
    /// are spent. A hub that cannot be reached at all is not tried again:
    /// that answer comes at once, for `--source auto` to try the other hub.
    pub(crate) fn with_retries<T>(
        &self,
        reporter: &dyn PullReporter,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, HubError> {
        let mut failures = 0;
        loop {
            if self.cancelled() {
                return Err(HubError::Interrupted);
            }
            let (error, retry_after) = match attempt() {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry(error, _)) if error.is_unreachable() => return Err(error),
                Err(Failure::Retry(error, retry_after)) => (error, retry_after),
                Err(Failure::Slow(error)) => (error, None),
            };
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                return Err(error);
            }
            let delay = retry_after.unwrap_or_else(|| self.backoff(failures));
            reporter.retrying(&error.to_string(), delay);
            self.sleep(delay)?;
        }
    }

    /// Exponential back-off: base, 2×base, 4×base, … at most 30 s.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(10);
        (self.retry_base * factor).min(Duration::from_secs(30))
    }

    /// Sleep, waking early with [`HubError::Interrupted`] on Ctrl-C.
    pub(crate) fn sleep(&self, delay: Duration) -> Result<(), HubError> {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if self.cancelled() {
                return Err(HubError::Interrupted);
            }
            thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
        Ok(())
    }
}

fn status_failure(hub: HubKind, url: &str, status: u16, response: &ureq::Response) -> Failure {
    let error = match (hub, status) {
        (HubKind::HuggingFace, 401 | 403) => {
            return Failure::Fatal(HubError::Unauthorized(url.to_owned()))
        }
        _ => HubError::Status {
            url: url.to_owned(),
            status,
            hub,
        },
    };
    if status == 429 || status >= 500 {
        let retry_after = response
            .header("retry-after")
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|seconds| Duration::from_secs(seconds.min(60)));
        Failure::Retry(error, retry_after)
    } else {
        Failure::Fatal(error)
    }
}

impl Hub {
    /// A JSON answer of at most [`MAX_JSON_BYTES`], read in chunks so that
    /// Ctrl-C is seen between them (the request's deadline bounds the time).
    pub(super) fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: ureq::Response,
        url: &str,
    ) -> Result<T, HubError> {
        let failed = |message: String| HubError::Network {
            url: url.to_owned(),
            message,
            unreachable: false,
        };
        let mut reader = response.into_reader().take(MAX_JSON_BYTES + 1);
        let mut body = Vec::new();
        let mut chunk = [0u8; 64 << 10];
        loop {
            if self.cancelled() {
                return Err(HubError::Interrupted);
            }
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => body.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(failed(error.to_string())),
            }
        }
        if body.len() as u64 > MAX_JSON_BYTES {
            return Err(failed("the answer is larger than 16 MiB".into()));
        }
        serde_json::from_slice(&body)
            .map_err(|error| failed(format!("the answer is not the expected JSON: {error}")))
    }
}

/// Bytes that arrived in the current pace window of one body, and when
/// that window began: a body slower than [`MIN_BYTES_PER_WINDOW`] in any
/// whole window is as good as stalled.
pub(crate) struct Pace {
    window: Duration,
    started: Instant,
    bytes: u64,
}

impl Pace {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Count `bytes` more; an error message when the window that just
    /// ended brought fewer than [`MIN_BYTES_PER_WINDOW`].
    pub(crate) fn add(&mut self, bytes: u64) -> Result<(), String> {
        self.bytes += bytes;
        if self.started.elapsed() < self.window {
            return Ok(());
        }
        let (brought, window) = (self.bytes, self.started.elapsed());
        self.started = Instant::now();
        self.bytes = 0;
        if brought < MIN_BYTES_PER_WINDOW {
            return Err(format!(
                "the hub sent only {brought} bytes in {} s (too slow to finish)",
                window.as_secs()
            ));
        }
        Ok(())
    }
}

/// A file size from a hub, at most [`MAX_FILE_BYTES`].
pub(super) fn check_size(size: u64) -> Result<u64, HubError> {
    if size > MAX_FILE_BYTES {
        return Err(HubError::BadMetadata {
            what: "size (larger than 1 PiB)",
            value: size.to_string(),
        });
    }
    Ok(size)
}

/// Why `endpoint` cannot be a hub's address, if it cannot: it must be an
/// http(s) URL with a host and without a query or fragment.
pub(super) fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(endpoint).map_err(|_| "not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a query or fragment cannot be followed by a path");
    }
    Ok(())
}

/// `url` as messages show it: a user name and password in it (a mirror's
/// credentials in `HF_ENDPOINT`) replaced by `***`.
pub(crate) fn shown_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..authority_start], &rest[at..]),
        None => url.to_owned(),
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|index| index + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url,
    }
}

/// Where a redirect's `Location` leads from `current`: an http(s) URL, and
/// never from https down to http.
fn redirect_target(current: &str, location: &str) -> Result<String, HubError> {
    let refused = |message: &str| HubError::Network {
        url: current.to_owned(),
        message: format!(
            "refused a redirect to '{}': {message}",
            shown_url(&escaped(location))
        ),
        unreachable: false,
    };
    let next = url::Url::parse(current)
        .and_then(|base| base.join(location))
        .map_err(|_| refused("not a URL"))?;
    match (current.starts_with("https://"), next.scheme()) {
        (true, "https") | (false, "http" | "https") => Ok(next.into()),
        (true, "http") => Err(refused("from https to http")),
        _ => Err(refused("not http or https")),
    }
}

/// Percent-encode a query value: everything but unreserved characters
/// (`/` too, as Python's `quote_plus` does).
pub(super) fn encode_query(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Percent-encode a repo file path, keeping `/`.
fn encode_path(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(origin("https://hf.co/a/b"), "https://hf.co");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        let next = |current, location| redirect_target(current, location).ok();
        assert_eq!(
            next("http://h:1/a/b", "/c").as_deref(),
            Some("http://h:1/c")
        );
        assert_eq!(
            next("http://h:1/a/b", "c").as_deref(),
            Some("http://h:1/a/c")
        );
        assert_eq!(
            next("http://h:1/a/b", "https://x/y").as_deref(),
            Some("https://x/y")
        );
        assert_eq!(
            next("https://h/a", "//cdn/x").as_deref(),
            Some("https://cdn/x")
        );
        for (current, location) in [
            ("https://h/a", "http://h/b"),
            ("http://h/a", "file:///etc/passwd"),
            ("http://h/a", "ftp://h/x"),
            ("http://h/a", "http://[::1"),
        ] {
            assert!(next(current, location).is_none(), "{location}");
        }
        assert_eq!(encode_path("a b/c#d.gguf"), "a%20b/c%23d.gguf");
        assert_eq!(encode_query("Q8_0/a b&c.gguf"), "Q8_0%2Fa%20b%26c.gguf");
    }

    #[test]
    fn credentials_in_urls_are_never_shown() {
        assert_eq!(
            shown_url("http://user:pass@127.0.0.1:9/api/x?a=b@c"),
            "http://***@127.0.0.1:9/api/x?a=b@c"
        );
        assert_eq!(shown_url("https://a:b@c@h"), "https://***@h");
        assert_eq!(shown_url("https://h/x@y"), "https://h/x@y");
        assert_eq!(shown_url("u:p@h:1/x"), "***@h:1/x");
    }

    #[test]
    fn endpoints_are_checked_before_use() {
        for good in [
            "https://huggingface.co",
            "http://127.0.0.1:8080/mirror",
            "http://user:pass@127.0.0.1:9",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "not a url",
            "127.0.0.1:9",
            "ftp://127.0.0.1",
            "file:///etc",
            "http://[::1",
            "http://h:99999",
            "http://h/?x=1",
            "http://h/#x",
            "http://h\u{1b}[31m",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_named_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/x");
        let Err(ureq::Error::Transport(transport)) = ureq::get(&url).call() else {
            panic!("a closed port answered");
        };
        let (message, unreachable) = describe_transport(&transport);
        assert!(unreachable, "{message}");
        assert!(!message.contains("127.0.0.1"), "{message}");
        let error = HubError::Network {
            url: url.clone(),
            message,
            unreachable,
        };
        assert_eq!(error.to_string().matches(&url).count(), 1, "{error}");
        assert!(error.is_unreachable());
    }

    #[test]
    fn a_slow_resolver_is_cut_short() {
        let started = Instant::now();
        // A literal address resolves at once.
        assert!(resolve_within("127.0.0.1:80", Duration::from_secs(2)).is_ok());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
