//! Thread-per-core workers: one named OS thread per worker, each with its
//! own monoio runtime built inside the thread and its own `SO_REUSEPORT`
//! listener. Nothing is shared between workers except the `App` (read-only
//! config, and the store, whose hot path is sharded).
//!
//! Each runtime is a `FusionDriver` runtime: io_uring where the kernel
//! allows it, epoll otherwise. Which one a worker got is logged at start,
//! because io_uring is often disabled in containers.

use std::cell::Cell;
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleetgate_registry::store::Store;
use monoio::{FusionDriver, FusionRuntime, RuntimeBuilder};

use crate::conn;
use crate::routes::App;

/// How long a worker waits for open connections after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Tells workers to stop accepting and drain.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts one worker thread per listener.
pub fn spawn_workers<S: Store>(
    app: Arc<App<S>>,
    listeners: Vec<StdListener>,
    shutdown: Shutdown,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            let app = app.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("fleetgate-worker-{id}"))
                .spawn(move || run(id, app, listener, shutdown))
        })
        .collect()
}

fn run<S: Store>(id: usize, app: Arc<App<S>>, listener: StdListener, shutdown: Shutdown) {
    let runtime = RuntimeBuilder::<FusionDriver>::new().enable_timer().build();
    let mut runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot build the worker runtime");
            std::process::exit(1);
        }
    };
    let driver = match &runtime {
        FusionRuntime::Uring(_) => "io_uring",
        FusionRuntime::Legacy(_) => "epoll",
    };
    tracing::info!(worker = id, driver, "worker started");
    runtime.block_on(accept_loop(id, app, listener, shutdown));
}

async fn accept_loop<S: Store>(
    id: usize,
    app: Arc<App<S>>,
    listener: StdListener,
    shutdown: Shutdown,
) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot register the listener");
            std::process::exit(1);
        }
    };
    let open = Rc::new(Cell::new(0usize));
    let conn_shutdown = shutdown.flag.clone();
    while !shutdown.is_triggered() {
        // Wake at least every 100 ms to notice a shutdown.
        let accepted = monoio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        match accepted {
            Err(_) => continue,
            Ok(Ok((stream, peer))) => {
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let open = open.clone();
                let flag = conn_shutdown.clone();
                open.set(open.get() + 1);
                monoio::spawn(async move {
                    conn::serve(stream, peer, app, flag).await;
                    open.set(open.get() - 1);
                });
            }
            Ok(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(worker = id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN_GRACE;
    while open.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(worker = id, left_open = open.get(), "worker stopped");
}
