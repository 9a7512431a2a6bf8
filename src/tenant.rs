//! Tenant IDs from `X-Scope-OrgID` (HTTP) / `x-scope-orgid` (gRPC metadata).
//!
//! Tenant names become object-store path segments, so they are validated here with
//! Tempo's rules and nothing else ever builds a path from an unchecked name.

use std::fmt;

/// The tenant used when a request carries no (or an empty) org ID.
pub const SINGLE_TENANT: &str = "single-tenant";

/// Header that names the tenant.
pub const TENANT_HEADER: &str = "x-scope-orgid";

const MAX_TENANT_LEN: usize = 150;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("tenant ID is longer than {MAX_TENANT_LEN} bytes")]
    TooLong,
    #[error("tenant ID contains unsupported character '{0}'")]
    BadCharacter(char),
    #[error("tenant ID must not be '.' or '..'")]
    DotName,
    #[error("multiple tenant IDs are not supported here")]
    Multiple,
}

impl TenantId {
    /// Validates a tenant name: at most 150 bytes of alphanumerics and `! - _ . * ' ( )`.
    pub fn new(name: &str) -> Result<TenantId, TenantError> {
        if name.len() > MAX_TENANT_LEN {
            return Err(TenantError::TooLong);
        }
        if name == "." || name == ".." {
            return Err(TenantError::DotName);
        }
        if name.contains('|') {
            return Err(TenantError::Multiple);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
        {
            return Err(TenantError::BadCharacter(bad));
        }
        Ok(TenantId(name.to_string()))
    }

    /// Interprets a header value: absent or empty means the single tenant.
    pub fn from_header(value: Option<&str>) -> Result<TenantId, TenantError> {
        match value.map(str::trim) {
            None | Some("") => Ok(TenantId::single()),
            Some(name) => TenantId::new(name),
        }
    }

    pub fn single() -> TenantId {
        TenantId(SINGLE_TENANT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        assert_eq!(TenantId::from_header(None).unwrap().as_str(), SINGLE_TENANT);
        assert_eq!(
            TenantId::from_header(Some("")).unwrap().as_str(),
            SINGLE_TENANT
        );
        assert_eq!(
            TenantId::from_header(Some("acme")).unwrap().as_str(),
            "acme"
        );
        assert_eq!(TenantId::new("a/b"), Err(TenantError::BadCharacter('/')));
        assert_eq!(TenantId::new(".."), Err(TenantError::DotName));
        assert_eq!(TenantId::new("a|b"), Err(TenantError::Multiple));
        assert_eq!(TenantId::new(&"x".repeat(151)), Err(TenantError::TooLong));
        assert!(TenantId::new("team-1_(prod)").is_ok());
    }
}
