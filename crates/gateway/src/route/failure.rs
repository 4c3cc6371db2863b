//! Why a route or an attempt did not serve ([`Failure`]), what that failure means to the other
//! layers (does a retry help? which fallbacks does it trigger? what does it do to the backend's
//! circuit?) and the error the client gets when nothing served.

use std::time::Duration;

use switchyard_config::{FallbackTrigger, ProviderConfig, RetryConfig, RetryOn};
use switchyard_providers::{ErrorKind, ProviderError};

use crate::error::GatewayError;
use crate::state::Strike;

/// Why a route (or an attempt) did not serve.
#[derive(Debug)]
pub(super) enum Failure {
    /// The upstream failed, or would have (context window).
    Upstream { error: ProviderError, backend: String },
    /// Every eligible backend is cooling down or at its limits.
    Cooling { retry_after: Duration, route: String },
    /// No backend of the route may serve this request at all.
    NoBackend { route: String, reason: String },
}

pub(super) const ALL_TRIGGERS: [FallbackTrigger; 5] = [
    FallbackTrigger::RateLimit,
    FallbackTrigger::ServerError,
    FallbackTrigger::Timeout,
    FallbackTrigger::ContextWindow,
    FallbackTrigger::ContentPolicy,
];

pub(super) fn trigger_label(t: FallbackTrigger) -> &'static str {
    match t {
        FallbackTrigger::RateLimit => "rate-limit",
        FallbackTrigger::ServerError => "server-error",
        FallbackTrigger::Timeout => "timeout",
        FallbackTrigger::ContextWindow => "context-window",
        FallbackTrigger::ContentPolicy => "content-policy",
    }
}

impl Failure {
    /// Whether this failure triggers a fallback listed with `t`.
    pub(super) fn triggers(&self, t: FallbackTrigger) -> bool {
        match self {
            Failure::Upstream { error, .. } => match error.kind {
                ErrorKind::RateLimit => t == FallbackTrigger::RateLimit,
                ErrorKind::Timeout => t == FallbackTrigger::Timeout,
                ErrorKind::ContextWindow => t == FallbackTrigger::ContextWindow,
                ErrorKind::ContentPolicy => t == FallbackTrigger::ContentPolicy,
                // What the client would see as 502: the upstream, not the request, is at fault.
                ErrorKind::Server
                | ErrorKind::Connect
                | ErrorKind::Protocol
                | ErrorKind::Auth
                | ErrorKind::PermissionDenied
                | ErrorKind::NotFound => t == FallbackTrigger::ServerError,
                ErrorKind::BadRequest => false,
            },
            Failure::Cooling { .. } => matches!(t, FallbackTrigger::RateLimit | FallbackTrigger::ServerError),
            Failure::NoBackend { .. } => true,
        }
    }

    /// Whether the route's retry policy retries it.
    pub(super) fn retryable(&self, on: &[RetryOn]) -> bool {
        let Failure::Upstream { error, .. } = self else {
            return false;
        };
        retry_class(error.kind).is_some_and(|class| on.contains(&class))
    }

    pub(super) fn retry_after(&self) -> Duration {
        match self {
            Failure::Upstream { error, .. } => error.retry_after.unwrap_or_default(),
            Failure::Cooling { retry_after, .. } => *retry_after,
            Failure::NoBackend { .. } => Duration::ZERO,
        }
    }

    pub(super) fn into_error(self) -> GatewayError {
        match self {
            Failure::Upstream { error, backend } => GatewayError::upstream(&error, &backend),
            Failure::Cooling { retry_after, route } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0);
                let mut e = GatewayError::unavailable(format!(
                    "No backend of route `{route}` is available now (cooling down after failures, or at its limits); try again in {secs} seconds."
                ));
                e.retry_after = Some(retry_after.max(Duration::from_secs(1)));
                e
            }
            Failure::NoBackend { route, reason } => GatewayError::unavailable(format!(
                "No backend of route `{route}` may serve this request: {reason}."
            )),
        }
    }
}

/// The retry class of an upstream failure (`retries.on`); `None` for those a retry never helps.
pub(crate) fn retry_class(kind: ErrorKind) -> Option<RetryOn> {
    match kind {
        ErrorKind::RateLimit => Some(RetryOn::RateLimit),
        ErrorKind::Server | ErrorKind::Protocol => Some(RetryOn::ServerError),
        ErrorKind::Timeout => Some(RetryOn::Timeout),
        ErrorKind::Connect => Some(RetryOn::ConnectError),
        // Client faults never succeed on retry; a provider's 401/403/404 is configuration.
        ErrorKind::BadRequest
        | ErrorKind::ContextWindow
        | ErrorKind::ContentPolicy
        | ErrorKind::Auth
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound => None,
    }
}

pub(super) fn retry_reason(f: &Failure) -> &'static str {
    match f {
        Failure::Upstream { error, .. } => match error.kind {
            ErrorKind::RateLimit => "rate-limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect-error",
            _ => "server-error",
        },
        Failure::Cooling { .. } => "cooling",
        Failure::NoBackend { .. } => "no-backend",
    }
}

/// What a failure does to the backend's cooldown and circuit.
pub(super) fn strike(error: &ProviderError, provider: &ProviderConfig, retries: &RetryConfig) -> Option<Strike> {
    let cb = &provider.circuit_breaker;
    let open_for = Duration::from_millis(cb.cooldown_ms);
    let base = Strike {
        counts: false,
        threshold: cb.consecutive_failures,
        open_for,
        cool_for: None,
    };
    match error.kind {
        // A 429 cools the backend for its retry-after (else one backoff step); it does not count
        // toward opening the circuit: the backend is busy, not broken.
        ErrorKind::RateLimit => Some(Strike {
            cool_for: Some(
                error
                    .retry_after
                    .unwrap_or(Duration::from_millis(retries.backoff_ms))
                    .min(open_for.max(Duration::from_secs(1))),
            ),
            ..base
        }),
        ErrorKind::Server
        | ErrorKind::Timeout
        | ErrorKind::Connect
        | ErrorKind::Protocol
        | ErrorKind::Auth
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound => Some(Strike { counts: true, ..base }),
        ErrorKind::BadRequest | ErrorKind::ContextWindow | ErrorKind::ContentPolicy => None,
    }
}
