//! The rollout API: starts plans and takes people's decisions, each handed to the controller
//! ([`sluice_controller::Controller`]); this file only authenticates, parses and answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sluice_controller::CommandBody;
use sluice_store::{Principal, Role};

use crate::auth::{InEnv, Operator, Viewer};
use crate::error::{parse_json, Params};
use crate::{ApiError, AppState};

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    /// The plan's YAML.
    plan: String,
    /// The file name, for error messages.
    #[serde(default)]
    file: Option<String>,
}

/// `POST /api/v1/rollouts`: checks the plan against the live catalog and starts it, or says every problem.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "rollouts", security(("bearer" = []), ("apiKey" = [])),
    request_body = StartBody,
    responses((status = 201, description = "Started", body = crate::openapi::RolloutAnswer), crate::openapi::WriteErrors))]
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    Operator(who): Operator,
    InEnv(env): InEnv,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: StartBody = parse_json(&body)?;
    let file = b.file.unwrap_or_else(|| "plan.yaml".into());
    let record = state.controller.start(&who, Some(env.name()), &file, &b.plan).await?;
    let data = state.controller.summary(&record.id).await?;
    Ok((StatusCode::CREATED, Json(json!({"data": data}))).into_response())
}

#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Every rollout", body = crate::openapi::RolloutList), crate::openapi::ReadErrors))]
pub(crate) async fn list(State(state): State<Arc<AppState>>, Viewer(who): Viewer) -> Result<Response, ApiError> {
    // A token limited to some environments sees their rollouts only.
    let out: Vec<_> = state.controller.summaries().await?.into_iter().filter(|r| who.may_act_in(&r.env)).collect();
    Ok(Json(json!({"data": out})).into_response())
}

#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "rollouts", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The rollout's id, or its plan's name when one rollout of that name runs")),
    responses((status = 200, description = "The rollout", body = crate::openapi::RolloutAnswer), crate::openapi::ReadErrors))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Viewer(who): Viewer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state.controller.find(&id).await?;
    state.may_act_in(&who, &record.env).await?;
    Ok(Json(json!({"data": state.controller.summary_of(&record).await?})).into_response())
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[derive(Debug, Deserialize)]
pub(crate) struct Limit {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/rollouts/{id}/decisions", tag = "rollouts", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The rollout's id, or its plan's name when one rollout of that name runs"), Limit),
    responses((status = 200, description = "Its last decisions, oldest first", body = crate::openapi::DecisionList), crate::openapi::ReadErrors))]
pub(crate) async fn decisions(
    State(state): State<Arc<AppState>>,
    Viewer(who): Viewer,
    Path(id): Path<String>,
    Params(q): Params<Limit>,
) -> Result<Response, ApiError> {
    let record = state.controller.find(&id).await?;
    state.may_act_in(&who, &record.env).await?;
    let limit = q.limit.unwrap_or(200).min(10_000);
    Ok(Json(json!({"data": state.store.decisions(&record.id, limit).await?})).into_response())
}

/// The operator who may decide, or a refusal that is itself audited.
async fn decider(state: &AppState, who: Principal, id: &str, command: &str) -> Result<Principal, ApiError> {
    if !who.role.allows(Role::Operator) {
        let detail = json!({"command": command, "role": who.role.as_str()});
        let reason = Some("needs the operator role".into());
        state.controller.record_refusal(&who.name, "rollout.refused", &format!("rollout:{id}"), detail, reason).await?;
        return Err(ApiError::forbidden("operator"));
    }
    Ok(who)
}

/// `POST /api/v1/rollouts/{id}/{command}`: pause, resume, promote, rollback, abort, approve, signal, settle.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/{command}", tag = "rollouts", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "The rollout's id, or its plan's name when one rollout of that name runs"), ("command" = String, Path, description = "pause, resume, promote, rollback, abort, approve, signal, settle or redeliver")), request_body = Option<CommandBody>,
    responses((status = 200, description = "Done", body = crate::openapi::CommandAnswer), crate::openapi::WriteErrors))]
