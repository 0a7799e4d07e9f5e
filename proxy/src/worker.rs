//! Thread-per-core workers: one named OS thread per worker, each with its
//! own monoio runtime built inside the thread and its own `SO_REUSEPORT`
//! listeners (HTTP, and MQTT when enabled). Workers share only the `App`
//! (read-only config, the store whose hot path is sharded, the rate
//! limiters and the pacing figures). Each worker owns its credential cache,
//! its metric handles and its load counters.
//!
//! Each runtime is built inside its thread on the driver `--io-driver`
//! names: epoll by default (measured faster on the reference machine),
//! io_uring, or `auto` (io_uring where the kernel allows it). Which one a
//! worker got is logged at start.
//!
//! Load bounds, per worker: at most `max_connections` open connections, and
//! per source (IPv4 address or IPv6 /64, over the whole process) at most
//! `--max-connections-per-ip` (a new one past either is answered 503 on
//! HTTP, or closed on TLS and MQTT, and counted in
//! `fleetgate_connections_refused_total`), and at most `max_inflight`
//! requests waiting on the store or the admin service (new ones past it
//! are shed: 503, or CONNACK 3 / 0x89).

use std::cell::{Cell, RefCell};
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleetgate_registry::store::Store;
use monoio::io::AsyncWriteRentExt;
use monoio::{FusionDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::app::{App, IoDriver, Shutdown, Worker};
use crate::conn;
use crate::http::response::write_json;
use crate::mqtt::access::{self, AccessCache};
use crate::mqtt::credentials::CredentialCache;
use crate::mqtt::session;
use crate::sources::SourceSlot;
use crate::telemetry::{Listener, WorkerMetrics};
use crate::tls::{Handshake, TlsStream, WorkerTls};

/// How long a worker waits for open connections after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// One worker's listening sockets.
pub struct WorkerSockets {
    pub http: StdListener,
    pub https: Option<StdListener>,
    pub mqtt: Option<StdListener>,
    pub mqtts: Option<StdListener>,
    /// The TLS configurations (present when `https` or `mqtts` is).
    pub tls: Option<WorkerTls>,
}

/// Why a worker could not serve. Sent to `main` (never `process::exit`), so
/// that it starts the drain of every other worker and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker {worker}: cannot build its runtime: {source}")]
    Runtime {
        worker: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("worker {worker}: cannot register its {listener:?} listener: {source}")]
    Listener {
        worker: usize,
        listener: Listener,
        #[source]
        source: std::io::Error,
    },
}

/// Where workers report a [`WorkerError`]. The unbounded sender of tokio's
/// channel is runtime-neutral: a worker thread sends without a tokio
/// runtime, and `main` awaits the receiver next to its signal handlers.
pub type Failures = tokio::sync::mpsc::UnboundedSender<WorkerError>;

/// Starts one worker thread per socket set. A worker that fails reports it
/// on `failures` and stops; the others go on until `shutdown`.
pub fn spawn_workers<S: Store>(
    app: Arc<App<S>>,
    sockets: Vec<WorkerSockets>,
    shutdown: Shutdown,
    failures: Failures,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(id, sockets)| {
            let app = app.clone();
            let shutdown = shutdown.clone();
            let failures = failures.clone();
            std::thread::Builder::new()
                .name(format!("fleetgate-worker-{id}"))
                .spawn(move || run(id, app, sockets, shutdown, failures))
        })
        .collect()
}

fn run<S: Store>(
    id: usize,
    app: Arc<App<S>>,
    sockets: WorkerSockets,
    shutdown: Shutdown,
    failures: Failures,
) {
    let runtime = match app.config.io_driver {
        IoDriver::Auto => RuntimeBuilder::<FusionDriver>::new().enable_timer().build(),
        IoDriver::Epoll => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(FusionRuntime::Legacy),
        IoDriver::IoUring => RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()
            .map(FusionRuntime::Uring),
    };
    let mut runtime = match runtime {
        Ok(rt) => rt,
        Err(source) => {
            let _ = failures.send(WorkerError::Runtime { worker: id, source });
            return;
        }
    };
    let driver = match &runtime {
        FusionRuntime::Uring(_) => "io_uring",
        FusionRuntime::Legacy(_) => "epoll",
    };
    tracing::info!(worker = id, driver, "worker started");
    runtime.block_on(async move {
        let m = &app.mqtt;
        let credentials = CredentialCache::new(
            m.cache_key,
            m.cache_ttl,
            m.negative_cache_ttl,
            m.cache_capacity,
        );
        let worker = Rc::new(Worker {
            id,
            app: app.clone(),
            shutdown,
            open: Cell::new(0),
            inflight: Cell::new(0),
            credentials: RefCell::new(credentials),
            access: RefCell::new(AccessCache::new(access::CAPACITY)),
            metrics: WorkerMetrics::new(),
        });
        let tls = sockets.tls.map(Rc::new);
        let others: Vec<_> = [
            (sockets.https, Listener::Https),
            (sockets.mqtt, Listener::Mqtt),
            (sockets.mqtts, Listener::Mqtts),
        ]
        .into_iter()
        .filter_map(|(socket, listener)| {
            let socket = socket?;
            Some(monoio::spawn(accept_loop(
                worker.clone(),
                socket,
                listener,
                tls.clone(),
                failures.clone(),
            )))
        })
        .collect();
        accept_loop(worker.clone(), sockets.http, Listener::Http, None, failures).await;
        for task in others {
            task.await;
        }
        let deadline = Instant::now() + DRAIN_GRACE;
        while worker.open.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(worker = id, left_open = worker.open.get(), "worker stopped");
    });
}

