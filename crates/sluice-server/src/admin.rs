//! The admin API (`/api/v1`): flags, their ramp, kill switch and overrides, segments, tokens, imports and the
//! audit log. Every write names its actor from the token, goes through [`AppState::write`] (validated,
//! committed with its audit event, published), and answers with what it wrote.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_flags::unleash::{ClientFeatures, Constraint};
use sluice_flags::{Flag, Override, OverrideAction, SegmentDef, Snapshot};
use sluice_store::{AuditFilter, Change, Principal, Role};

use crate::auth::{Admin, InEnv, Operator, Viewer};
use crate::error::{parse_json, Params};
use crate::{ApiError, AppState};
use sluice_controller::EnvFlags;

type ApiResult = Result<Response, ApiError>;

/// `?reason=` on every write: recorded in the audit event. `?force=true` (with a reason) lets a person
/// change the ramp or variants of a flag that an active rollout drives.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Why {
    reason: Option<String>,
    #[serde(default)]
    force: bool,
}

/// The flags that active rollouts drive, by key: a person's edit of their ramp or variants would fight
/// the controller (and be undone by its next step or its rollback), so it is refused unless forced.
/// The kill switch and per-user or per-session overrides stay allowed. A ramp is one environment's; the
/// variants are the shared definition, so a rollout in any environment guards them.
struct Driven {
    /// The rollouts of the environment written in: flag → (id, plan).
    here: std::collections::HashMap<String, (String, String)>,
    /// Those of every environment: flag → (id, plan, environment).
    anywhere: std::collections::HashMap<String, (String, String, String)>,
}

impl Driven {
    /// The flags rollouts drive, for a write in the environment `env`.
    async fn load(state: &AppState, env: &EnvFlags) -> Result<Driven, ApiError> {
        let active = state.store.rollouts(true).await?;
        let here = active
            .iter()
            .filter(|r| r.env == env.name())
            .map(|r| (r.flag.clone(), (r.id.clone(), r.plan_name.clone())))
            .collect();
        let anywhere = active.into_iter().map(|r| (r.flag, (r.id, r.plan_name, r.env))).collect();
        Ok(Driven { here, anywhere })
    }

    /// Refuses changing `before` (absent: a new flag) into `after` when a rollout drives it and the change
    /// touches the ramp (a rollout of this environment) or the variants (of any), unless `why` forces it
    /// with a reason.
    fn check(&self, before: Option<&Flag>, after: &Flag, why: &Why) -> Result<(), ApiError> {
        let ramp = before.is_none_or(|b| b.ramp != after.ramp);
        let variants = before.is_none_or(|b| b.variants != after.variants);
        let driver = match (self.here.get(&after.key), self.anywhere.get(&after.key)) {
            (Some((id, plan)), _) if ramp || variants => format!("rollout `{plan}` ({id})"),
            (_, Some((id, plan, env))) if variants => format!("rollout `{plan}` ({id}) in environment `{env}`"),
            _ => return Ok(()),
        };
        if why.force {
            return match why.reason.as_deref().map(str::trim) {
                Some(r) if !r.is_empty() => Ok(()),
                _ => Err(ApiError::invalid("reason", "forcing an edit of a flag a rollout drives needs a reason")),
            };
        }
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "driven",
            format!(
                "flag `{}` is driven by {driver}: pause, finish or roll it back first, or force the edit with a reason (`--force --reason …`, `?force=true&reason=…`); the kill switch and overrides stay allowed",
                after.key
            ),
        ))
    }

    /// The audit reason of a write: a forced edit says so.
    fn reason(&self, keys: &[&str], why: Why) -> Option<String> {
        let forced: Vec<String> =
            keys.iter().filter_map(|k| self.anywhere.get(*k)).map(|(id, plan, _)| format!("{plan} ({id})")).collect();
        match why.reason {
            Some(r) if why.force && !forced.is_empty() => {
                Some(format!("forced while rollout {} drives it: {r}", forced.join(", ")))
            }
            other => other,
        }
    }
}

fn flag_of<'s>(snapshot: &'s Snapshot, key: &str) -> Result<&'s Flag, ApiError> {
    snapshot.flags().iter().find(|f| f.key == key).ok_or_else(|| ApiError::not_found(format!("no flag `{key}`")))
}

/// Answers a write with the entity as it now is and the audit events it wrote.
fn written(status: StatusCode, entity: Value, w: crate::Written) -> Response {
    (status, Json(json!({"data": entity, "revision": w.revision, "audit": w.events}))).into_response()
}

