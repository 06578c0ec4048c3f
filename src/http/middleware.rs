//! Per-request observation: a request id (span and `X-Request-Id`), metrics, an access log line
//! without query string or headers (they may carry tokens).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use rand::RngCore;
use tracing::Instrument;

use super::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// This request's id, for handlers (the audit log), and when it arrived, before any
/// resource's middleware (CORS) looked at it. One extension, one allocation a request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String, pub Instant);

/// The middleware function (used with `actix_web::middleware::from_fn`).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = Instant::now();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    // A fixed set of labels: any token is a valid HTTP method, and each label is a new series.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "OTHER",
    };
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let id = format!("{:016x}", rand::thread_rng().next_u64());
    let span = tracing::info_span!("request", id = %id);
    actix_web::HttpMessage::extensions_mut(&req).insert(RequestId(id.clone(), start));
    let mut res = next.call(req).instrument(span.clone()).await?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    if let Some(state) = state {
        state
            .metrics
            .observe_request(&route, method, status, elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::debug!(
            method = %method,
            route = %route,
            status,
            micros = elapsed.as_micros() as u64,
            "request"
        );
    });
    Ok(res)
}