async fn accept_loop<S: Store>(
    worker: Rc<Worker<S>>,
    listener: StdListener,
    kind: Listener,
    tls: Option<Rc<WorkerTls>>,
    failures: Failures,
) {
    let id = worker.id;
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(source) => {
            let _ = failures.send(WorkerError::Listener {
                worker: id,
                listener: kind,
                source,
            });
            return;
        }
    };
    let open_gauge = &worker.metrics.open[kind as usize];
    let refused = &worker.metrics.refused[kind as usize];
    while !worker.shutdown.is_triggered() {
        // Wake at least every 100 ms to notice a shutdown.
        let accepted = monoio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        match accepted {
            Err(_) => continue,
            Ok(Ok((stream, peer))) => {
                let slot = if worker.open.get() >= worker.app.shed.max_connections {
                    None
                } else {
                    worker.app.sources.try_open(peer.ip())
                };
                let Some(slot) = slot else {
                    refused.increment(1);
                    // Plain HTTP gets a 503 it can read; TLS and MQTT
                    // clients cannot read one before a handshake or a
                    // CONNECT, so they are closed.
                    if kind == Listener::Http {
                        let write_timeout = worker.app.config.write_timeout;
                        monoio::spawn(refuse_connection(stream, write_timeout));
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                worker.open.set(worker.open.get() + 1);
                open_gauge.increment(1.0);
                // One task type per listener, so that a task is as large as
                // its own connection's future and no larger: a single
                // `match kind` future was 24 KB (the TLS paths), moved in
                // full for every refused CONNECT (perf: memmove at 13% of a
                // CONNECT storm's samples; docs/BENCHMARKS.md, issue 17).
                let w = worker.clone();
                match kind {
                    Listener::Http => {
                        monoio::spawn(tracked(w, kind, slot, async move |w| {
                            conn::serve(stream, peer, w, None).await
                        }));
                    }
                    Listener::Mqtt => {
                        monoio::spawn(tracked(w, kind, slot, async move |w| {
                            session::serve(stream, peer, w, None).await
                        }));
                    }
                    Listener::Https | Listener::Mqtts => {
                        let tls = tls.clone();
                        monoio::spawn(tracked(w, kind, slot, async move |w| {
                            if let Some(tls) = tls {
                                serve_tls(stream, peer, w, kind, &tls).await
                            }
                        }));
                    }
                }
            }
            Ok(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(worker = id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs one connection's task and then gives back what its accept took:
/// its per-source slot, its place in the worker's open count and gauge.
async fn tracked<S: Store>(
    worker: Rc<Worker<S>>,
    kind: Listener,
    slot: SourceSlot,
    serve: impl AsyncFnOnce(&Worker<S>),
) {
    serve(&worker).await;
    drop(slot);
    worker.open.set(worker.open.get() - 1);
    worker.metrics.open[kind as usize].decrement(1.0);
}

/// The 503 for a connection past `--max-connections` or
/// `--max-connections-per-ip`, written within the write deadline.
async fn refuse_connection(mut stream: monoio::net::TcpStream, write_timeout: Duration) {
    let mut out = Vec::new();
    write_json(
        &mut out,
        503,
        &[("Retry-After", "1")],
        br#"{"status":"unavailable","error":"too many connections; retry later"}"#,
        false,
    );
    let _ = monoio::time::timeout(write_timeout, stream.write_all(out)).await;
}

/// Runs the TLS handshake under `--tls-handshake-timeout`, counts it, and
/// serves the connection with the client certificate (if any) attached.
async fn serve_tls<S: Store>(
    stream: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    worker: &Worker<S>,
    kind: Listener,
    tls: &WorkerTls,
) {
    let config = match kind {
        Listener::Https => tls.https.clone(),
        _ => tls.mqtts.clone(),
    };
    let metrics = &worker.metrics;
    let started = Instant::now();
    let connection = match rustls::ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a TLS session");
            return;
        }
    };
    let timeout = worker.app.config.tls_handshake_timeout;
    let (stream, handshake) =
        match monoio::time::timeout(timeout, TlsStream::accept(stream, connection)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                metrics.tls_failed.increment(1);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics.tls_failed.increment(1);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
    metrics
        .tls_handshake_seconds
        .record(started.elapsed().as_secs_f64());
    match handshake {
        Handshake::Full => metrics.tls_full.increment(1),
        Handshake::Resumed => metrics.tls_resumed.increment(1),
    }
    let client_cert = stream.peer_certificate().map(<[u8]>::to_vec);
    match kind {
        Listener::Https => conn::serve(stream, peer, worker, client_cert).await,
        _ => session::serve(stream, peer, worker, client_cert).await,
    }
}