/// Read-modify-write of one flag.
async fn update_flag(
    state: &AppState,
    who: &Principal,
    env: &EnvFlags,
    key: &str,
    why: Why,
    edit: impl Fn(&mut Flag) -> Result<(), ApiError>,
) -> ApiResult {
    let driven = Driven::load(state, env).await?;
    let mut result = None;
    let mut refused = None;
    let reason = driven.reason(&[key], Why { reason: why.reason.clone(), force: why.force });
    let w = state
        .write(env, &who.name, reason, |snapshot| {
            let before = flag_of(snapshot, key)?;
            let mut flag = before.clone();
            edit(&mut flag)?;
            if let Err(e) = driven.check(Some(before), &flag, &why) {
                refused = Some(e.clone());
                return Err(e);
            }
            result = Some(flag.clone());
            Ok(vec![Change::PutFlag(flag)])
        })
        .await;
    let w = match (w, refused) {
        (Err(_), Some(refusal)) => {
            audit_refusal(state, &who.name, key, &refusal).await?;
            return Err(refusal);
        }
        (w, _) => w?,
    };
    Ok(written(StatusCode::OK, json!(result), w))
}

/// The kill switch is always allowed, and the rollout driving the flag pauses at once (not at its next
/// tick) and says why: here when this replica leads, else on the leader as it reads the change. The flag
/// is already disabled when this runs: a failure here is logged, not answered as an error for a change
/// that was made, and the rollout's next tick pauses it anyway.
async fn pause_for_kill_switch(state: &AppState, env: &EnvFlags, key: &str, who: &str) {
    if !state.cluster.leading() {
        // Its store is fenced: the leader pauses the rollout when it reads the change (`Cluster::follow`).
        return;
    }
    if let Err(e) = state.controller.kill_switch_pulled(env.name(), key, who).await {
        tracing::warn!(flag = %key, error = %e, "pausing the rollout of a disabled flag failed; its next tick pauses it");
    }
}

/// A refused edit of a driven flag is audited: who tried to change what, while which rollout drove it.
/// Each one is recorded, not coalesced: only an admin gets this far, and admins' writes (refused ones
/// included) are held by the changes-per-minute limit.
async fn audit_refusal(state: &AppState, actor: &str, key: &str, refusal: &ApiError) -> Result<(), ApiError> {
    let detail = json!({"refused": refusal.error, "message": refusal.message});
    state.store.record_event(actor, "flag.refused", &format!("flag:{key}"), detail, None).await?;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/flags", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every flag", body = crate::openapi::FlagList), crate::openapi::ReadErrors))]
pub(crate) async fn list_flags(_: Viewer, InEnv(env): InEnv) -> ApiResult {
    let snapshot = env.live().load();
    Ok(Json(json!({"data": snapshot.flags(), "revision": env.revision(), "env": env.name()})).into_response())
}

#[utoipa::path(get, path = "/api/v1/flags/{key}", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key")),
    responses((status = 200, description = "The flag", body = crate::openapi::OneFlag), crate::openapi::ReadErrors))]
pub(crate) async fn get_flag(Viewer(_): Viewer, InEnv(env): InEnv, Path(key): Path<String>) -> ApiResult {
    let snapshot = env.live().load();
    Ok(Json(json!({"data": flag_of(&snapshot, &key)?})).into_response())
}

/// `PUT /api/v1/flags/{key}`: creates or replaces. With `If-None-Match: *` it only creates (412 if it exists).
#[utoipa::path(put, path = "/api/v1/flags/{key}", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key"), Why, ("If-None-Match" = Option<String>, Header, description = "`*`: create only")), request_body = Flag,
    responses((status = 200, description = "Replaced", body = crate::openapi::FlagWritten), (status = 201, description = "Created", body = crate::openapi::FlagWritten), crate::openapi::WriteErrors))]
