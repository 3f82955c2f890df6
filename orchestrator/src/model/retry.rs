//! Retrying transient model-server failures within a deadline.
//!
//! Policy: an attempt that fails with a retryable error (HTTP 408/429/5xx,
//! connection failure, attempt timeout) is retried after a delay: the
//! server's `Retry-After` when it sent one, otherwise exponential back-off
//! with full jitter (uniform in `[0, min(cap, base * 2^(n-1))]`). A delay
//! that would end past the deadline is not slept: the call fails at once
//! with [`ModelError::DeadlineExceeded`] carrying the last error. After
//! `max_attempts` the call fails with [`ModelError::RetriesExhausted`].
//! Non-retryable errors are returned unchanged on the spot.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime};

use super::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1 is made).
    pub max_attempts: u32,
    /// Back-off ceiling before the first retry; doubles per retry.
    pub base: Duration,
    /// Upper bound of any back-off (not of a server's `Retry-After`).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The jittered back-off before retry number `retry` (1 = first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let ceiling = exp.min(self.cap);
        ceiling.mul_f64(random_unit())
    }
}

/// A failed attempt, with the server's `Retry-After` if it gave one.
#[derive(Debug)]
pub struct AttemptError {
    pub error: ModelError,
    pub retry_after: Option<Duration>,
}

impl From<ModelError> for AttemptError {
    fn from(error: ModelError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, runs out of attempts or
/// would cross `deadline`. `attempt` gets the time left before the deadline
/// (to bound its own timeout). Returns the value and the attempts made.
pub async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    mut attempt: F,
) -> Result<(T, u32), ModelError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut attempts = 0u32;
    let mut last: Option<ModelError> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(deadline_exceeded(attempts, last));
        }
        attempts += 1;
        let failure = match attempt(remaining).await {
            Ok(value) => return Ok((value, attempts)),
            Err(failure) => failure,
        };
        if !failure.error.is_retryable() {
            return Err(failure.error);
        }
        if attempts >= max_attempts {
            return Err(ModelError::RetriesExhausted {
                attempts,
                last: Box::new(failure.error),
            });
        }
        let delay = failure
            .retry_after
            .unwrap_or_else(|| policy.backoff(attempts));
        tracing::debug!(attempt = attempts, ?delay, error = %failure.error, "model call failed; retrying");
        let wake = Instant::now() + delay;
        if wake >= deadline {
            return Err(deadline_exceeded(attempts, Some(failure.error)));
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        last = Some(failure.error);
    }
}

fn deadline_exceeded(attempts: u32, last: Option<ModelError>) -> ModelError {
    let last = last.unwrap_or_else(|| {
        ModelError::Config("deadline already passed before the first attempt".into())
    });
    ModelError::DeadlineExceeded {
        attempts,
        last: Box::new(last),
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (a date in
/// the past means "now"). Unparseable values are ignored.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Not in the RFC, but some servers send fractional seconds.
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A uniform number in [0, 1). Jitter needs no strong randomness; each
/// `RandomState` is freshly keyed, so this avoids a `rand` dependency.
fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
        };
        for retry in 1..=10 {
            let ceiling =
                (Duration::from_millis(200) * (1 << (retry - 1))).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff(retry) <= ceiling);
            }
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(distinct.len() > 1, "jitter must vary");
        // A huge retry number must not overflow.
        assert!(p.backoff(u32::MAX) <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&future).expect("http date");
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[tokio::test]
    async fn non_retryable_is_returned_at_once() {
        let policy = RetryPolicy {
            base: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let result: Result<((), u32), _> =
            run(&policy, Instant::now() + Duration::from_secs(5), |_| {
                calls += 1;
                async { Err(AttemptError::from(ModelError::Config("nope".into()))) }
            })
            .await;
        assert!(matches!(result, Err(ModelError::Config(_))));
        assert_eq!(calls, 1);
    }
}
