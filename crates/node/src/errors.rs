//! Structured errors: every error status the node returns carries a
//! `google.rpc.ErrorInfo` (domain [`ERROR_DOMAIN`], a stable reason from
//! `govchain.types.v1.ErrorReason`) and, where it helps a program, a
//! `BadRequest` field violation, `RetryInfo`, `PreconditionFailure` or
//! `ResourceInfo` (tonic-types encodes them into `grpc-status-details-bin`).
//! The message stays the human explanation.
//!
//! Build one with [`Failure`], or with the short forms below for the plain
//! cases.

use std::collections::HashMap;
use std::time::Duration;

pub use govchain_proto::types::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "govchain";

/// When to retry after a limit was reached, if the limit says nothing more
/// precise.
pub const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);

/// `reason`'s name as `ErrorInfo.reason` carries it: "NONCE_USED".
pub fn reason_name(reason: ErrorReason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// The reason `status` carries in its `ErrorInfo`, or its code's when it
/// carries none (or one of another domain).
pub fn reason_of(status: &Status) -> ErrorReason {
    status
        .get_details_error_info()
        .filter(|info| info.domain == ERROR_DOMAIN)
        .and_then(|info| ErrorReason::from_str_name(&format!("ERROR_REASON_{}", info.reason)))
        .unwrap_or_else(|| reason_for_code(status.code()))
}

/// An error status being built.
#[must_use]
pub struct Failure {
    code: Code,
    reason: ErrorReason,
    message: String,
    metadata: HashMap<String, String>,
    details: ErrorDetails,
}

impl Failure {
    pub fn new(code: Code, reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            metadata: HashMap::new(),
            details: ErrorDetails::new(),
        }
    }

    /// An `ErrorInfo.metadata` entry.
    pub fn meta(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// A `BadRequest` field violation: `field` (a request field's path, as
    /// "transaction_ids[3]") is at fault.
    pub fn field(mut self, field: &str, description: impl Into<String>) -> Self {
        self.details
            .add_bad_request_violation(field, description.into());
        self
    }

    /// `RetryInfo`: try again after `delay`.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.details.set_retry_info(Some(delay));
        self
    }

    /// A `PreconditionFailure` violation of `kind` about `subject`.
    pub fn precondition(
        mut self,
        kind: &str,
        subject: &str,
        description: impl Into<String>,
    ) -> Self {
        self.details
            .add_precondition_failure_violation(kind, subject, description.into());
        self
    }

    /// `ResourceInfo`: the `kind` of thing named `name` (not found, say).
    pub fn resource(mut self, kind: &str, name: &str) -> Self {
        self.details.set_resource_info(kind, name, "", "");
        self
    }

    pub fn status(self) -> Status {
        let Self {
            code,
            reason,
            message,
            metadata,
            mut details,
        } = self;
        details.set_error_info(reason_name(reason), ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Self {
        failure.status()
    }
}

/// INVALID_ARGUMENT, `INVALID_REQUEST`, with `field` at fault.
pub fn invalid_field(field: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    Failure::new(
        Code::InvalidArgument,
        ErrorReason::InvalidRequest,
        message.clone(),
    )
    .field(field, message)
    .status()
}

/// INVALID_ARGUMENT, `INVALID_REQUEST`, no single field at fault.
pub fn invalid_argument(message: impl Into<String>) -> Status {
    Failure::new(Code::InvalidArgument, ErrorReason::InvalidRequest, message).status()
}

/// NOT_FOUND, `NOT_FOUND`, naming what: a `kind` ("transaction") called
/// `name`.
pub fn not_found(kind: &str, name: &str, message: impl Into<String>) -> Status {
    Failure::new(Code::NotFound, ErrorReason::NotFound, message)
        .resource(kind, name)
        .status()
}

/// NOT_FOUND, `NOT_FOUND`, for something without one name.
pub fn not_found_plain(message: impl Into<String>) -> Status {
    Failure::new(Code::NotFound, ErrorReason::NotFound, message).status()
}

pub fn already_exists(message: impl Into<String>) -> Status {
    Failure::new(Code::AlreadyExists, ErrorReason::AlreadyExists, message).status()
}

pub fn permission_denied(message: impl Into<String>) -> Status {
    Failure::new(
        Code::PermissionDenied,
        ErrorReason::PermissionDenied,
        message,
    )
    .status()
}

pub fn unauthenticated(message: impl Into<String>) -> Status {
    Failure::new(Code::Unauthenticated, ErrorReason::Unauthenticated, message).status()
}

pub fn failed_precondition(message: impl Into<String>) -> Status {
    Failure::new(
        Code::FailedPrecondition,
        ErrorReason::FailedPrecondition,
        message,
    )
    .status()
}

pub fn out_of_range(message: impl Into<String>) -> Status {
    Failure::new(Code::OutOfRange, ErrorReason::OutOfRange, message).status()
}

pub fn data_loss(message: impl Into<String>) -> Status {
    Failure::new(Code::DataLoss, ErrorReason::DataLoss, message).status()
}

pub fn deadline_exceeded(message: impl Into<String>) -> Status {
    Failure::new(
        Code::DeadlineExceeded,
        ErrorReason::DeadlineExceeded,
        message,
    )
    .status()
}

/// RESOURCE_EXHAUSTED, `LIMIT_REACHED`: the bound named `limit` (a
/// constant's or a config key's name) was reached.
pub fn limit_reached(limit: &str, message: impl Into<String>) -> Status {
    Failure::new(Code::ResourceExhausted, ErrorReason::LimitReached, message)
        .meta("limit", limit)
        .retry_after(RETRY_AFTER_DEFAULT)
        .status()
}

/// UNAVAILABLE, `UNAVAILABLE`, retry after `delay`.
pub fn unavailable(message: impl Into<String>, delay: Duration) -> Status {
    Failure::new(Code::Unavailable, ErrorReason::Unavailable, message)
        .retry_after(delay)
        .status()
}

/// INTERNAL, `INTERNAL`, with the request id the node logged it under.
pub fn internal_logged(message: impl Into<String>, request_id: &str) -> Status {
    Failure::new(Code::Internal, ErrorReason::Internal, message)
        .meta("request_id", request_id)
        .status()
}

/// The reason an error status gets when nothing more precise was said:
/// the reason of its code.
fn reason_for_code(code: Code) -> ErrorReason {
    match code {
        Code::InvalidArgument | Code::Unimplemented => ErrorReason::InvalidRequest,
        Code::NotFound => ErrorReason::NotFound,
        Code::AlreadyExists => ErrorReason::AlreadyExists,
        Code::PermissionDenied => ErrorReason::PermissionDenied,
        Code::FailedPrecondition => ErrorReason::FailedPrecondition,
        Code::ResourceExhausted => ErrorReason::LimitReached,
        Code::DeadlineExceeded => ErrorReason::DeadlineExceeded,
        Code::OutOfRange => ErrorReason::OutOfRange,
        Code::Unauthenticated => ErrorReason::Unauthenticated,
        Code::DataLoss => ErrorReason::DataLoss,
        Code::Internal => ErrorReason::Internal,
        Code::Ok | Code::Cancelled | Code::Unknown | Code::Aborted | Code::Unavailable => {
            ErrorReason::Unavailable
        }
    }
}

/// Gives an error status that tonic itself answered (a request over the
/// size limit, an unknown method) the same `ErrorInfo` as the node's own,
/// by its code; statuses that carry details already pass unchanged.
#[derive(Clone, Copy, Debug)]
pub struct ErrorDetailsLayer;

impl<S> tower_layer::Layer<S> for ErrorDetailsLayer {
    type Service = ErrorDetailsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorDetailsService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ErrorDetailsService<S> {
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for ErrorDetailsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            add_missing_details(response.headers_mut());
            Ok(response)
        })
    }
}

