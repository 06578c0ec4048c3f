//! Operational endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers; 503 otherwise.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    match web::block(move || st.store.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready");
            HttpResponse::ServiceUnavailable().json(json!({"status": "database unavailable"}))
        }
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "overloaded"})),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
