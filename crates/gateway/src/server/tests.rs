//! The accept loop over real TCP on 127.0.0.1: head size, graceful shutdown, and the limits on
//! slow, idle and too many clients. Timeouts are hundreds of milliseconds; conditions are polled
//! for, with margins of seconds, never slept for.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::*;

/// Long enough for anything that should happen; a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(5);

fn app() -> Router {
    Router::new().route("/hello", get(|| async { "hi" })).route(
        "/echo",
        post(|body: Body| async move {
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => (StatusCode::OK, format!("{} bytes", b.len())),
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            }
        }),
    )
}

fn limits(header_ms: u64, idle_ms: u64, body_ms: u64, max: usize) -> Limits {
    Limits {
        header_read: Duration::from_millis(header_ms),
        idle: Duration::from_millis(idle_ms),
        body_read: Duration::from_millis(body_ms),
        max_connections: max,
    }
}

struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

async fn start(app: Router, limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, app, move || limits, metrics.clone(), async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        metrics,
        stop: Some(stop),
        task,
    }
}

impl Server {
    fn timeouts(&self, kind: &str) -> u64 {
        self.metrics.connection_timeouts.with_label_values(&[kind]).get()
    }
}

/// Waits until `cond` holds, at most [`PATIENCE`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads one response (head and a `content-length` body); `None` when the connection closes
/// first. Fails the test when nothing happens within [`PATIENCE`].
async fn response(tcp: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + length {
                    return Some(text);
                }
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server neither answered nor closed the connection")
}

/// Waits for the server to close the connection; fails the test if it answers or waits
/// longer than [`PATIENCE`].
async fn closed(tcp: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, tcp.read(&mut chunk))
        .await
        .expect("the connection was not closed");
    if let Ok(n) = read {
        assert_eq!(n, 0, "expected a close, got {:?}", String::from_utf8_lossy(&chunk[..n]));
    }
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

async fn get_hello(tcp: &mut TcpStream) -> Option<String> {
    tcp.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await.ok()?;
    response(tcp).await
}

async fn status_of(addr: SocketAddr, header_bytes: usize) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
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
    let mut server = start(app(), Limits::default()).await;
    assert_eq!(status_of(server.addr, 6 * 1024).await, "HTTP/1.1 200 OK");
    assert_eq!(
        status_of(server.addr, READ_BUFFER).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    // Shutdown: the loop ends, and the port stops accepting.
    server.stop.take().unwrap().send(()).unwrap();
    server.task.await.unwrap().unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn a_request_in_flight_finishes_during_a_graceful_shutdown() {
    let entered = Arc::new(AtomicBool::new(false));
    let handler_entered = entered.clone();
    let app = Router::new().route(
        "/hello",
        get(move || async move {
            handler_entered.store(true, Ordering::Release);
            tokio::time::sleep(Duration::from_millis(300)).await;
            "late"
        }),
    );
    let mut server = start(app, Limits::default()).await;
    let request = tokio::spawn(status_of(server.addr, 10));
    eventually("the request is in flight", || entered.load(Ordering::Acquire)).await;
    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(request.await.unwrap(), "HTTP/1.1 200 OK");
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_half_sent_head_is_closed_after_the_header_timeout() {
    let server = start(app(), limits(300, 60_000, 60_000, 100)).await;

    // A new connection that sends half a head.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let began = Instant::now();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    closed(&mut tcp).await;
    assert!(began.elapsed() >= Duration::from_millis(250), "closed too early");
    assert_eq!(server.timeouts("header"), 1);

    // A new connection that sends nothing.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    closed(&mut tcp).await;
    assert_eq!(server.timeouts("header"), 2);

    // A kept-alive connection: one request served, then half of the next head. The header
    // timeout counts from its first byte, long before the idle timeout.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(status(&get_hello(&mut tcp).await.unwrap()), "HTTP/1.1 200 OK");
    tcp.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
    let began = Instant::now();
    closed(&mut tcp).await;
    assert!(began.elapsed() >= Duration::from_millis(250), "closed too early");
    assert_eq!(server.timeouts("header"), 3);
    assert_eq!(server.timeouts("idle"), 0);
    eventually("every connection is counted closed", || {
        server.metrics.connections_open.get() == 0
    })
    .await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(app(), limits(10_000, 400, 60_000, 100)).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();

    // Requests closer together than the idle timeout keep the connection, for longer in all
    // than the idle timeout: it counts from the end of the last request.
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(1_000) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = get_hello(&mut tcp)
            .await
            .expect("the connection was closed while in use");
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
    }
    assert_eq!(server.timeouts("idle"), 0);

    // Then silence: closed after the idle timeout.
    let quiet = Instant::now();
    closed(&mut tcp).await;
    assert!(quiet.elapsed() >= Duration::from_millis(300), "closed too early");
    assert_eq!(server.timeouts("idle"), 1);
    assert_eq!(server.timeouts("header"), 0);
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_other_clients_are_still_served() {
    let server = start(app(), limits(10_000, 60_000, 300, 100)).await;

    // A body that arrives in full, in time, is served.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let r = response(&mut tcp).await.unwrap();
    assert_eq!(status(&r), "HTTP/1.1 200 OK", "{r}");
    assert!(r.ends_with("5 bytes"), "{r}");

    // 100 bytes announced, one sent every 50 ms: 5 s in all, far beyond the deadline.
    let slow = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        writer
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
            .await?;
        for _ in 0..100 {
            writer.write_all(b"x").await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        io::Result::Ok(())
    });
    // Meanwhile another client is served.
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(status(&get_hello(&mut other).await.unwrap()), "HTTP/1.1 200 OK");

    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer to the slow body within {PATIENCE:?}: {answer:?}"
    );
    assert_eq!(answer.lines().next(), Some("HTTP/1.1 408 Request Timeout"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert_eq!(server.timeouts("body"), 1);
    trickle.abort();

    // And the gateway keeps answering.
    assert_eq!(status(&get_hello(&mut other).await.unwrap()), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn beyond_the_connection_cap_a_new_connection_is_refused_at_once_and_open_ones_are_served() {
    let server = start(app(), limits(10_000, 60_000, 60_000, 2)).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    eventually("two connections open", || server.metrics.connections_open.get() == 2).await;

    // The third: a 503 (or a bare close), at once, and its request is never served.
    let began = Instant::now();
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let answer = get_hello(&mut third).await;
    assert!(began.elapsed() < Duration::from_secs(1), "refused too slowly");
    if let Some(a) = &answer {
        assert_eq!(status(a), "HTTP/1.1 503 Service Unavailable", "{a}");
        assert!(a.contains("service_unavailable"), "{a}");
    }
    assert_eq!(server.metrics.connections_refused.get(), 1);

    // The open ones are still served.
    assert_eq!(status(&get_hello(&mut first).await.unwrap()), "HTTP/1.1 200 OK");
    assert_eq!(status(&get_hello(&mut second).await.unwrap()), "HTTP/1.1 200 OK");

    // Once one closes, a new connection is served again.
    drop(first);
    eventually("one connection open", || server.metrics.connections_open.get() == 1).await;
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(status(&get_hello(&mut fourth).await.unwrap()), "HTTP/1.1 200 OK");
}

#[test]
fn the_default_cap_fits_the_open_file_limit() {
    let limits = Limits::default();
    assert!(limits.max_connections >= 1 && limits.max_connections <= DEFAULT_MAX_CONNECTIONS as usize);
    if let Some(files) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        assert!(limits.max_connections as u64 <= files / 2 || files < 2);
    }
    assert_eq!(limits.header_read, Duration::from_secs(10));
}
