//! The adapter that plugs the admin service into the proxy's forwarding.
//!
//! `fleetgate-proxy` forwards the `/api/*` requests it does not answer to
//! an [`AdminHandler`], a trait it defines so that it never depends on the
//! admin crate; `fleetgate-admin` knows nothing of the proxy. This is the
//! one place that knows both.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use fleetgate_admin::AdminService;
use fleetgate_proxy::forward::AdminHandler;
use fleetgate_registry::store::Store;

/// The in-process admin service, as the proxy's forwarding sees it.
pub struct InProcessAdmin<S>(pub Arc<AdminService<S>>);

impl<S: Store> AdminHandler for InProcessAdmin<S> {
    fn handle(
        &self,
        req: http::Request<Bytes>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send + '_>> {
        // The admin service sees the device's real address, as it would on
        // its own listener.
        Box::pin(self.0.handle(req, Some(peer)))
    }
}
