//! Connections of `olm serve`: the accept loop, what each connection may
//! cost, and what SIGINT and SIGTERM do to open connections (T-E1, T-E2, T-E6).
//!
//! Owns: the cap on open connections (so file descriptors stay bounded), the
//! `Host` checks every request passes first (RFC 9112 §3.2, T-G6), the
//! header, body and write timeouts (so slow or stalled clients cannot hold a
//! connection or a generation slot), the signals, and the drain on shutdown.
//! Must not touch: routes, handlers or models; it serves whatever [`Router`]
//! it is given, and a response body it drops is the handler's to clean up.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hyper::body::{Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::access::check_host;
use super::error::{ApiError, Flavor};

/// What one client may cost the server.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From accepting a connection (or finishing a response on it) to the
    /// end of the next request's headers; also bounds idle keep-alive.
    pub header_timeout: Duration,
    /// From the end of the headers to the end of the body (408 after it).
    pub body_timeout: Duration,
    /// Longest a write to the client may stay blocked (a client that stops
    /// reading); then the connection is dropped and its generation cancelled.
    pub write_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue.
    /// Lowered to fit the process's file descriptor limit.
    pub max_connections: usize,
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT or SIGTERM, and every request finished within the grace period.
    Drained,
    /// SIGINT or SIGTERM, and the requests still running after the grace
    /// period were dropped.
    GraceExpired,
    /// A second SIGINT or SIGTERM during the drain: stop now.
    Interrupted,
}

/// SIGINT and SIGTERM, caught from the moment the server starts.
#[derive(Debug)]
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The name of the next signal to arrive.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.interrupt.recv() => "SIGINT",
            Some(()) = self.terminate.recv() => "SIGTERM",
            else => std::future::pending().await,
        }
    }
}

/// File descriptors kept for everything but client connections (model
/// files, worker pipes, the listener, logs).
const RESERVED_DESCRIPTORS: usize = 64;

/// How long to pause accepting after accept(2) fails for want of file
/// descriptors, so a burst does not turn into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long streams stopped at the end of the grace period get to send
/// their error event before their connections are dropped.
const ERROR_EVENT_FLUSH: Duration = Duration::from_millis(500);

/// Serve `app` on `listener` until a signal; then refuse new connections,
/// let open ones finish within `grace`, and report how that went.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    grace: Duration,
    signals: &mut Signals,
    stop_requests: impl std::future::Future<Output = ()>,
) -> Shutdown {
    // Outermost: a request whose Host is malformed reaches nothing else.
    let app = app
        .layer(middleware::from_fn_with_state(
            limits.body_timeout,
            body_deadline,
        ))
        .layer(middleware::from_fn(strict_host));
    let service = TowerToHyperService::new(app);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(connection_slots(limits.max_connections)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();

    let received = loop {
        let (stream, permit) = tokio::select! {
            biased;
            name = signals.next() => break name,
            accepted = accept(&listener, &slots) => accepted,
        };
        while connections.try_join_next().is_some() {}
        // Token streams are many small writes: send each at once.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
        let connection = http.serve_connection(io, service.clone());
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _permit: OwnedSemaphorePermit = permit;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!("connection closed: {error}");
            }
        });
    };

    // Closing the listener makes new connections fail at once (refused).
    drop(listener);
    let _ = stop.send(true);
    tracing::info!(
        "{received}: finishing {} open connection(s) within {grace:?}",
        connections.len()
    );
    let drained = async { while connections.join_next().await.is_some() {} };
    let shutdown = tokio::select! {
        () = drained => Shutdown::Drained,
        () = tokio::time::sleep(grace) => {
            tracing::warn!("requests still running after {grace:?}; stopping them");
            // Each stream still open ends with an error event, not a cut.
            stop_requests.await;
            let flushed = async { while connections.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(ERROR_EVENT_FLUSH, flushed).await;
            Shutdown::GraceExpired
        }
        name = signals.next() => {
            tracing::info!("{name} again: stopping now");
            Shutdown::Interrupted
        }
    };
    // Dropping a connection drops its response, which cancels its generation.
    connections.shutdown().await;
    shutdown
}

/// Wait for a free connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    let permit = Arc::clone(slots)
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return (stream, permit),
            Err(error) if out_of_descriptors(&error) => {
                tracing::warn!("cannot accept a connection: {error}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            // The client went away between connect and accept, and the like.
            Err(error) => tracing::debug!("cannot accept a connection: {error}"),
        }
    }
}

fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// `configured`, lowered so that connections leave room under the process's
/// file descriptor limit.
fn connection_slots(configured: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    let available = soft.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    if configured > available {
        tracing::warn!(
            "serving at most {available} connections at once (file descriptor limit {soft})"
        );
    }
    configured.clamp(1, available)
}

/// Middleware: RFC 9112 §3.2 on every route, `/health` included. A request
/// with no `Host` (HTTP/1.1), two of them, a malformed one (a bad port, a
/// stray colon or bracket), or an absolute target that names another host
/// gets 400 in the route's error shape before the access guard (whose
/// allowlist answers 403 to a well-formed foreign host) or a handler runs.
/// The connection is closed after it: a client that frames requests this
/// way is not one to keep talking to.
async fn strict_host(request: Request, next: Next) -> Response {
    let hosts: Vec<&[u8]> = request
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let uri = request.uri();
    let target = uri.scheme_str().zip(uri.authority().map(|a| a.as_str()));
    let requires_host = request.version() >= Version::HTTP_11;
    let Err(error) = check_host(&hosts, requires_host, target) else {
        return next.run(request).await;
    };
    let path = uri.path();
    tracing::info!(
        "{} {} 400 ({error})",
        request.method(),
        crate::store::names::escaped(path)
    );
    let mut response =
        ApiError::bad_request(error.to_string()).into_response_for(Flavor::for_path(path));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Middleware: give the request body `timeout` to arrive; when it does not,
/// answer 408 in the route's error shape, whatever the handler made of the
/// failed read, and close the connection.
async fn body_deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let flavor = Flavor::for_path(request.uri().path());
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + timeout;
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline,
            timer: None,
            expired: Arc::clone(&expired),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within {} ms",
            timeout.as_millis()
        ),
    )
    .into_response_for(flavor);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes while it waits for data.
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Made on the first wait, so bodies that arrive at once need no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// Tells [`body_deadline`] why the read failed.
    expired: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(context) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(context));
        this.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "the request body did not arrive in time",
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes fail with `TimedOut` when they stay blocked (the
/// client stopped reading and the buffers are full) for longer than
/// `timeout`. hyper then drops the connection and, with it, the response.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write or flush is blocked; reset by any progress.
    timer: Pin<Box<Sleep>>,
    blocked: bool,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            blocked: false,
        }
    }

    /// Pass on a write's result, arming the timer when it is blocked and
    /// failing once it has been blocked for too long.
    fn watch<T>(
        &mut self,
        context: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.blocked = false;
            return poll;
        }
        if !self.blocked {
            self.blocked = true;
            let deadline = Instant::now() + self.timeout;
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(context));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client read nothing for {} ms",
                self.timeout.as_millis()
            ),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(context, data);
        self.watch(context, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(context, buffers);
        self.watch(context, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(context);
        self.watch(context, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(context);
        self.watch(context, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_write_blocked_past_the_timeout_fails() {
        runtime().block_on(async {
            // A pipe nobody reads: writes block once its buffer is full.
            let (writer, _reader) = tokio::io::duplex(64);
            let mut writer = WriteDeadline::new(writer, Duration::from_millis(50));
            let started = std::time::Instant::now();
            let error = writer
                .write_all(&[0; 1024])
                .await
                .expect_err("the write must time out");
            assert_eq!(error.kind(), io::ErrorKind::TimedOut);
            assert!(started.elapsed() >= Duration::from_millis(50));
        });
    }

    #[test]
    fn a_slow_but_steady_reader_is_not_cut_off() {
        runtime().block_on(async {
            let (writer, mut reader) = tokio::io::duplex(64);
            let mut writer = WriteDeadline::new(writer, Duration::from_millis(100));
            let draining = tokio::spawn(async move {
                let mut buffer = [0; 64];
                let mut total = 0;
                // Each wait is shorter than the timeout, all of them together longer.
                while total < 640 {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    total += reader.read(&mut buffer).await.expect("read");
                }
            });
            writer.write_all(&[0; 640]).await.expect("write");
            draining.await.expect("reader");
        });
    }

    #[test]
    fn slots_fit_under_the_descriptor_limit() {
        assert_eq!(connection_slots(1), 1);
        assert_eq!(connection_slots(0), 1);
        assert!(connection_slots(usize::MAX) < usize::MAX);
    }
}
