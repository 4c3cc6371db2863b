//! The accept loop: hyper-util's HTTP/1.1 + HTTP/2 (prior knowledge) server, configured for an
//! LLM gateway rather than left at `axum::serve`'s defaults:
//!
//! - `TCP_NODELAY` on every accepted socket: streams are many small writes, and under Nagle's
//!   algorithm each chunk after the first waited for the client's delayed ACK (~40 ms per
//!   streamed response, 10× fewer streams per second; bench/results/profiling.md).
//! - HTTP/1 read buffer capped at [`READ_BUFFER`]: hyper's buffer otherwise grows to 16 KiB on
//!   the second read of every connection (the protocol sniff hands it 24 bytes first, and the
//!   next 8 KiB read then doubles it), 8 KiB more per open stream. The cap bounds a request's
//!   head (request line and headers) at 8 KiB, answered with 431 beyond; bodies are read in
//!   8 KiB pieces.
//! - Graceful shutdown: stop accepting, let each connection finish the request it is serving
//!   (idle keep-alive connections close at once), resolve when all are closed.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// hyper's HTTP/1 read buffer, and so the largest request head (hyper's minimum).
pub const READ_BUFFER: usize = 8192;

/// Serves `app` on `listener` until `stop` resolves, then shuts down gracefully: resolves once
/// every connection has closed.
pub async fn run(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(READ_BUFFER);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A failed accept: a connection reset before it was accepted is nothing; anything else (out of
/// file descriptors, say) is logged and retried after a pause, as hyper's and axum's servers do.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn status_of(addr: std::net::SocketAddr, header_bytes: usize) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /hello HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
            "a".repeat(header_bytes)
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = tcp.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn heads_up_to_the_read_buffer_are_served_and_larger_ones_get_431() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, app, async move {
            let _ = stop_rx.await;
        }));
        assert_eq!(status_of(addr, 6 * 1024).await, "HTTP/1.1 200 OK");
        assert_eq!(
            status_of(addr, READ_BUFFER).await,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );

        // Shutdown: the loop ends, and the port stops accepting.
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_request_in_flight_finishes_during_a_graceful_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The handler says when it runs, and answers only once the shutdown has begun (the
        // port stops accepting when it does).
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let entered_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let app = Router::new().route(
            "/hello",
            axum::routing::get(move || {
                let entered = entered_tx.lock().unwrap().take();
                async move {
                    if let Some(tx) = entered {
                        let _ = tx.send(());
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while tokio::net::TcpStream::connect(addr).await.is_ok() {
                        assert!(tokio::time::Instant::now() < deadline, "the port still accepts");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    "late"
                }
            }),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, app, async move {
            let _ = stop_rx.await;
        }));
        let request = tokio::spawn(status_of(addr, 10));
        // In flight: the handler is running.
        tokio::time::timeout(Duration::from_secs(10), entered_rx)
            .await
            .unwrap()
            .unwrap();
        stop_tx.send(()).unwrap();
        assert_eq!(request.await.unwrap(), "HTTP/1.1 200 OK");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
