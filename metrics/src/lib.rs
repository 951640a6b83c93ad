//! `/metrics` for Osprey's services: a [`prometheus_client`] registry rendered in the
//! OpenMetrics text format, served over HTTP. The console mounts [`router`] on its own
//! listener; the responder (and the collector) run [`spawn`] on a configured address.

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
pub use prometheus_client::{self, registry::Registry};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use protocol::Severity;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabel {
    severity: &'static str,
}

/// A counter per finding severity (`name_total{severity="high"}`): how every service counts
/// the findings it raised, received or stored.
#[derive(Clone, Debug, Default)]
pub struct BySeverity(Family<SeverityLabel, Counter>);

impl BySeverity {
    /// A new family registered in `registry` as `name`.
    pub fn register(registry: &mut Registry, name: &str, help: &str) -> BySeverity {
        let counters = BySeverity::default();
        registry.register(name, help, counters.0.clone());
        counters
    }

    pub fn inc(&self, severity: Severity) {
        self.0
            .get_or_create(&SeverityLabel {
                severity: severity.as_str(),
            })
            .inc();
    }
}

/// The media type of [`render`]'s output (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in the OpenMetrics text format (ending in `# EOF`).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; a metric that cannot encode would be a bug here.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!("cannot encode the metrics: {e}");
    }
    out
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&registry))
}

/// `GET /metrics` for `registry`, to merge into a service's own router.
pub fn router<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(registry)
}

/// Binds `address` (an error names it when it is taken) and serves `/metrics` there in the
/// background; returns the bound address (useful with port 0).
pub async fn spawn(address: SocketAddr, registry: Arc<Registry>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics address {address}: {e}")))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router::<()>(registry)).await {
            tracing::error!("the metrics server stopped: {e}");
        }
    });
    tracing::info!(address = %bound, "serving /metrics");
    Ok(bound)
}
