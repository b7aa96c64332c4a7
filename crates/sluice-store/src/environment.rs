//! The environment rules, the same for every backend: what a name may be, which environment a call that
//! names none means, and when an environment may be deleted.

use crate::{Environment, Role, StoreError};

/// Whether `name` may name an environment: 1 to 64 ASCII letters, digits, `_`, `-` or `.`, since it goes
/// into URLs, ETags, tokens' limits and Prometheus queries (`{{env}}`).
///
/// ```
/// assert!(sluice_store::check_env_name("staging").is_ok());
/// assert!(sluice_store::check_env_name("pre prod").is_err());
/// assert!(sluice_store::check_env_name("prød").is_err());
/// ```
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if name.is_empty() || name.len() > 64 || name == "." || name == ".." || !name.chars().all(ok) {
        return Err(format!("`{name}` is not an environment name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`"));
    }
    Ok(())
}

/// The one item of a per-environment list, for a call that names no environment: fine while there is one.
pub(crate) fn only<T>(mut envs: Vec<(String, T)>) -> Result<T, StoreError> {
    match envs.len() {
        1 => Ok(envs.remove(0).1),
        0 => Err(StoreError::Conflict {
            message: "the store has no environment: create one (`sluice env create`)".into(),
        }),
        _ => Err(StoreError::Conflict { message: name_one(envs.iter().map(|(n, _)| n.as_str())) }),
    }
}

/// The refusal of a call that names no environment where there are several.
pub(crate) fn name_one<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    format!(
        "this server has {} environments ({}): name one (`--env`, `SLUICE_ENV`, or `?env=` in the API)",
        names.len(),
        names.join(", ")
    )
}

/// Why `env` may not be deleted, if it may not: a flag enabled in it, a rollout running in it, an active
/// token of it alone, or being the last one.
pub(crate) fn refuse_delete(
    env: &str,
    env_count: usize,
    enabled: &[String],
    active_rollouts: &[(String, String)],
    tokens: &[String],
) -> Result<(), StoreError> {
    let refuse =
        |why: String| Err(StoreError::Conflict { message: format!("environment `{env}` cannot be deleted: {why}") });
    if env_count <= 1 {
        return refuse("it is the only environment; a server serves at least one".into());
    }
    if !enabled.is_empty() {
        return refuse(format!("flag(s) {} are enabled in it; disable them first", enabled.join(", ")));
    }
    if let Some((id, flag)) = active_rollouts.first() {
        return refuse(format!("rollout {id} of flag `{flag}` runs in it; finish, roll back or abort it first"));
    }
    if !tokens.is_empty() {
        return refuse(format!("token(s) {} belong to it; revoke them first", tokens.join(", ")));
    }
    Ok(())
}

/// The environments a new token named `name` with `role` may act in, given what was asked (`None`: every
/// one) and the environments there are: each must exist, and an `sdk` token belongs to exactly one (the only
/// one there is, when none is named).
pub(crate) fn token_envs(
    name: &str,
    role: Role,
    asked: Option<Vec<String>>,
    existing: &[Environment],
) -> Result<Option<Vec<String>>, StoreError> {
    let invalid =
        |message: String| StoreError::InvalidField { entity: format!("token `{name}`"), field: "envs".into(), message };
    if let Some(unknown) = asked.iter().flatten().find(|e| !existing.iter().any(|x| &x.name == *e)) {
        let names: Vec<&str> = existing.iter().map(|e| e.name.as_str()).collect();
        return Err(invalid(format!("environment `{unknown}` does not exist (there are: {})", names.join(", "))));
    }
    match (role, asked) {
        (Role::Sdk, Some(envs)) if envs.len() == 1 => Ok(Some(envs)),
        (Role::Sdk, Some(envs)) => {
            Err(invalid(format!("an sdk token belongs to exactly one environment; {} were named", envs.len())))
        }
        (Role::Sdk, None) if existing.len() == 1 => Ok(Some(vec![existing[0].name.clone()])),
        (Role::Sdk, None) => Err(invalid(format!(
            "an sdk token belongs to one environment: {}",
            name_one(existing.iter().map(|e| e.name.as_str()))
        ))),
        (_, Some(envs)) if envs.is_empty() => Err(invalid("name at least one environment, or none for all".into())),
        (_, asked) => Ok(asked),
    }
}