pub(crate) async fn put_flag(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    headers: HeaderMap,
    Path(key): Path<String>,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let mut body: Value = parse_json(&body)?;
    if !body.is_object() {
        return Err(ApiError::invalid("", "the body must be a JSON object: a flag"));
    }
    match body.get("key") {
        None => body["key"] = json!(key),
        Some(k) if *k == json!(key) => {}
        Some(k) => return Err(ApiError::invalid("key", format!("the body's key {k} differs from the path's `{key}`"))),
    }
    let flag: Flag = parse_json(body.to_string().as_bytes())?;
    let only_create = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == b"*");
    let mut created = false;
    let driven = Driven::load(&state, &env).await?;
    let reason = driven.reason(&[&key], Why { reason: why.reason.clone(), force: why.force });
    let mut refused = None;
    let w = state
        .write(&env, &who.name, reason, |snapshot| {
            let before = snapshot.flags().iter().find(|f| f.key == key);
            created = before.is_none();
            if only_create && !created {
                return Err(ApiError::new(StatusCode::PRECONDITION_FAILED, "exists", format!("flag `{key}` exists")));
            }
            if let Err(e) = driven.check(before, &flag, &why) {
                refused = Some(e.clone());
                return Err(e);
            }
            Ok(vec![Change::PutFlag(flag.clone())])
        })
        .await;
    let w = match (w, refused) {
        (Err(_), Some(refusal)) => {
            audit_refusal(&state, &who.name, &key, &refusal).await?;
            return Err(refusal);
        }
        (w, _) => w?,
    };
    if !flag.enabled {
        pause_for_kill_switch(&state, &env, &key, &who.name).await;
    }
    Ok(written(if created { StatusCode::CREATED } else { StatusCode::OK }, json!(flag), w))
}

#[utoipa::path(delete, path = "/api/v1/flags/{key}", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key"), Why),
    responses((status = 200, description = "Deleted", body = crate::openapi::Deleted), crate::openapi::WriteErrors))]
pub(crate) async fn delete_flag(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Path(key): Path<String>,
    Params(why): Params<Why>,
) -> ApiResult {
    // The definition is shared: deleting removes the flag from every environment, so it takes a caller
    // who may act in every one. A flag that a rollout ramps is refused by the store, in the delete's own
    // transaction.
    may_act_everywhere(&who, "delete a flag (it is removed from every environment)")?;
    let w = state.write(&env, &who.name, why.reason, |_| Ok(vec![Change::DeleteFlag(key.clone())])).await?;
    Ok(written(StatusCode::OK, Value::Null, w))
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RampEdit {
    percent: Option<u8>,
    base: Option<String>,
    ramped: Option<String>,
    stickiness: Option<String>,
    segments: Option<Vec<String>>,
    constraints: Option<Vec<Constraint>>,
}

/// `POST /api/v1/flags/{key}/ramp`: changes any of the ramp's fields.
#[utoipa::path(post, path = "/api/v1/flags/{key}/ramp", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key"), Why), request_body = RampEdit,
    responses((status = 200, description = "The flag with its new ramp", body = crate::openapi::FlagWritten), crate::openapi::WriteErrors))]
pub(crate) async fn set_ramp(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Path(key): Path<String>,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let edit: RampEdit = parse_json(&body)?;
    update_flag(&state, &who, &env, &key, why, |flag| {
        let r = &mut flag.ramp;
        if let Some(p) = edit.percent {
            r.percent = p;
        }
        if let Some(v) = &edit.base {
            r.base.clone_from(v);
        }
        if let Some(v) = &edit.ramped {
            r.ramped.clone_from(v);
        }
        if let Some(v) = &edit.stickiness {
            r.stickiness.clone_from(v);
        }
        if let Some(v) = &edit.segments {
            r.segments.clone_from(v);
        }
        if let Some(v) = &edit.constraints {
            r.constraints.clone_from(v);
        }
        Ok(())
    })
    .await
}

/// `POST /api/v1/flags/{key}/enable`: the kill switch back on.
#[utoipa::path(post, path = "/api/v1/flags/{key}/enable", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key"), Why),
    responses((status = 200, description = "Enabled", body = crate::openapi::FlagWritten), crate::openapi::WriteErrors))]
pub(crate) async fn enable(
    state: State<Arc<AppState>>,
    who: Operator,
    env: InEnv,
    key: Path<String>,
    why: Params<Why>,
) -> ApiResult {
    set_enabled(state, who, env, key, why, true).await
}

/// `POST /api/v1/flags/{key}/disable`: the kill switch; everyone gets the off variant.
#[utoipa::path(post, path = "/api/v1/flags/{key}/disable", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key"), Why),
    responses((status = 200, description = "Disabled: every context gets the off variant", body = crate::openapi::FlagWritten), crate::openapi::WriteErrors))]
pub(crate) async fn disable(
    state: State<Arc<AppState>>,
    who: Operator,
    env: InEnv,
    key: Path<String>,
    why: Params<Why>,
) -> ApiResult {
    set_enabled(state, who, env, key, why, false).await
}

