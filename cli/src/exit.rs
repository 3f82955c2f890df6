//! Exit statuses (documented in `rlm --help`) and the error type that carries one.

use std::fmt;

use rlm_proto::rlm::v1::TerminationReason;
use tonic::Code;

/// Success; for `rlm run`, the completion answered with FINAL.
pub const OK: u8 = 0;
/// Any other error.
pub const OTHER: u8 = 1;
/// Invalid input (usage errors, INVALID_ARGUMENT, unknown ids).
pub const INVALID: u8 = 2;
/// A budget or limit ended the completion.
pub const LIMIT: u8 = 3;
/// The completion was cancelled.
pub const CANCELLED: u8 = 4;
/// The completion ended on a model, sandbox or internal error.
pub const FAILED: u8 = 5;
/// Service unavailable (sysexits EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// Interrupted twice while waiting for a cancelled completion.
pub const INTERRUPTED: u8 = 130;

/// An error that ends the command with `code`.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(INVALID, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(UNAVAILABLE, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(OTHER, message)
    }

    /// A failed RPC: `what` says which call (e.g. "StreamComplete").
    pub fn from_status(status: &tonic::Status, what: &str) -> Self {
        let code = code_for_status(status.code());
        let mut message = format!("{what}: {}: {}", code_name(status.code()), status.message());
        if code == UNAVAILABLE {
            message.push_str(" (is the service running? `rlm doctor` checks every component)");
        }
        Self::new(code, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::other(format!("{err:#}"))
    }
}

/// Exit status for an RPC error code.
pub fn code_for_status(code: Code) -> u8 {
    match code {
        Code::InvalidArgument | Code::NotFound | Code::OutOfRange => INVALID,
        Code::Unavailable => UNAVAILABLE,
        _ => OTHER,
    }
}

/// Exit status for how a completion ended.
pub fn code_for_reason(reason: TerminationReason) -> u8 {
    use TerminationReason as R;
    match reason {
        R::Final => OK,
        R::MaxIterations | R::TokenBudget | R::CostBudget | R::Timeout | R::MaxSubcalls => LIMIT,
        R::Cancelled => CANCELLED,
        R::ModelError | R::SandboxError | R::Error => FAILED,
        R::Unspecified => OTHER,
    }
}

/// `INVALID_ARGUMENT` style name of a gRPC code.
pub fn code_name(code: Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The message of `err` followed by its sources, `: `-separated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons_map_to_documented_codes() {
        assert_eq!(code_for_status(Code::InvalidArgument), INVALID);
        assert_eq!(code_for_status(Code::Unavailable), UNAVAILABLE);
        assert_eq!(code_for_status(Code::Internal), OTHER);
        assert_eq!(code_for_reason(TerminationReason::Final), OK);
        assert_eq!(code_for_reason(TerminationReason::TokenBudget), LIMIT);
        assert_eq!(code_for_reason(TerminationReason::Timeout), LIMIT);
        assert_eq!(code_for_reason(TerminationReason::Cancelled), CANCELLED);
        assert_eq!(code_for_reason(TerminationReason::SandboxError), FAILED);
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
    }

    #[test]
    fn status_failure_names_the_call_and_field() {
        let f = Failure::from_status(
            &tonic::Status::invalid_argument("spec.prompt: must not be empty"),
            "StreamComplete",
        );
        assert_eq!(f.code, INVALID);
        assert_eq!(
            f.message,
            "StreamComplete: INVALID_ARGUMENT: spec.prompt: must not be empty"
        );
    }
}