/// Adds an `ErrorInfo` to an error status in `headers` (a trailers-only
/// answer) that has no details.
fn add_missing_details(headers: &mut http::HeaderMap) {
    if headers.contains_key("grpc-status-details-bin") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() == Code::Ok {
        return;
    }
    // Only fails for a message that cannot be a header, which tonic's
    // own was.
    let _ = detailed(status).add_header(headers);
}

/// `status` with the `ErrorInfo` of its code (and `RetryInfo` where a retry
/// helps) when it carries no details: for statuses tonic made, such as a
/// request stream's message that does not decode, passed on to the caller.
pub fn detailed(status: Status) -> Status {
    if !status.details().is_empty() {
        return status;
    }
    let mut failure = Failure::new(
        status.code(),
        reason_for_code(status.code()),
        status.message(),
    );
    if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable) {
        failure = failure.retry_after(RETRY_AFTER_DEFAULT);
    }
    failure.status()
}

/// Longest piece of a request echoed back in an error message.
pub const ECHO_CHARS_MAX: usize = 96;

/// `text` quoted for an error message, cut to [`ECHO_CHARS_MAX`]
/// characters: a request may carry megabytes where a name is expected, and
/// the answer (and the log) should not repeat them.
pub(crate) fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS_MAX) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes in all)", &text[..end], text.len()),
    }
}

pub(crate) fn internal(context: &str, err: impl std::fmt::Display) -> Status {
    let request_id = format!("{:016x}", rand_id());
    tracing::error!(request_id, error = %err, "{context}");
    internal_logged(
        format!("{context}; see the node log for request {request_id}"),
        &request_id,
    )
}

