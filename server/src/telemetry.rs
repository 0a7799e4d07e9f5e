//! Metrics wiring shared by both binaries: the renderer the admin service
//! answers `/metrics` with, the proxy's own `/metrics` listener, and the
//! once-a-second ticker that publishes the registry gauges.
//!
//! The recorder itself (names, buckets, series that start at 0) is
//! `fleetgate_registry::metrics::install_recorder`, so the metrics benches
//! measure the same configuration the binaries run.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetgate_registry::store::Store;
use fleetgate_registry::{Registry, UnixMillis};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use fleetgate_admin::service::MetricsRenderer;

/// Installs the Prometheus recorder (`on`), or a recorder whose handles
/// are no-ops (`--metrics off`, for measuring what recording costs; then
/// `/metrics` is empty).
pub fn recorder(on: bool) -> anyhow::Result<PrometheusHandle> {
    if on {
        return Ok(fleetgate_registry::metrics::install_recorder()?);
    }
    tracing::warn!("--metrics off: nothing is recorded");
    Ok(metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle())
}

/// A renderer for [`fleetgate_admin::AdminService::with_metrics`] and [`serve_metrics`].
pub fn renderer(handle: PrometheusHandle) -> MetricsRenderer {
    Arc::new(move || handle.render())
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    render: MetricsRenderer,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        hyper::Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(render())))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"only /metrics lives here\n")))
                    };
                    Ok::<_, Infallible>(response.expect("static response parts are valid"))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

/// Once a second: publish the registry gauges, run the recorder's upkeep,
/// and hand the pending count and the elapsed time to `on_tick` (the
/// proxy's pacing uses it).
pub fn spawn_ticker<S: Store>(
    registry: Arc<Registry<S>>,
    handle: PrometheusHandle,
    on_tick: impl Fn(u64, Duration) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            every.tick().await;
            let now = Instant::now();
            let elapsed = now - last;
            last = now;
            match registry.publish_gauges(UnixMillis::now()).await {
                Ok(status) => on_tick(status.pending as u64, elapsed),
                Err(e) => tracing::debug!(error = %e, "cannot read registry status for metrics"),
            }
            handle.run_upkeep();
        }
    })
}