async fn set_enabled(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Path(key): Path<String>,
    Params(why): Params<Why>,
    enabled: bool,
) -> ApiResult {
    let answer = update_flag(&state, &who, &env, &key, why, |f| {
        f.enabled = enabled;
        Ok(())
    })
    .await?;
    if !enabled {
        pause_for_kill_switch(&state, &env, &key, &who.name).await;
    }
    Ok(answer)
}

#[utoipa::path(get, path = "/api/v1/flags/{key}/overrides", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key")),
    responses((status = 200, description = "The flag's overrides", body = crate::openapi::OverrideList), crate::openapi::ReadErrors))]
pub(crate) async fn list_overrides(Viewer(_): Viewer, InEnv(env): InEnv, Path(key): Path<String>) -> ApiResult {
    let snapshot = env.live().load();
    Ok(Json(json!({"data": flag_of(&snapshot, &key)?.overrides})).into_response())
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverrideBody {
    field: String,
    value: String,
    action: OverrideAction,
    expires_at: Option<DateTime<Utc>>,
    /// A duration from now, e.g. `2h`, `30m`, `7d`.
    expires_in: Option<String>,
}

/// `POST /api/v1/flags/{key}/overrides`: adds an override, replacing one for the same field and value.
#[utoipa::path(post, path = "/api/v1/flags/{key}/overrides", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key"), Why), request_body = OverrideBody,
    responses((status = 200, description = "The flag with the override", body = crate::openapi::FlagWritten), crate::openapi::WriteErrors))]
pub(crate) async fn add_override(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Path(key): Path<String>,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let b: OverrideBody = parse_json(&body)?;
    let expires_at = match (&b.expires_at, &b.expires_in) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("expires_in", "give expires_at or expires_in, not both")),
        (Some(t), None) => Some(*t),
        (None, Some(d)) => {
            let d = parse_duration(d).map_err(|m| ApiError::invalid("expires_in", m))?;
            Some(Utc::now() + d)
        }
        (None, None) => None,
    };
    let o = Override { field: b.field, value: b.value, action: b.action, expires_at };
    update_flag(&state, &who, &env, &key, why, move |flag| {
        flag.overrides.retain(|x| !(x.field == o.field && x.value == o.value));
        flag.overrides.push(o.clone());
        Ok(())
    })
    .await
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Deserialize)]
pub(crate) struct OverrideSelector {
    field: Option<String>,
    value: Option<String>,
    reason: Option<String>,
}

/// `DELETE /api/v1/flags/{key}/overrides`: clears all, or the one given by `?field=&value=`.
#[utoipa::path(delete, path = "/api/v1/flags/{key}/overrides", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("key" = String, Path, description = "The flag's key"), OverrideSelector),
    responses((status = 200, description = "The flag without them", body = crate::openapi::FlagWritten), crate::openapi::WriteErrors))]
pub(crate) async fn clear_overrides(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Path(key): Path<String>,
    Params(sel): Params<OverrideSelector>,
) -> ApiResult {
    update_flag(&state, &who, &env, &key, Why { reason: sel.reason, force: false }, |flag| {
        match (&sel.field, &sel.value) {
            (Some(f), Some(v)) => {
                let before = flag.overrides.len();
                flag.overrides.retain(|o| !(&o.field == f && &o.value == v));
                if flag.overrides.len() == before {
                    return Err(ApiError::not_found(format!("no override for {f} = {v} on `{}`", flag.key)));
                }
            }
            (None, None) => flag.overrides.clear(),
            _ => return Err(ApiError::invalid("field", "give both `field` and `value`, or neither to clear all")),
        }
        Ok(())
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/segments", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every segment", body = crate::openapi::SegmentList), crate::openapi::ReadErrors))]
pub(crate) async fn list_segments(Viewer(_): Viewer, InEnv(env): InEnv) -> ApiResult {
    // Segments are shared: every environment has the same ones.
    Ok(Json(json!({"data": env.live().load().segments()})).into_response())
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentBody {
    #[serde(default)]
    description: String,
    constraints: Vec<Constraint>,
}

fn check_segment_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err("a segment name is 1 to 100 letters, digits, `_`, `-` or `.`".into());
    }
    Ok(())
}

#[utoipa::path(put, path = "/api/v1/segments/{name}", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The segment's name"), Why), request_body = SegmentBody,
    responses((status = 200, description = "Created or replaced", body = crate::openapi::SegmentWritten), crate::openapi::WriteErrors))]
