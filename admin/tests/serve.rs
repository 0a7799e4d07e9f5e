//! `server::serve` on a real socket: raw HTTP/1.1 bytes in, status lines
//! and JSON out, keep-alive across two requests, and a clean stop.

use std::sync::Arc;
use std::time::Duration;

use fleetgate_admin::{server, AdminService};
use fleetgate_registry::decision::Windows;
use fleetgate_registry::embedded::EmbeddedStore;
use fleetgate_registry::secrets::Secrets;
use fleetgate_registry::{Registry, RegistryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads exactly one response (its body has a Content-Length) and returns
/// the head and the body. Bytes past it would belong to the next response.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        let body_start = end + 4;
        if buf.len() >= body_start + length {
            assert_eq!(buf.len(), body_start + length, "unexpected extra bytes");
            let body = String::from_utf8(buf[body_start..].to_vec()).unwrap();
            return (head, body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_keep_alive_requests_and_stops_on_shutdown() {
    let store = EmbeddedStore::in_memory(Windows::default(), 1000);
    let registry = Registry::new(store, Secrets::random(), RegistryConfig::default());
    let service = Arc::new(AdminService::new(Arc::new(registry)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        service,
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(2),
    ));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body, r#"{"status":"ok"}"#);

    // Same connection, second request.
    stream
        .write_all(b"GET /api/client-registry HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "unauthorized");

    // And a third, to be sure the 401 did not close it.
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, r#"{"status":"ready"}"#);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    // The idle keep-alive connection was closed by the drain.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
        .await
        .expect("the server closed the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
    // And nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}
