//! API tokens and roles. A token is `slc_<id>_<secret>` (256 random bits of secret); only the SHA-256 of the
//! whole token is kept, and it is compared in constant time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::NewEvent;
use crate::stored::{rfc3339, Columns};
use crate::StoreError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The environments it may act in; `None`: every one. An `sdk` token's has exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envs: Option<Vec<String>>,
}

impl Principal {
    /// A principal that may act in every environment.
    pub fn new(name: impl Into<String>, role: Role) -> Principal {
        Principal { name: name.into(), role, envs: None }
    }

    /// Whether it may act in the environment `env`.
    ///
    /// ```
    /// use sluice_store::{Principal, Role};
    /// let mut p = Principal::new("ci", Role::Operator);
    /// assert!(p.may_act_in("production"));
    /// p.envs = Some(vec!["staging".into()]);
    /// assert!(p.may_act_in("staging") && !p.may_act_in("production"));
    /// ```
    pub fn may_act_in(&self, env: &str) -> bool {
        self.envs.as_ref().is_none_or(|envs| envs.iter().any(|e| e == env))
    }

    /// The one environment it is limited to, if it is limited to one (always, for an `sdk` token).
    pub fn only_env(&self) -> Option<&str> {
        match self.envs.as_deref() {
            Some([one]) => Some(one),
            _ => None,
        }
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The environments it may act in; absent: every one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envs: Option<Vec<String>>,
}

/// The active tokens, for authenticating without touching the database on every request. Keyed by the
/// SHA-256 of the whole token, so that a token of any format (e.g. `SLUICE_ADMIN_TOKEN`) works.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    /// First 16 hex digits of the digest → (whole digest, principal, valid until (ms), for a secret in its
    /// rotation overlap).
    by_prefix: std::collections::HashMap<String, Vec<(String, Principal, Option<i64>)>>,
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
        candidates
            .iter()
            .find(|(full, _, until)| constant_time_eq(full, &digest) && until.is_none_or(|u| still_valid(&u)))
            .map(|(_, p, _)| p)
    }

    /// The active token named `name` whose digest starts with `digest_prefix` (16 hex digits): a session made
    /// from a token ends when that token is revoked, even if a new token gets the same name.
    pub fn by_digest_prefix(&self, digest_prefix: &str, name: &str) -> Option<&Principal> {
        self.by_prefix
            .get(digest_prefix)?
            .iter()
            .filter(|(_, _, until)| until.is_none_or(|u| still_valid(&u)))
            .map(|(_, p, _)| p)
            .find(|p| p.name == name)
    }

    /// The first 16 hex digits of `token`'s digest, when it is active: what a session remembers of it.
    pub fn digest_prefix(&self, token: &str) -> Option<String> {
        self.authenticate(token).map(|_| sha256_hex(token)[..16].to_string())
    }

    fn insert(&mut self, secret_sha256: String, principal: Principal, until: Option<i64>) {
        self.by_prefix.entry(secret_sha256[..16].to_string()).or_default().push((secret_sha256, principal, until));
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

/// Whether a rotated secret's overlap (ms since the epoch) has not run out: checked at each use, so that
/// it stops working on time without a reload.
fn still_valid(until: &i64) -> bool {
    Utc::now().timestamp_millis() < *until
}

/// Why a replica may not start with a bootstrap token (`SLUICE_ADMIN_TOKEN`) that was revoked or rotated
/// away: starting would hand the leaked secret its power back.
pub(crate) fn revoked_bootstrap(name: &str, at: &str) -> StoreError {
    StoreError::Conflict {
        message: format!(
            "SLUICE_ADMIN_TOKEN is a secret of the token `{name}` that was revoked or rotated away at {at}: \
             start with the current one (or without SLUICE_ADMIN_TOKEN, using a token created since)"
        ),
    }
}

/// A fresh `slc_<id>_<secret>` text for the token `id`.
pub(crate) fn generated_text(id: &str) -> String {
    format!("slc_{id}_{}", random_hex(32))
}

/// The `token.rotate` audit event: the token got a new secret; the old one works until `old_until`.
pub(crate) fn rotated_event(
    actor: &str,
    at: DateTime<Utc>,
    id: &str,
    name: &str,
    role: &str,
    old_until: &str,
) -> NewEvent {
    let mut after = summary(id, name, role);
    after["old_secret_valid_until"] = serde_json::json!(old_until);
    token_event(actor, at, "token.rotate", name, Some(summary(id, name, role)), Some(after))
}

/// Refuses a name that would be awkward as an actor in the audit log or on a command line.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        return Err(StoreError::InvalidField {
            entity: format!("token `{name}`"),
            field: "name".into(),
            message: "a token name is 1 to 100 letters, digits, `-`, `_`, `.` or `@`".into(),
        });
    }
    Ok(())
}

/// Refuses a token chosen by an operator (e.g. `SLUICE_ADMIN_TOKEN`) that is too short to be hard to guess.
pub(crate) fn check_text(text: &str) -> Result<(), StoreError> {
    if text.len() < 32 {
        return Err(StoreError::Conflict { message: "a token must be at least 32 characters".into() });
    }
    Ok(())
}

/// Why a token cannot be created under a name that is in use (revoked tokens keep their names).
pub(crate) fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict { message: format!("a token named `{name}` exists; revoke it or pick another name") }
}

