//! The one transport of every upstream call: the circuit breaker and the rate budget of the
//! URL's origin, a time limit on the whole exchange, and a bounded body.
//!
//! The breaker is this replica's own (each replica sees its own failures). The budget is
//! shared by every replica when the client has a shared store ([`Wire::with_shared_budget`]):
//! the provider's limit is on the sum of their calls. When that store fails, this replica's
//! own bucket stands in for it.
//!
//! Invariants: every request to an upstream goes through [`Wire::send`] (token, revocation and
//! discovery alike), so the breaker and the budget see all traffic of an origin
//! (scheme + host + port) and only that origin's: a dead provider opens its own circuit and
//! leaves every other connector's calls alone. The time limit covers connecting, sending and
//! reading the whole body. Nothing here logs a request or response body, a header value, or a
//! URL's query: only the origin, statuses and error codes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, RequestBuilder, Url};

use super::breaker::{Admit, Breaker, BreakerOptions};
use super::budget::{Budget, BudgetOptions};
use super::error::{SERVER_ERROR, UNAVAILABLE, UpstreamError};
use crate::domain::rate::RateLimit;
use crate::domain::vault::Ephemeral;

/// Largest answer body read from an upstream; token answers are a few hundred bytes, and
/// discovery documents a few kilobytes.
const MAX_BODY: usize = 256 * 1024;

/// An upstream's answer, status and body.
#[derive(Debug)]
pub(super) struct Raw {
    /// HTTP status.
    pub status: u16,
    /// The body, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

/// The breaker and the budget of one origin.
struct OriginLimits {
    breaker: Breaker,
    budget: Budget,
}

/// Every origin's breaker and budget.
struct Limits {
    breaker: BreakerOptions,
    budget: BudgetOptions,
    // A std mutex: every critical section is a few arithmetic steps, never held across await.
    origins: Mutex<HashMap<String, OriginLimits>>,
}

/// How an exchange ended, as the breaker and the budget see it.
enum Outcome {
    /// The AS answered (any status below 500 but 429).
    Alive,
    /// 5xx, timeout or broken connection.
    Down,
    /// 429, with its `Retry-After`.
    Throttled(Option<Duration>),
}

/// Permission to send one request; reports the outcome when settled. Dropped unsettled (the
/// caller's future was cancelled), it frees a half-open probe slot.
struct Pass<'a> {
    limits: &'a Limits,
    origin: &'a str,
    probe: bool,
    wait: Duration,
}

impl Limits {
    fn with<T>(&self, origin: &str, now: Instant, f: impl FnOnce(&mut OriginLimits) -> T) -> T {
        let mut map = self
            .origins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map
            .entry(origin.to_string())
            .or_insert_with(|| OriginLimits {
                breaker: Breaker::default(),
                budget: Budget::new(now, &self.budget),
            });
        f(entry)
    }

    /// Asks the breaker, then (`local_budget`) this replica's budget; refused calls send
    /// nothing and take no token.
    fn admit<'a>(&'a self, origin: &'a str, local_budget: bool) -> Result<Pass<'a>, UpstreamError> {
        let now = Instant::now();
        self.with(origin, now, |o| {
            let probe = match o.breaker.admit(now) {
                Admit::Open => return Err(UpstreamError::CircuitOpen),
                Admit::Probe => true,
                Admit::Pass => false,
            };
            let reserved = if local_budget {
                o.budget.reserve(now, &self.budget)
            } else {
                Some(Duration::ZERO)
            };
            match reserved {
                Some(wait) => Ok(Pass {
                    limits: self,
                    origin,
                    probe,
                    wait,
                }),
                None => {
                    if probe {
                        o.breaker.release_probe();
                    }
                    Err(UpstreamError::RateLimited)
                }
            }
        })
    }

    /// This replica's budget alone (the shared one failed).
    fn reserve_local(&self, origin: &str) -> Option<Duration> {
        let now = Instant::now();
        self.with(origin, now, |o| o.budget.reserve(now, &self.budget))
    }
}

impl Pass<'_> {
    fn settle(mut self, outcome: Outcome) {
        let now = Instant::now();
        self.probe = false;
        self.limits.with(self.origin, now, |o| match outcome {
            Outcome::Alive => o.breaker.alive(),
            Outcome::Down => {
                if o.breaker.failed(now, &self.limits.breaker) {
                    tracing::warn!(
                        origin = %self.origin,
                        open_for_ms = self.limits.breaker.open_for.as_millis() as u64,
                        "upstream circuit opened after repeated transient failures"
                    );
                }
            }
            // A 429 is the AS alive and asking for less: the budget's business, not the breaker's.
            Outcome::Throttled(after) => {
                o.breaker.alive();
                o.budget.throttled(now, after);
            }
        });
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.limits
                .with(self.origin, Instant::now(), |o| o.breaker.release_probe());
        }
    }
}

/// The shared HTTP client with every origin's limits.
pub(super) struct Wire {
    http: reqwest::Client,
    limits: Limits,
    /// The budget every replica shares, and its shape (none when the budget is off).
    shared: Option<(Arc<dyn Ephemeral>, RateLimit)>,
}

