//! What one request came to: `Done` (status, bytes, timings, and a `Failure` when it did not
//! succeed), and the fixed words for kinds of failure (`ErrorKind`) that go into the
//! `error_kind` column, so criteria can count each: `count(where error_kind == "timeout")`.

use std::borrow::Cow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No connection: refused, unreachable, TLS or HTTP handshake failed.
    Connect,
    /// No complete response within the request's timeout.
    Timeout,
    /// A status the task's check does not accept.
    Status,
    /// The status was accepted but a body check or an extraction failed.
    Check,
    /// The response was not HTTP, or the connection broke mid-response.
    Protocol,
    /// The body was longer than `max_body_bytes`.
    Body,
    /// planrun could not build the request (a template failed, a bad header).
    Request,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status => "status",
            ErrorKind::Check => "check",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Body => "body",
            ErrorKind::Request => "request",
        }
    }

    /// Whether the connection can carry another request after this failure.
    pub fn keeps_connection(self) -> bool {
        matches!(self, ErrorKind::Status | ErrorKind::Check | ErrorKind::Request)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Failure {
        Failure { kind, message: message.into() }
    }
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct Done {
    pub status: Option<u16>,
    pub bytes: u64,
    /// From the intended send time (open model) or the actual one (closed) to the end, ms.
    pub latency_ms: f64,
    /// From the actual send to the end, ms.
    pub service_ms: f64,
    pub failure: Option<Failure>,
}

impl Done {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}