/// A ledger read failed: NOT_FOUND for a block whose transactions were
/// pruned (`prune_horizon_blocks`), naming the first height held whole
/// (also in the `bodies_from` metadata); INTERNAL, logged, otherwise.
pub(crate) fn ledger_read(err: govchain_ledger::ReadError) -> Status {
    match err {
        govchain_ledger::ReadError::Pruned {
            height,
            bodies_from,
        } => Failure::new(
            Code::NotFound,
            ErrorReason::NotFound,
            format!(
                "block {height}'s transactions were pruned on this node, which keeps whole blocks from height {bodies_from} on (prune_horizon_blocks); its header and commit certificate remain (FetchBlocks with headers_only); ask a node that keeps every block"
            ),
        )
        .meta("bodies_from", bodies_from)
        .status(),
        other => internal("ledger read failed", other),
    }
}

/// A request id for correlating an internal error with the log; unique
/// enough without a random number generator.
fn rand_id() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    crate::clock::now_ms().wrapping_mul(1_000_003)
        ^ COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tonic_types::StatusExt as _;

    use super::*;

    #[test]
    fn a_failure_carries_its_reason_domain_metadata_and_details() {
        let status = Failure::new(
            Code::FailedPrecondition,
            ErrorReason::NonceUsed,
            "nonce 3 is used",
        )
        .meta("committed_nonce", 5)
        .precondition("NONCE", "abcd", "nonce 3 is used")
        .retry_after(Duration::from_millis(1500))
        .status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "nonce 3 is used");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "NONCE_USED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("committed_nonce").map(String::as_str),
            Some("5")
        );
        let violations = &details
            .precondition_failure()
            .expect("PreconditionFailure")
            .violations;
        assert_eq!(violations[0].r#type, "NONCE");
        assert_eq!(violations[0].subject, "abcd");
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn the_short_forms_name_field_limit_and_resource() {
        let field = invalid_field("transaction_ids[2]", "not 32 bytes");
        let details = field.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "INVALID_REQUEST");
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "transaction_ids[2]"
        );
        let limit = limit_reached("UPLOADS_PER_DEPARTMENT", "too many uploads");
        assert_eq!(limit.code(), Code::ResourceExhausted);
        let details = limit.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "LIMIT_REACHED");
        assert_eq!(info.metadata["limit"], "UPLOADS_PER_DEPARTMENT");
        assert!(details.retry_info().is_some());
        let missing = not_found("transaction", "ab12", "no such transaction");
        let details = missing.get_error_details();
        assert_eq!(details.resource_info().unwrap().resource_name, "ab12");
        assert_eq!(details.error_info().unwrap().reason, "NOT_FOUND");
    }

    #[test]
    fn a_bare_error_status_in_headers_gets_details_and_a_detailed_one_is_kept() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range("decoded message length too large")
            .add_header(&mut headers)
            .unwrap();
        add_missing_details(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), "decoded message length too large");
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "OUT_OF_RANGE"
        );

        let mut headers = http::HeaderMap::new();
        Failure::new(Code::FailedPrecondition, ErrorReason::NonceUsed, "used")
            .status()
            .add_header(&mut headers)
            .unwrap();
        add_missing_details(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "NONCE_USED"
        );
    }

    #[test]
    fn a_bare_status_gets_the_details_of_its_code_and_a_detailed_one_is_kept() {
        let bare = detailed(Status::invalid_argument("failed to decode message"));
        assert_eq!(bare.code(), Code::InvalidArgument);
        assert_eq!(bare.message(), "failed to decode message");
        assert_eq!(reason_of(&bare), ErrorReason::InvalidRequest);
        assert!(bare.get_details_error_info().is_some());
        let own = Failure::new(Code::FailedPrecondition, ErrorReason::NonceUsed, "used").status();
        let kept = detailed(own.clone());
        assert_eq!(kept.details(), own.details());
    }

    #[test]
    fn the_reason_of_a_status_is_read_back_from_its_details() {
        let status =
            Failure::new(Code::FailedPrecondition, ErrorReason::NonceUsed, "used").status();
        assert_eq!(reason_of(&status), ErrorReason::NonceUsed);
        // No details: the code's reason.
        assert_eq!(
            reason_of(&Status::resource_exhausted("full")),
            ErrorReason::LimitReached
        );
    }

    #[test]
    fn every_reason_name_is_short_upper_snake_case() {
        for value in 0..64 {
            let Ok(reason) = ErrorReason::try_from(value) else {
                continue;
            };
            let name = reason_name(reason);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(!name.starts_with("ERROR_REASON_"), "{name}");
        }
    }
}

#[cfg(test)]
mod echo_tests {
    use super::*;

    #[test]
    fn long_input_is_cut_and_short_input_kept() {
        assert_eq!(echo("tax"), "\"tax\"");
        let long = "x".repeat(1_000_000);
        let echoed = echo(&long);
        assert!(echoed.len() < 200, "{}", echoed.len());
        assert!(echoed.ends_with("… (1000000 bytes in all)"), "{echoed}");
        // Cut on a character boundary.
        let wide = "é".repeat(200);
        assert!(echo(&wide).starts_with(&format!("{:?}", "é".repeat(ECHO_CHARS_MAX))));
    }
}