pub(crate) async fn put_segment(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Path(name): Path<String>,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let b: SegmentBody = parse_json(&body)?;
    check_segment_name(&name).map_err(|m| ApiError::invalid("name", m))?;
    let segment = SegmentDef { id: 0, name: name.clone(), description: b.description, constraints: b.constraints };
    may_act_everywhere(&who, "change a segment (segments are shared by every environment)")?;
    let w = state.write(&env, &who.name, why.reason, |_| Ok(vec![Change::PutSegment(segment.clone())])).await?;
    let snapshot = env.live().load();
    let stored = snapshot.segments().iter().find(|s| s.name == name).cloned();
    Ok(written(StatusCode::OK, json!(stored), w))
}

#[utoipa::path(delete, path = "/api/v1/segments/{name}", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The segment's name"), Why),
    responses((status = 200, description = "Deleted", body = crate::openapi::Deleted), crate::openapi::WriteErrors))]
pub(crate) async fn delete_segment(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Path(name): Path<String>,
    Params(why): Params<Why>,
) -> ApiResult {
    may_act_everywhere(&who, "delete a segment (segments are shared by every environment)")?;
    let w = state.write(&env, &who.name, why.reason, |_| Ok(vec![Change::DeleteSegment(name.clone())])).await?;
    Ok(written(StatusCode::OK, Value::Null, w))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every token, never a secret", body = crate::openapi::TokenList), crate::openapi::ReadErrors))]
pub(crate) async fn list_tokens(State(state): State<Arc<AppState>>, Admin(_): Admin) -> ApiResult {
    Ok(Json(json!({"data": state.store.tokens().await?})).into_response())
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    name: String,
    role: Role,
    /// The environments it may act in: exactly one for an `sdk` token (the only one when there is one);
    /// absent for another role: every one.
    #[serde(default)]
    envs: Option<Vec<String>>,
}

/// `POST /api/v1/tokens`: the answer carries the token text, the only time it is shown.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = []), ("apiKey" = [])),
    request_body = TokenBody,
    responses((status = 201, description = "Created; the token's text is shown this once", body = crate::openapi::TokenCreated), crate::openapi::WriteErrors))]
pub(crate) async fn create_token(State(state): State<Arc<AppState>>, Admin(who): Admin, body: Bytes) -> ApiResult {
    let b: TokenBody = parse_json(&body)?;
    // A token limited to some environments cannot make one that reaches further than itself.
    if let Some(mine) = &who.envs {
        let asked = b.envs.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "envs",
                format!("the token `{}` may act in {} only: name those", who.name, mine.join(", ")),
            )
        })?;
        if let Some(other) = asked.iter().find(|e| !mine.contains(e)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_environment",
                format!("the token `{}` may not give access to environment `{other}`", who.name),
            ));
        }
    }
    let (info, token) = state.store.create_token_in(&who.name, &b.name, b.role, b.envs).await?;
    state.reload_tokens().await?;
    Ok((StatusCode::CREATED, Json(json!({"data": info, "token": token}))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The token's name")),
    responses((status = 200, description = "Revoked", body = crate::openapi::TokenRevoked), crate::openapi::WriteErrors))]
pub(crate) async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(name): Path<String>,
) -> ApiResult {
    let event = state.store.revoke_token(&who.name, &name).await?;
    state.reload_tokens().await?;
    Ok(Json(json!({"audit": [event]})).into_response())
}

#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// How long the old secret keeps working, in seconds (0 by default: not at all).
    #[serde(default)]
    overlap_secs: u64,
}

/// `POST /api/v1/tokens/{name}/rotate`: a new secret for the token (in the answer, the only time it is
/// shown); the old one works for `overlap_secs` more, at most 30 days.
#[utoipa::path(post, path = "/api/v1/tokens/{name}/rotate", tag = "tokens", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The token's name")), request_body = Option<RotateBody>,
    responses((status = 200, description = "A new secret, shown this once", body = crate::openapi::TokenRotated), crate::openapi::WriteErrors))]