/// The shared budget's key for an origin (one key, so one Redis Cluster slot).
fn budget_key(origin: &str) -> String {
    format!("ab:{{budget:{origin}}}")
}

/// The origin a URL's breaker and budget are keyed by, e.g. `https://as.example:8443`.
pub(super) fn origin_of(url: &Url) -> Result<String, UpstreamError> {
    match url.scheme() {
        "https" | "http" => Ok(url.origin().ascii_serialization()),
        other => Err(UpstreamError::Config(format!(
            "upstream URLs must be http(s), not {other}:"
        ))),
    }
}

/// `Retry-After` as a delay: delta-seconds, or an HTTP-date (RFC 9110 §10.2.3).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (at - time::OffsetDateTime::now_utc()).whole_seconds();
    Some(Duration::from_secs(secs.max(0) as u64))
}

/// The body, up to [`MAX_BODY`]; `None` when it is longer.
async fn read_bounded(mut resp: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

impl Wire {
    /// A transport over `http` with fresh limits.
    pub fn new(http: reqwest::Client, breaker: BreakerOptions, budget: BudgetOptions) -> Self {
        Self {
            http,
            limits: Limits {
                breaker,
                budget,
                origins: Mutex::new(HashMap::new()),
            },
            shared: None,
        }
    }

    /// Draws on the budget in `store`, shared with every replica using it.
    pub fn with_shared_budget(mut self, store: Arc<dyn Ephemeral>) -> Self {
        let b = &self.limits.budget;
        self.shared = RateLimit::per_second(b.per_second, b.burst, b.max_wait).map(|l| (store, l));
        self
    }

    /// The wait the shared budget gives (or this replica's, when the store fails); `None`:
    /// refused.
    async fn reserve_shared(&self, origin: &str) -> Option<Duration> {
        let (store, limit) = self.shared.as_ref()?;
        match store.reserve_rate(&budget_key(origin), limit).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::debug!(origin = %origin, error = %e, "shared rate budget unavailable; this replica's stands in");
                self.limits.reserve_local(origin)
            }
        }
    }

    /// Sends `method url`, shaped by `build`, within `timeout`, through the origin's breaker
    /// and budget. Any answer the AS gave is `Ok` (the caller reads its status); what never
    /// produced an answer is the error.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        timeout: Duration,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Raw, UpstreamError> {
        let origin = origin_of(url)?;
        // Debug only: with an open circuit this fires on every call; the opening is a warning.
        let not_sent = |e: &UpstreamError| {
            tracing::debug!(origin = %origin, error = e.code(), "upstream call not sent");
        };
        let pass = self
            .limits
            .admit(&origin, self.shared.is_none())
            .inspect_err(not_sent)?;
        let wait = if self.shared.is_some() {
            // Refused: the pass is dropped unsettled, which frees a probe slot.
            let wait = self.reserve_shared(&origin).await;
            wait.ok_or(UpstreamError::RateLimited)
                .inspect_err(not_sent)?
        } else {
            pass.wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let request = build(self.http.request(method, url.clone()));
        let exchange = async {
            let resp = request.send().await?;
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            let body = read_bounded(resp).await?;
            Ok::<_, reqwest::Error>((status, after, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                pass.settle(Outcome::Down);
                tracing::warn!(origin = %origin, timeout_ms = timeout.as_millis() as u64, "upstream call timed out");
                Err(UpstreamError::transient(UNAVAILABLE))
            }
            Ok(Err(e)) => {
                pass.settle(Outcome::Down);
                // `without_url`: the message names the failure, not the URL.
                tracing::warn!(origin = %origin, error = %e.without_url(), "upstream call failed");
                Err(UpstreamError::transient(UNAVAILABLE))
            }
            Ok(Ok((status, after, body))) => {
                pass.settle(match status {
                    429 => Outcome::Throttled(after),
                    500..=599 => Outcome::Down,
                    _ => Outcome::Alive,
                });
                if let (429, Some((store, limit))) = (status, &self.shared) {
                    let stop = after.map(|d| d.min(super::budget::MAX_STOP));
                    if let Err(e) = store.throttle_rate(&budget_key(&origin), stop, limit).await {
                        tracing::debug!(origin = %origin, error = %e, "shared rate budget not stopped; this replica's is");
                    }
                }
                let body = body.ok_or_else(|| {
                    tracing::warn!(origin = %origin, status, max = MAX_BODY, "upstream answer too large");
                    UpstreamError::transient(SERVER_ERROR)
                })?;
                Ok(Raw { status, body })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_name_scheme_host_and_port() {
        let o = |s: &str| origin_of(&Url::parse(s).unwrap());
        assert_eq!(
            o("https://as.example/oauth/token?x=1").unwrap(),
            "https://as.example"
        );
        assert_eq!(o("https://as.example:443/t").unwrap(), "https://as.example");
        assert_eq!(
            o("http://127.0.0.1:8080/t").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_ne!(o("http://127.0.0.1:8080/t"), o("http://127.0.0.1:8081/t"));
        assert!(matches!(
            o("ftp://as.example/"),
            Err(UpstreamError::Config(_))
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
