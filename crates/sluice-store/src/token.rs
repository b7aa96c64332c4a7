//! API tokens and roles. A token is `slc_<id>_<secret>` (256 random bits of secret); only the SHA-256 of the
//! whole token is kept, and it is compared in constant time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Run rollouts, decide, approve; change flags.
    Operator,
    /// Read.
    Viewer,
    /// Evaluate flags and send metrics only.
    Sdk,
}

impl Role {
    /// Whether this role includes `needed`: admin ⊇ operator ⊇ viewer; `sdk` is only itself.
    ///
    /// ```
    /// use sluice_store::Role;
    /// assert!(Role::Admin.allows(Role::Viewer));
    /// assert!(!Role::Viewer.allows(Role::Operator));
    /// assert!(!Role::Admin.allows(Role::Sdk) && Role::Sdk.allows(Role::Sdk));
    /// ```
    pub fn allows(self, needed: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Viewer => 1,
            Role::Operator => 2,
            Role::Admin => 3,
            Role::Sdk => 0,
        };
        match needed {
            Role::Sdk => self == Role::Sdk,
            _ => self != Role::Sdk && rank(self) >= rank(needed),
        }
    }

    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Sdk => "sdk",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            "sdk" => Ok(Role::Sdk),
            other => Err(format!("unknown role `{other}`; expected admin, operator, viewer or sdk")),
        }
    }
}

/// The authenticated principal behind a request: the actor of every audit event it causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Public id (the part of the token before the secret).
    pub id: String,
    /// Unique name; the actor of what the token does.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// The active tokens, for authenticating without touching the database on every request. Keyed by the
/// SHA-256 of the whole token, so that a token of any format (e.g. `SLUICE_ADMIN_TOKEN`) works.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    /// First 16 hex digits of the digest → (whole digest, principal).
    by_prefix: std::collections::HashMap<String, Vec<(String, Principal)>>,
}

impl TokenTable {
    /// The principal behind `token`, if it is active.
    ///
    /// ```
    /// let table = sluice_store::TokenTable::default();
    /// assert!(table.authenticate("slc_nope").is_none());
    /// ```
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        if token.is_empty() || token.len() > 512 {
            return None;
        }
        // The map narrows by a digest prefix; the whole digest is then compared in constant time.
        let digest = sha256_hex(token);
        let candidates = self.by_prefix.get(&digest[..16])?;
        candidates.iter().find(|(full, _)| constant_time_eq(full, &digest)).map(|(_, p)| p)
    }

    pub(crate) fn insert(&mut self, secret_sha256: String, principal: Principal) {
        self.by_prefix.entry(secret_sha256[..16].to_string()).or_default().push((secret_sha256, principal));
    }

    /// Number of active tokens.
    pub fn len(&self) -> usize {
        self.by_prefix.values().map(Vec::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    hex(&buf)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal without an early exit, so the time taken does not say how much of a guess was right.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