pub(crate) async fn command(
    State(state): State<Arc<AppState>>,
    // Who first (the extractor runs before the handler): an unauthenticated caller learns nothing, not
    // even whether the rollout exists; a viewer is refused below, audited, once the rollout is known.
    Viewer(who): Viewer,
    Path((id, command)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let record = state.controller.find(&id).await?;
    let who = decider(&state, who, &record.id, &command).await?;
    // An operator of staging does not steer production's rollouts.
    state.may_act_in(&who, &record.env).await?;
    let b: CommandBody =
        if body.iter().all(u8::is_ascii_whitespace) { CommandBody::default() } else { parse_json(&body)? };
    let data = state.controller.command_named(&record.id, &command, b, &who).await?;
    Ok(Json(json!({"data": data})).into_response())
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
pub(crate) struct AlertmanagerBody {
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
pub(crate) struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `POST /api/v1/alertmanager`: Alertmanager's webhook. A firing alert labelled `sluice_rollout` (id or
/// plan name) or `sluice_flag` signals that rollout: hard when `sluice_severity=hard` or `severity` is
/// `critical` or `page`, soft otherwise; the trigger's name is the alert's name, whether or not the plan has
/// a trigger of that name (the pause or rollback then says `signal ALERTNAME: SUMMARY`, so status always
/// explains it). Alerts for no rollout, or for one that has ended, are ignored and listed as such. A signal
/// that fails (the store, a rollout busy with a phase hook or waiting to be settled) is audited and
/// answered with 503, so that Alertmanager sends the notification again.
#[utoipa::path(post, path = "/api/v1/alertmanager", tag = "rollouts", security(("bearer" = []), ("apiKey" = [])),
    request_body = AlertmanagerBody,
    responses((status = 200, description = "What became of each firing alert", body = crate::openapi::AlertsAnswer), crate::openapi::WriteErrors))]
pub(crate) async fn alertmanager(
    State(state): State<Arc<AppState>>,
    Viewer(who): Viewer,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A refused caller is audited, as for any rollout decision.
    let who = decider(&state, who, "alertmanager", "signal").await?;
    let b: AlertmanagerBody = parse_json(&body)?;
    let (mut signalled, mut ignored, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for alert in b.alerts.iter().filter(|a| a.status == "firing") {
        let name = alert.labels.get("alertname").cloned().unwrap_or_else(|| "alert".into());
        let Some(target) = alert.labels.get("sluice_rollout").or_else(|| alert.labels.get("sluice_flag")) else {
            ignored.push(json!({"alert": name, "why": "no sluice_rollout or sluice_flag label"}));
            continue;
        };
        let record = match state.controller.find(target).await {
            Ok(r) if r.active => r,
            Ok(r) => {
                ignored.push(
                    json!({"alert": name, "rollout": r.id, "why": format!("the rollout is {}", r.status().name())}),
                );
                continue;
            }
            Err(sluice_controller::ControllerError::NotFound(_)) => {
                ignored.push(json!({"alert": name, "why": format!("no rollout `{target}`")}));
                continue;
            }
            Err(e) => {
                // The store failed: not "no rollout". Alertmanager must send it again.
                let error = ApiError::from(e);
                failed.push(json!({"alert": name, "target": target, "error": error.error, "message": error.message}));
                continue;
            }
        };
        if !who.may_act_in(&record.env) {
            let why = format!("the token may not act in environment `{}`", record.env);
            ignored.push(json!({"alert": name, "rollout": record.id, "why": why}));
            continue;
        }
        let hard = alert.labels.get("sluice_severity").map(String::as_str) == Some("hard")
            || matches!(alert.labels.get("severity").map(String::as_str), Some("critical" | "page"));
        let reason =
            alert.annotations.get("summary").cloned().unwrap_or_else(|| format!("Alertmanager: {name} firing"));
        let body = CommandBody {
            name: Some(name.clone()),
            severity: Some(if hard { "hard" } else { "soft" }.into()),
            reason: Some(reason),
            ..CommandBody::default()
        };
        match state.controller.command_named(&record.id, "signal", body, &who).await {
            Ok(_) => signalled.push(json!({"rollout": record.id, "trigger": name, "hard": hard})),
            Err(e) => {
                let error = ApiError::from(e);
                let detail = json!({"alert": name, "hard": hard, "error": error.error, "message": error.message});
                state
                    .store
                    .record_event(&who.name, "rollout.signal_failed", &format!("rollout:{}", record.id), detail, None)
                    .await?;
                failed.push(
                    json!({"rollout": record.id, "trigger": name, "error": error.error, "message": error.message}),
                );
            }
        }
    }
    let status = if failed.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(json!({"signalled": signalled, "ignored": ignored, "failed": failed}))).into_response())
}
