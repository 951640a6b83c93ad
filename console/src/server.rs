//! Putting the console together and serving it (plain HTTP, or TLS when a certificate is
//! configured).

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::broadcast;

use crate::{
    app::{App, Shared},
    auth::Auth,
    config::ConsoleConfig,
    metrics::Metrics,
    store::Store,
};

/// Opens the database and the operator key and connects to NATS (retrying in the
/// background: the console serves what it has while NATS is away).
pub async fn build(config: ConsoleConfig) -> anyhow::Result<Shared> {
    let store = Store::open(&config.database)?;
    let key = match &config.operator_key {
        Some(path) => Some(client::load_key(path)?),
        None => {
            tracing::warn!("no operator_key configured: the console is read-only");
            None
        }
    };
    let nats = client::connect_retrying(&client::NatsTarget {
        url: &config.nats.url,
        credentials: config.nats.credentials.as_deref(),
        name: "osprey-console",
    })
    .await?;
    let (live, _) = broadcast::channel(1024);
    Ok(Arc::new(App {
        auth: Auth::new(&config),
        config,
        store,
        metrics: Metrics::new(),
        live,
        nats,
        key,
    }))
}

pub async fn run(config: ConsoleConfig) -> anyhow::Result<()> {
    let app = build(config).await?;
    crate::ingest::spawn(app.clone());
    let router = crate::api::router(app.clone());
    let address = app.config.listen;
    if !address.ip().is_loopback() && app.config.tls.is_none() {
        tracing::warn!(%address, "listening beyond loopback without TLS: passwords and sessions cross the network in clear text");
    }
    match &app.config.tls {
        None => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))?;
            tracing::info!("osprey-console on http://{address}");
            axum::serve(listener, router)
                .with_graceful_shutdown(service::shutdown_signal())
                .await
                .context("the HTTP server stopped")?;
        }
        Some(tls) => {
            // async-nats already brings rustls with ring: use the same provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load the TLS certificate {} and key {}",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                service::shutdown_signal().await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            });
            tracing::info!("osprey-console on https://{address}");
            axum_server::bind_rustls(address, rustls)
                .handle(handle)
                .serve(router.into_make_service())
                .await
                .with_context(|| format!("cannot serve TLS on {address}"))?;
        }
    }
    tracing::info!("osprey-console stopped");
    Ok(())
}
