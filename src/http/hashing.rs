//! A bound on Argon2id work in flight. Each hash takes 19 MiB and tens of milliseconds of one
//! core, and runs on the blocking pool that storage calls share: a burst of sign-ins from many
//! addresses (each under its per-IP limit) would otherwise take one thread and 19 MiB apiece, and
//! queue every other page's storage call behind them. Sign-ins beyond the bound wait without a
//! thread; one that cannot start within the wait gets a 503 page asking to try again.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use tokio::sync::Semaphore;

use super::pages::error_page;

/// How long a sign-in waits for its turn before it is refused.
const WAIT: Duration = Duration::from_secs(5);

/// Permits for password work: one per core (the work is CPU-bound; more would only share them).
#[derive(Clone)]
pub struct HashGate {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Default for HashGate {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(cores, WAIT)
    }
}

impl HashGate {
    /// A gate letting `permits` hashes run at once, each waiting at most `wait` to start.
    pub fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            wait,
        }
    }

    /// Run `work` (which hashes or verifies a password) on the blocking pool once a permit is
    /// free; `Err` is the page to answer with when none came free in time.
    pub async fn run<F, R>(
        &self,
        work: F,
    ) -> Result<Result<R, actix_web::error::BlockingError>, HttpResponse>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let permit =
            match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    tracing::warn!("password work saturated: sign-in refused with 503");
                    return Err(busy());
                }
            };
        Ok(web::block(move || {
            let out = work();
            drop(permit);
            out
        })
        .await)
    }
}

/// The page for a password check that found every permit taken for the whole wait.
fn busy() -> HttpResponse {
    let mut resp = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy right now",
        "The service is checking many passwords at once. Please try again in a few seconds.",
    );
    resp.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static("5"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[actix_web::test]
    async fn waits_for_a_permit_and_refuses_with_503_when_none_comes_free() {
        // One semaphore, two waits: a short one to be refused, a long one to be served.
        let gate = HashGate::new(1, Duration::from_secs(10));
        let impatient = HashGate {
            wait: Duration::from_millis(100),
            ..gate.clone()
        };
        let (release, held) = mpsc::channel::<()>();
        let (running, started) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let gate = gate.clone();
            actix_web::rt::spawn(async move {
                gate.run(move || {
                    let _ = running.send(());
                    held.recv().is_ok()
                })
                .await
                .ok()
                .and_then(Result::ok)
            })
        };
        // The first holds the only permit once its work runs.
        started.await.unwrap();
        let refused = impatient
            .run(|| 2)
            .await
            .expect_err("no permit within the wait");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers().get("retry-after").unwrap(), "5");

        // A second caller waiting when the permit is released gets it.
        let waiting = {
            let gate = gate.clone();
            actix_web::rt::spawn(async move { gate.run(|| 3).await.ok().and_then(Result::ok) })
        };
        // Let it reach the semaphore (one thread: it runs while this sleeps); it must wait.
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "it waits for the permit");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(true));
        assert_eq!(waiting.await.unwrap(), Some(3));
        // The permit is back once the work has run.
        assert_eq!(gate.run(|| 4).await.ok().and_then(Result::ok), Some(4));
    }
}
