//! The HTTP port: `/health/livez`, `/health/readyz` and `/metrics`, nothing else.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Where the probes and metrics are served.
/// Each service picks its own default port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the probe and metrics endpoint, e.g. `0.0.0.0:8081`; port 0 picks a free one.
    pub listen_addr: SocketAddr,
}

impl HttpConfig {
    /// All interfaces on `port`: probes and scrapes come from outside the pod.
    pub fn on_port(port: u16) -> Self {
        Self { listen_addr: SocketAddr::from(([0, 0, 0, 0], port)) }
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    registry: Registry,
}

/// Binds the listener; separate from [`serve`] so a caller learns the port before serving.
pub async fn bind(config: &HttpConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.listen_addr).await
}

/// Serves the probes and `/metrics` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health/livez", get(livez))
        .route("/health/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, registry });
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

fn probe(result: Result<(), Vec<String>>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", reasons.join("\n"))).into_response(),
    }
}

async fn livez(State(state): State<AppState>) -> Response {
    probe(state.health.liveness())
}

/// The readiness, and below it the role (`role: …`, when the service has one) and the notes
/// (`note: …` lines), which do not change it.
async fn readyz(State(state): State<AppState>) -> Response {
    let role = state.health.role().map(|role| format!("role: {role}\n")).unwrap_or_default();
    let notes: String = state.health.notes().iter().map(|n| format!("note: {n}\n")).collect();
    let notes = format!("{role}{notes}");
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, format!("ok\n{notes}")).into_response(),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n{notes}", reasons.join("\n"))).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, encoder.format_type().to_string())], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response(),
    }
}
