//! One table mapping every module error to its gRPC and HTTP meaning (after Quickwit's
//! `ServiceErrorCode`). Modules keep their own thiserror enums and implement
//! [`ServiceError`]; transports never decide a status code themselves.

use std::time::Duration;

/// What an error means on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed request or unsupported input: the client must change the request.
    InvalidArgument,
    /// The request names something that does not exist.
    NotFound,
    /// A bounded queue or limit is full; retry after the given delay.
    ResourceExhausted { retry_after: Duration },
    /// Shutting down, not ready yet, or a dependency is unreachable; retry elsewhere or later.
    Unavailable,
    /// The request body is larger than the configured maximum.
    PayloadTooLarge,
    /// Authentication is missing or wrong.
    Unauthenticated,
    /// Authenticated, but the request asks for something the credential does not allow.
    PermissionDenied,
    /// A bug or an unexpected storage failure.
    Internal,
}

impl ErrorCode {
    pub fn grpc(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::ResourceExhausted { .. } => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::PayloadTooLarge => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    pub fn http(self) -> http::StatusCode {
        match self {
            ErrorCode::InvalidArgument => http::StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => http::StatusCode::NOT_FOUND,
            ErrorCode::ResourceExhausted { .. } => http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PayloadTooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => http::StatusCode::FORBIDDEN,
            ErrorCode::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The delay a client should wait before retrying, when the error is retryable.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            ErrorCode::ResourceExhausted { retry_after } => Some(retry_after),
            _ => None,
        }
    }
}

/// Implemented by every module error that can reach a client.
pub trait ServiceError: std::error::Error {
    fn error_code(&self) -> ErrorCode;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_design() {
        let full = ErrorCode::ResourceExhausted {
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(full.grpc(), tonic::Code::ResourceExhausted);
        assert_eq!(full.http(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            ErrorCode::Unavailable.http(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ErrorCode::InvalidArgument.grpc(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(ErrorCode::Unavailable.retry_after(), None);
    }
}