pub(crate) async fn rotate_token(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: RotateBody =
        if body.iter().all(u8::is_ascii_whitespace) { RotateBody::default() } else { parse_json(&body)? };
    const MAX_OVERLAP: u64 = 30 * 86_400;
    if b.overlap_secs > MAX_OVERLAP {
        return Err(ApiError::invalid(
            "overlap_secs",
            format!(
                "{} is outside 0..={MAX_OVERLAP} (30 days): the old secret of a rotated token must end",
                b.overlap_secs
            ),
        ));
    }
    let overlap = std::time::Duration::from_secs(b.overlap_secs);
    let (info, token, event) = state.store.rotate_token(&who.name, &name, overlap).await?;
    state.reload_tokens().await?;
    let until = event.after.as_ref().and_then(|a| a.get("old_secret_valid_until")).cloned().unwrap_or_default();
    Ok(Json(json!({"data": info, "token": token, "old_secret_valid_until": until, "audit": [event]})).into_response())
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    entity: Option<String>,
    action: Option<String>,
    since: Option<DateTime<Utc>>,
    /// At most 10,000 events (100 by default).
    #[param(maximum = 10000)]
    limit: Option<u32>,
}

/// `GET /api/v1/audit`: newest first, filtered.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = []), ("apiKey" = [])),
    params(AuditQuery),
    responses((status = 200, description = "Events, newest first", body = crate::openapi::AuditPage), crate::openapi::ReadErrors))]
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    Viewer(_): Viewer,
    Params(q): Params<AuditQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100);
    if limit > 10_000 {
        return Err(ApiError::invalid("limit", "at most 10000 events per request"));
    }
    let filter = AuditFilter { actor: q.actor, entity: q.entity, action_prefix: q.action, since: q.since, limit };
    Ok(Json(json!({"data": state.store.audit(&filter).await?})).into_response())
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Deserialize)]
pub(crate) struct ChainQuery {
    /// The sequence number after which the page starts (0: the start of the chain).
    #[serde(default)]
    #[param(minimum = 0)]
    after: i64,
    /// Events a page: 1 to 10,000 (1,000 by default).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// `GET /api/v1/audit/chain?after=SEQ&limit=N`: the chain in order, a page at a time, for a client to
/// recompute every hash itself (`sluice audit verify`).
#[utoipa::path(get, path = "/api/v1/audit/chain", tag = "audit", security(("bearer" = []), ("apiKey" = [])),
    params(ChainQuery),
    responses((status = 200, description = "Events in order, from `after`", body = crate::openapi::AuditPage), crate::openapi::ReadErrors))]
pub(crate) async fn audit_chain(
    State(state): State<Arc<AppState>>,
    Viewer(_): Viewer,
    Params(q): Params<ChainQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(1_000);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::invalid("limit", "between 1 and 10000 events per page"));
    }
    if q.after < 0 {
        return Err(ApiError::invalid("after", "a sequence number, 0 for the start of the chain"));
    }
    Ok(Json(json!({"data": state.store.chain(q.after, limit).await?})).into_response())
}

/// `GET /api/v1/audit/verify`: the whole chain recomputed here, page by page (the dashboard shows it;
/// `sluice audit verify` recomputes it on the client instead, trusting nothing the server says).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "The chain recomputed by the server", body = crate::openapi::ChainVerdict), crate::openapi::ReadErrors))]
pub(crate) async fn audit_verify(State(state): State<Arc<AppState>>, Viewer(_): Viewer) -> ApiResult {
    let mut check = sluice_store::audit::ChainCheck::new(None);
    let verdict = loop {
        let page = state.store.chain(check.last_seq(), 5_000).await?;
        if let Some(broken) = page.iter().find_map(|e| check.push(e).err()) {
            break broken;
        }
        if page.len() < 5_000 {
            break check.finish();
        }
    };
    Ok(Json(json!({"data": verdict})).into_response())
}

#[utoipa::path(get, path = "/api/v1/audit/head", tag = "audit", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "The hash of the newest event", body = crate::openapi::ChainHead), crate::openapi::ReadErrors))]
pub(crate) async fn audit_head(State(state): State<Arc<AppState>>, Viewer(_): Viewer) -> ApiResult {
    Ok(Json(json!({"head": state.store.head().await?})).into_response())
}

/// `POST /api/v1/import/unleash`: an Unleash client-API export, all or nothing.
#[utoipa::path(post, path = "/api/v1/import/unleash", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(Why), request_body = ClientFeatures,
    responses((status = 200, description = "Imported, all or nothing", body = crate::openapi::Imported), crate::openapi::WriteErrors))]