/// A token about to be stored, with the text to hand out once.
#[derive(Debug, Clone)]
pub(crate) struct NewToken {
    pub(crate) info: TokenInfo,
    pub(crate) secret_sha256: String,
    pub(crate) text: String,
    at: DateTime<Utc>,
}

impl NewToken {
    /// A fresh `slc_<id>_<secret>` token named `name`, limited to `envs` (`None`: every environment).
    pub(crate) fn generated(actor: &str, name: &str, role: Role, envs: Option<Vec<String>>, at: DateTime<Utc>) -> Self {
        let id = random_hex(8);
        let text = generated_text(&id);
        let mut token = NewToken::with_text(actor, id, name.into(), role, text, at);
        token.info.envs = envs;
        token
    }

    /// A token with a text chosen elsewhere; when `name` is taken the new one gets a suffix from its digest,
    /// so that a changed `SLUICE_ADMIN_TOKEN` still starts.
    pub(crate) fn chosen(
        actor: &str,
        name: &str,
        name_is_taken: bool,
        role: Role,
        text: &str,
        at: DateTime<Utc>,
    ) -> Self {
        let hash = sha256_hex(text);
        let name = if name_is_taken { format!("{name}-{}", &hash[..8]) } else { name.to_string() };
        NewToken::with_text(actor, hash[..16].to_string(), name, role, text.into(), at)
    }

    fn with_text(actor: &str, id: String, name: String, role: Role, text: String, at: DateTime<Utc>) -> Self {
        NewToken {
            info: TokenInfo {
                id,
                name,
                role,
                created_at: rfc3339(at),
                created_by: actor.into(),
                revoked_at: None,
                envs: None,
            },
            secret_sha256: sha256_hex(&text),
            text,
            at,
        }
    }

    /// Its `token.create` audit event: never the secret.
    pub(crate) fn created_event(&self) -> NewEvent {
        let i = &self.info;
        let mut body = summary(&i.id, &i.name, i.role.as_str());
        if let Some(envs) = &i.envs {
            body["envs"] = serde_json::json!(envs);
        }
        token_event(&i.created_by, self.at, "token.create", &i.name, None, Some(body))
    }
}

/// The `token.revoke` audit event of the token `id` named `name`.
pub(crate) fn revoked_event(actor: &str, at: DateTime<Utc>, id: &str, name: &str, role: &str) -> NewEvent {
    token_event(actor, at, "token.revoke", name, Some(summary(id, name, role)), None)
}

/// What the audit log keeps of a token: never its secret.
fn summary(id: &str, name: &str, role: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "name": name, "role": role})
}

fn token_event(
    actor: &str,
    at: DateTime<Utc>,
    action: &str,
    name: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> NewEvent {
    NewEvent {
        at,
        actor: actor.into(),
        action: action.into(),
        entity: format!("token:{name}"),
        before,
        after,
        reason: None,
        env: None,
    }
}

/// A token row, without its secret; the role still as text.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    id: String,
    name: String,
    role: String,
    created_at: String,
    created_by: String,
    revoked_at: Option<String>,
    envs: Option<String>,
}

impl<'r, R: sqlx::Row + Columns<'r>> sqlx::FromRow<'r, R> for TokenRow {
    fn from_row(r: &'r R) -> Result<Self, sqlx::Error> {
        Ok(TokenRow {
            id: r.text("id")?,
            name: r.text("name")?,
            role: r.text("role")?,
            created_at: r.text("created_at")?,
            created_by: r.text("created_by")?,
            revoked_at: r.text_or_null("revoked_at")?,
            envs: r.text_or_null("envs")?,
        })
    }
}

impl TokenRow {
    /// The token it stores; `Corrupt` for an unknown role.
    pub(crate) fn into_info(self) -> Result<TokenInfo, StoreError> {
        Ok(TokenInfo {
            envs: parse_envs(&self.name, self.envs.as_deref())?,
            role: parse_role(&self.role)?,
            id: self.id,
            name: self.name,
            created_at: self.created_at,
            created_by: self.created_by,
            revoked_at: self.revoked_at,
        })
    }
}

/// The table of the active tokens' secrets, (name, role, secret_sha256, envs), and of the secrets still in
/// a rotation's overlap (with their end, RFC 3339).
pub(crate) fn table_from_rows(
    rows: Vec<(String, String, String, Option<String>)>,
    overlapping: Vec<(String, String, String, String, Option<String>)>,
) -> Result<TokenTable, StoreError> {
    let mut table = TokenTable::default();
    for (name, role, hash, envs) in rows {
        let envs = parse_envs(&name, envs.as_deref())?;
        table.insert(hash, Principal { name, role: parse_role(&role)?, envs }, None);
    }
    for (name, role, hash, until, envs) in overlapping {
        let until = DateTime::parse_from_rfc3339(&until)
            .map_err(|e| StoreError::Corrupt { message: format!("a rotated secret's end `{until}`: {e}") })?;
        let envs = parse_envs(&name, envs.as_deref())?;
        table.insert(hash, Principal { name, role: parse_role(&role)?, envs }, Some(until.timestamp_millis()));
    }
    Ok(table)
}

fn parse_envs(name: &str, envs: Option<&str>) -> Result<Option<Vec<String>>, StoreError> {
    envs.map(|text| crate::stored::parse_json(text, || format!("token `{name}`, `envs`"))).transpose()
}

fn parse_role(role: &str) -> Result<Role, StoreError> {
    role.parse().map_err(|message| StoreError::Corrupt { message })
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    hex::encode(buf)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Equal without an early exit, so the time taken does not say how much of a guess was right.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
