//! The HTTP server loop: accepts connections and serves the router on each, with limits
//! a long-running node on a shared machine needs.
//!
//! - A client has [`ServerConfig::header_timeout`] to send a request's head, from the
//!   moment it connects and again after each response (so an idle connection is closed
//!   too); the body may pause at most [`ServerConfig::body_timeout`] between pieces.
//! - A client that stops reading what it is sent (a response, a stream of events) is
//!   cut off once a write has waited [`ServerConfig::write_timeout`].
//! - At most [`MAX_CONNECTIONS`] connections are served at once; more wait in the
//!   kernel's accept queue.
//! - On shutdown the listener closes at once; requests in flight get
//!   [`SHUTDOWN_GRACE`] to finish (a stream of events never finishes by itself).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt as _;

use crate::state::ServerConfig;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long requests in flight may take to finish once shutdown begins.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The largest request head (request line and headers) read; a larger one is refused
/// by the HTTP parser (431). The router refuses smaller ones it finds too large, in JSON.
const READ_BUFFER: usize = 64 << 10;

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (for at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        config.body_timeout,
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(READ_BUFFER);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: wait a moment rather than spin.
                    tracing::debug!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let stream = WriteTimeout::new(JsonParseErrors::new(stream), config.write_timeout);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("closing connections still open after the shutdown grace");
    }
    Ok(())
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` for the peer to
/// make room (reads pass through: an idle connection is hyper's header timeout's job).
struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits.
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            limit,
            waiting: None,
        }
    }

    /// `poll` of a write, failing once writes have waited too long.
    fn timed<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: impl FnOnce(
            std::pin::Pin<&mut S>,
            &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>>
    where
        S: Unpin,
    {
        use std::task::Poll;
        match poll(std::pin::Pin::new(&mut self.inner), cx) {
            Poll::Ready(result) => {
                self.waiting = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.timed(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.timed(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.timed(cx, |inner, cx| inner.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.timed(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A stream that turns hyper's own answers to a request it could not parse (a head over
/// [`READ_BUFFER`], a malformed request line: 400, 414 or 431 with an empty body, written
/// before the router sees anything) into the JSON errors every other refusal gets. Any
/// other bytes pass through untouched.
///
/// After such an answer the client may still be sending the rest of its request; closing
/// with that unread would reset the connection and could destroy the answer before the
/// client reads it. So the shutdown that follows reads and discards what still comes, for
/// at most [`LINGER`].
struct JsonParseErrors<S> {
    inner: S,
    /// The replacement being written, how far, and how many bytes of the caller's it
    /// stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// Armed once a replacement went out: the end of the lingering close.
    linger: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The last thing on the connection was a read that brought bytes: what is written
    /// now starts an answer (hyper answers a head it cannot parse right after reading it;
    /// a body's later pieces follow writes, so are never taken for such an answer).
    after_read: bool,
}

/// How long a connection refused by the HTTP parser is drained before it closes.
const LINGER: Duration = Duration::from_secs(2);

impl<S> JsonParseErrors<S> {
    fn new(inner: S) -> JsonParseErrors<S> {
        JsonParseErrors {
            inner,
            replacing: None,
            linger: None,
            after_read: false,
        }
    }
}

/// The JSON response for `buf` if it is one of hyper's automatic error answers: a whole
/// head of status 400, 414 or 431, `content-length: 0` and no content type.
fn automatic_error(buf: &[u8]) -> Option<Vec<u8>> {
    use axum::http::StatusCode;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("http/1.1 ")?.get(..3)?;
    let (status, code, message) = match status {
        "400" => (
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the request could not be read as HTTP/1.1".to_owned(),
        ),
        "414" => (
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is longer than {} bytes",
                crate::router::MAX_URI
            ),
        ),
        "431" => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's head is larger than {READ_BUFFER} bytes"),
        ),
        _ => return None,
    };
    let headers: Vec<&str> = lines.collect();
    if !headers.contains(&"content-length: 0")
        || headers.iter().any(|h| h.starts_with("content-type:"))
    {
        return None;
    }
    let body =
        serde_json::to_vec(&crate::error::HttpError::new(status, code, message).body()).ok()?;
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: tokio::io::AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes the pending replacement; ready with the caller's byte count once it is out.
    fn poll_replacing(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        while let Some((bytes, written, stands_for)) = self.replacing.as_mut() {
            if *written == bytes.len() {
                let n = *stands_for;
                self.replacing = None;
                self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
                return Poll::Ready(Ok(n));
            }
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.after_read = true;
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + tokio::io::AsyncRead + Unpin> tokio::io::AsyncWrite
    for JsonParseErrors<S>
{
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.replacing.is_none() {
            match automatic_error(buf).filter(|_| self.after_read) {
                Some(json) => self.replacing = Some((json, 0, buf.len())),
                None => {
                    self.after_read = false;
                    return std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
                }
            }
        }
        self.poll_replacing(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.replacing.is_none() {
            // hyper's automatic answer is its head alone (the body is empty).
            let first = bufs.iter().find(|b| !b.is_empty());
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let automatic = first
                .filter(|b| b.len() == total && self.after_read)
                .and_then(|b| automatic_error(b));
            match automatic {
                Some(json) => self.replacing = Some((json, 0, total)),
                None => {
                    self.after_read = false;
                    return std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
                }
            }
        }
        self.poll_replacing(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.linger.is_none() {
            return std::pin::Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        // Our side ends first (the client sees the answer end), then what the client still
        // sends is read until it closes too, or the linger runs out.
        std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_shutdown(cx))?;
        let mut scratch = [0u8; 8192];
        // At most 1 MiB at a time: a client that keeps sending is closed on.
        for _ in 0..128 {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                Poll::Ready(_) => break,
                Poll::Pending => {
                    let timer = this.linger.as_mut().expect("armed");
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    break;
                }
            }
        }
        this.linger = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::automatic_error;

    #[test]
    fn only_hypers_own_bodiless_parse_errors_become_json() {
        let json = automatic_error(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 22:00:00 GMT\r\n\r\n",
        )
        .expect("replaced");
        let text = String::from_utf8(json).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(body["error"]["code"], "headers_too_large");
        // Our own answers (with a body and a type), other statuses, and partial heads
        // pass through.
        for untouched in [
            &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert_eq!(automatic_error(untouched), None, "{}", String::from_utf8_lossy(untouched));
        }
    }
}