pub(crate) async fn import_unleash(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let features: ClientFeatures = parse_json(&body)?;
    let (flags, segments) = sluice_flags::import::from_unleash(&features)
        .map_err(|e| ApiError { field: Some(e.field.clone()), ..ApiError::invalid("", e.to_string()) })?;
    import(&state, &who, &env, why, flags, segments).await
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlagFile {
    #[serde(default)]
    segments: Vec<SegmentDef>,
    #[serde(default)]
    flags: Vec<Flag>,
}

/// `POST /api/v1/import/flags`: a Sluice flag file (`{segments, flags}`), all or nothing.
#[utoipa::path(post, path = "/api/v1/import/flags", tag = "flags", security(("bearer" = []), ("apiKey" = [])),
    params(Why), request_body = FlagFile,
    responses((status = 200, description = "Imported, all or nothing", body = crate::openapi::Imported), crate::openapi::WriteErrors))]
pub(crate) async fn import_flags(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let file: FlagFile = parse_json(&body)?;
    import(&state, &who, &env, why, file.flags, file.segments).await
}

async fn import(
    state: &AppState,
    who: &Principal,
    env: &EnvFlags,
    why: Why,
    flags: Vec<Flag>,
    segments: Vec<SegmentDef>,
) -> ApiResult {
    let (actor, reason, force) = (who.name.as_str(), why.reason, why.force);
    if !segments.is_empty() {
        may_act_everywhere(who, "import segments (segments are shared by every environment)")?;
    }
    let (nf, ns) = (flags.len(), segments.len());
    // Two segments of one name would silently merge: flags that meant the first would get the second.
    for (i, s) in segments.iter().enumerate() {
        check_segment_name(&s.name).map_err(|m| ApiError::invalid(format!("segments[{i}].name"), m))?;
        if segments[..i].iter().any(|p| p.name == s.name) {
            return Err(ApiError::invalid(
                format!("segments[{i}].name"),
                format!("a second segment named `{}`", s.name),
            ));
        }
    }
    let driven = Driven::load(state, env).await?;
    let keys: Vec<&str> = flags.iter().map(|f| f.key.as_str()).collect();
    let why = Why { reason, force };
    let reason = driven.reason(&keys, Why { reason: why.reason.clone(), force });
    let mut changes: Vec<Change> = segments.into_iter().map(Change::PutSegment).collect();
    changes.extend(flags.iter().cloned().map(Change::PutFlag));
    if changes.is_empty() {
        return Err(ApiError::invalid("flags", "the file has no flags and no segments"));
    }
    let mut refused = None;
    let w = state
        .write(env, actor, reason, |snapshot| {
            for (i, f) in flags.iter().enumerate() {
                let before = snapshot.flags().iter().find(|b| b.key == f.key);
                if let Err(e) = driven.check(before, f, &why) {
                    refused = Some((f.key.clone(), e.clone()));
                    return Err(ApiError { field: Some(format!("flags[{i}]")), ..e });
                }
            }
            Ok(changes.clone())
        })
        .await;
    let w = match (w, refused) {
        (Err(e), Some((key, refusal))) => {
            audit_refusal(state, actor, &key, &refusal).await?;
            return Err(e);
        }
        (w, _) => w?,
    };
    Ok(written(StatusCode::OK, json!({"flags": nf, "segments": ns}), w))
}

/// `GET /api/v1/client-metrics`: the Unleash SDKs' evaluation counts per flag and variant (`data`), the
/// registered application instances (`applications`), and `dropped`: how many reported counts this server
/// process did not keep since it started (unknown flag or variant, or over the per-report cap; see
/// `client_api::metrics`).
#[utoipa::path(get, path = "/api/v1/client-metrics", tag = "unleash", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Counts reported by Unleash SDKs", body = crate::openapi::ClientMetrics), crate::openapi::ReadErrors))]
pub(crate) async fn client_metrics(State(state): State<Arc<AppState>>, _: Viewer, InEnv(env): InEnv) -> ApiResult {
    let rows: Vec<Value> = state
        .store
        .client_metrics(env.name())
        .await?
        .into_iter()
        .map(|(flag, variant, n)| json!({"flag": flag, "variant": variant, "count": n}))
        .collect();
    let apps: Vec<Value> = state.client_apps.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
    let dropped = crate::client_api::dropped_counts();
    Ok(Json(json!({"data": rows, "applications": apps, "dropped": dropped})).into_response())
}

/// Refuses a caller limited to some environments an edit of what every environment shares (a segment, a
/// flag's removal).
fn may_act_everywhere(who: &Principal, what: &str) -> Result<(), ApiError> {
    match &who.envs {
        None => Ok(()),
        Some(envs) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_environment",
            format!("the token `{}` may act in {} only: it may not {what}", who.name, envs.join(", ")),
        )),
    }
}

