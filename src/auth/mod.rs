//! Authentication of incoming requests (bearer tokens, HTTP basic auth) and the
//! credentials the collector's exporters send.
//!
//! Both binaries use it on their listeners through [`AuthLayer`], a tower layer that works
//! on axum routers and tonic servers alike. Secrets only ever come from files (so systemd
//! `LoadCredential=` works) and never reach logs: [`Secret`] redacts itself in `Debug`,
//! refusals log the listener and the peer but never the presented credential, and the
//! answer to a client does not say which part of a credential was wrong.
//!
//! A credential may name a tenant; a request authenticated with it then belongs to that
//! tenant whatever `X-Scope-OrgID` it sends (a different one is refused), so a token can
//! be handed to a team without trusting it to name its own tenant.

mod layer;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use subtle::{Choice, ConstantTimeEq};

use crate::error::{ErrorCode, ServiceError};
use crate::tenant::{TenantId, TENANT_HEADER};

pub use layer::{protect, protect_grpc, AuthLayer, AuthRefusals, AuthService, RefusalBody};

/// A secret read from a file: `Debug` never shows it, and nothing in spoor logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Reads a secret file whole, without its trailing newline (`echo token > file`).
    ///
    /// # Errors
    /// The file cannot be read, is not UTF-8, or holds nothing but a newline.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        // The error must not echo the content: a binary file could still be a secret.
        let text = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 {
            path: path.to_owned(),
        })?;
        let trimmed = text.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Secret(trimmed.to_owned()))
    }

    /// The secret a config key points at, for `unit` (`spoor-server.service`): the
    /// message for the key when the path is missing or the file unusable.
    ///
    /// # Errors
    /// No path was given, or [`Secret::from_file`] failed.
    pub fn from_config(path: Option<&Path>, unit: &str) -> Result<Secret, String> {
        let Some(path) = path.filter(|path| !path.as_os_str().is_empty()) else {
            return Err(format!(
                "is required: the file holding the secret (with systemd LoadCredential=, \
                 /run/credentials/{unit}/<name>)"
            ));
        };
        Secret::from_file(path).map_err(|error| error.to_string())
    }

    /// A secret parsed out of a secret file (an htpasswd line's password).
    pub(crate) fn from_text(text: &str) -> Secret {
        Secret(text.to_owned())
    }

    /// The secret itself, for comparing or sending; never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test(text: &str) -> Secret {
        Secret(text.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret file could not be used; never includes the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{} is empty", path.display())]
    Empty { path: PathBuf },
}

/// One accepted credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer {
        token: Secret,
        /// The tenant of every request made with this token.
        tenant: Option<TenantId>,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        username: String,
        password: Secret,
        tenant: Option<TenantId>,
    },
}

/// The credentials one listener accepts; empty means the listener is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub credentials: Vec<Credential>,
}

impl AuthConfig {
    pub fn is_enabled(&self) -> bool {
        !self.credentials.is_empty()
    }

    fn accepts_bearer(&self) -> bool {
        self.credentials
            .iter()
            .any(|credential| matches!(credential, Credential::Bearer { .. }))
    }

    fn accepts_basic(&self) -> bool {
        self.credentials
            .iter()
            .any(|credential| matches!(credential, Credential::Basic { .. }))
    }