/// `30s`, `5m`, `24h`, `2d`, `1w`.
pub(crate) fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("`{s}` is not a duration like 30s, 5m, 24h or 2d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("`{s}` is not a duration like 30s, 5m, 24h or 2d")),
    };
    if n <= 0 || n > 3650 * 86_400 / secs {
        return Err(format!("`{s}` must be positive and at most ten years"));
    }
    Ok(chrono::Duration::seconds(n * secs))
}

/// One environment as listed: its name and revision, and how many flags are enabled in it.
fn env_summary(env: &EnvFlags) -> Value {
    let snapshot = env.live().load();
    let enabled = snapshot.flags().iter().filter(|f| f.enabled).count();
    json!({"name": env.name(), "revision": env.revision(), "flags": snapshot.len(), "enabled": enabled})
}

#[utoipa::path(get, path = "/api/v1/environments", tag = "environments", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every environment the caller may see", body = crate::openapi::EnvList), crate::openapi::ReadErrors))]
pub(crate) async fn list_envs(State(state): State<Arc<AppState>>, Viewer(who): Viewer) -> ApiResult {
    let envs: Vec<Value> =
        state.catalog.envs().iter().filter(|e| who.may_act_in(e.name())).map(|e| env_summary(e)).collect();
    Ok(Json(json!({"data": envs})).into_response())
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvBody {
    /// The new environment's name: letters, digits, `_`, `-`, `.`.
    name: String,
}

/// `POST /api/v1/environments`: a new environment, every flag in it disabled at 0 %.
#[utoipa::path(post, path = "/api/v1/environments", tag = "environments", security(("bearer" = []), ("apiKey" = [])),
    params(Why), request_body = EnvBody,
    responses((status = 201, description = "Created", body = crate::openapi::EnvWritten), crate::openapi::WriteErrors))]
pub(crate) async fn create_env(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let b: EnvBody = parse_json(&body)?;
    may_act_everywhere(&who, "create an environment")?;
    let event =
        state.catalog.change_env(&who.name, sluice_store::EnvChange::Create(b.name.clone()), why.reason).await?;
    let env = state.catalog.resolve(Some(&b.name))?;
    Ok((StatusCode::CREATED, Json(json!({"data": env_summary(&env), "audit": [event]}))).into_response())
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameBody {
    /// The new name.
    to: String,
}

/// `POST /api/v1/environments/{name}/rename`: its flags, tokens, rollouts and counts follow.
#[utoipa::path(post, path = "/api/v1/environments/{name}/rename", tag = "environments", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The environment's name"), Why), request_body = RenameBody,
    responses((status = 200, description = "Renamed", body = crate::openapi::EnvWritten), crate::openapi::WriteErrors))]
pub(crate) async fn rename_env(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(name): Path<String>,
    Params(why): Params<Why>,
    body: Bytes,
) -> ApiResult {
    let b: RenameBody = parse_json(&body)?;
    may_act_everywhere(&who, "rename an environment")?;
    let change = sluice_store::EnvChange::Rename { from: name.clone(), to: b.to.clone() };
    let event = state.catalog.change_env(&who.name, change, why.reason).await?;
    state.metrics.rename_env(&name, &b.to);
    state.reload_tokens().await?;
    let env = state.catalog.resolve(Some(&b.to))?;
    Ok(Json(json!({"data": env_summary(&env), "audit": [event]})).into_response())
}

/// `DELETE /api/v1/environments/{name}`: refused while a flag is enabled in it, a rollout runs in it, an
/// active token belongs to it alone, or it is the last one.
#[utoipa::path(delete, path = "/api/v1/environments/{name}", tag = "environments", security(("bearer" = []), ("apiKey" = [])),
    params(("name" = String, Path, description = "The environment's name"), Why),
    responses((status = 200, description = "Deleted", body = crate::openapi::Deleted), crate::openapi::WriteErrors))]
pub(crate) async fn delete_env(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(name): Path<String>,
    Params(why): Params<Why>,
) -> ApiResult {
    may_act_everywhere(&who, "delete an environment")?;
    let event = state.catalog.change_env(&who.name, sluice_store::EnvChange::Delete(name), why.reason).await?;
    state.reload_tokens().await?;
    Ok(Json(json!({"data": Value::Null, "revision": state.catalog.revision(), "audit": [event]})).into_response())
}