    /// Checks the request's `Authorization` header and, for a credential with a tenant,
    /// its `X-Scope-OrgID`. Returns the tenant the request must be attributed to.
    ///
    /// # Errors
    /// A [`Refusal`]; its message is the same for every kind of bad credential.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<TenantId>, Refusal> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(Refusal::Missing);
        };
        let presented = Presented::parse(value).ok_or(Refusal::Invalid)?;
        let tenant = match self.matching(&presented).ok_or(Refusal::Invalid)? {
            Credential::Bearer { tenant, .. } | Credential::Basic { tenant, .. } => tenant.clone(),
        };
        if let Some(tenant) = &tenant {
            let sent = headers
                .get(TENANT_HEADER)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_owned())
                .filter(|sent| !sent.is_empty());
            if let Some(sent) = sent {
                if sent != tenant.as_str() {
                    return Err(Refusal::TenantConflict {
                        sent,
                        tenant: tenant.clone(),
                    });
                }
            }
        }
        Ok(tenant)
    }

    /// The credential `presented` matches. Every credential is compared, without
    /// stopping at the first match, so the time taken does not tell which one matched or
    /// how much of it.
    fn matching(&self, presented: &Presented) -> Option<&Credential> {
        let mut found = None;
        for credential in &self.credentials {
            let matched: Choice = match (credential, presented) {
                (Credential::Bearer { token, .. }, Presented::Bearer(sent)) => {
                    constant_time_eq(sent.as_bytes(), token.expose().as_bytes())
                }
                (
                    Credential::Basic {
                        username, password, ..
                    },
                    Presented::Basic {
                        username: sent_user,
                        password: sent_password,
                    },
                ) => {
                    constant_time_eq(sent_user.as_bytes(), username.as_bytes())
                        & constant_time_eq(sent_password.as_bytes(), password.expose().as_bytes())
                }
                _ => Choice::from(0),
            };
            if bool::from(matched) && found.is_none() {
                found = Some(credential);
            }
        }
        found
    }
}

/// Compares in time that depends only on `expected`'s length, never on where `presented`
/// first differs or on how long it is.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> Choice {
    let same_length = (presented.len() as u64).ct_eq(&(expected.len() as u64));
    let mut equal = Choice::from(1);
    for (index, expected_byte) in expected.iter().enumerate() {
        let presented_byte = presented.get(index).copied().unwrap_or(0);
        equal &= presented_byte.ct_eq(expected_byte);
    }
    equal & same_length
}

/// The credential a request presents.
enum Presented {
    Bearer(String),
    Basic { username: String, password: String },
}

impl Presented {
    /// `None` for anything that is not a well-formed bearer or basic credential.
    fn parse(value: &HeaderValue) -> Option<Presented> {
        let text = value.to_str().ok()?.trim();
        let (scheme, rest) = text.split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return (!rest.is_empty()).then(|| Presented::Bearer(rest.to_owned()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (username, password) = decoded.split_once(':')?;
            return Some(Presented::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            });
        }
        None
    }
}

/// Why a request was refused. The client sees [`Refusal::client_message`], identical for
/// every bad credential so that a guesser learns nothing about which part was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{UNAUTHENTICATED_MESSAGE}")]
    Missing,
    #[error("{UNAUTHENTICATED_MESSAGE}")]
    Invalid,
    #[error(
        "X-Scope-OrgID {sent:?} conflicts with the tenant of the credential ({tenant}); \
         omit the header or send that tenant"
    )]
    TenantConflict { sent: String, tenant: TenantId },
}

/// The one answer to a missing, malformed or wrong credential.
pub const UNAUTHENTICATED_MESSAGE: &str = "authentication required: missing or invalid credentials";

impl Refusal {
    /// The label of `spoor_auth_refused_requests_total` / the log field.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::TenantConflict { .. } => "tenant_conflict",
        }
    }

    pub fn client_message(&self) -> String {
        self.to_string()
    }
}

impl ServiceError for Refusal {
    fn error_code(&self) -> ErrorCode {
        match self {
            Refusal::Missing | Refusal::Invalid => ErrorCode::Unauthenticated,
            Refusal::TenantConflict { .. } => ErrorCode::PermissionDenied,
        }
    }
}

/// The credential an exporter sends with every request.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: <scheme> <token>` (scheme `Bearer` unless configured otherwise).
    Bearer { scheme: String, token: Secret },
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: Secret },
}

impl ClientAuth {
    /// The `Authorization` header value, marked sensitive so that `Debug` of the header
    /// map (and HTTP/2 header compression) leaves it out.
    ///
    /// # Errors
    /// The secret holds characters that cannot appear in a header.
    pub fn header_value(&self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        let text = match self {
            ClientAuth::Bearer { scheme, token } if scheme.is_empty() => token.expose().to_owned(),
            ClientAuth::Bearer { scheme, token } => format!("{scheme} {}", token.expose()),
            ClientAuth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
        };
        let mut value = HeaderValue::from_str(&text)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Bearer { scheme, token } => f
                .debug_struct("Bearer")
                .field("scheme", scheme)
                .field("token", token)
                .finish(),
            ClientAuth::Basic { username, password } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", password)
                .finish(),
        }
    }
}
