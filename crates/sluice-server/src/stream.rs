//! Server-sent change streams: the OFREP event stream (`refetchEvaluation`, what the OpenFeature web
//! provider listens for) and the admin stream of committed changes with their audit events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use sluice_store::Role;
use tokio::sync::broadcast::{error::RecvError, Receiver};

use crate::limits::{client_address, StreamSlot};
use crate::{ApiError, AppState, ChangeEvent};

/// How long `/api/v1/stream` waits after a change for more to send with it: unnoticeable on a dashboard.
const COALESCE: Duration = Duration::from_millis(20);
/// Most changes sent in one write.
const COALESCE_MOST: usize = 256;
/// How long a stream stays silent before a comment tells proxies and clients it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The next change, or `None` when the server shuts down. A receiver that fell behind gets the latest
/// revision instead of the ones it missed: every listener only needs to know that it must refetch.
async fn next_change(rx: &mut Receiver<Arc<ChangeEvent>>, state: &AppState) -> Option<Arc<ChangeEvent>> {
    match rx.recv().await {
        Ok(change) => Some(change),
        Err(RecvError::Lagged(_)) => Some(catch_up(state)),
        Err(RecvError::Closed) => None,
    }
}

/// What a receiver that fell behind is told instead of the changes it missed: the latest revision.
fn catch_up(state: &AppState) -> Arc<ChangeEvent> {
    Arc::new(ChangeEvent::new(state.catalog.revision(), Vec::new(), None))
}

/// The next change of the flag catalog: a rollout's own transitions and decisions change no answer.
async fn next_flag_change(rx: &mut Receiver<Arc<ChangeEvent>>, state: &AppState) -> Option<Arc<ChangeEvent>> {
    loop {
        let change = next_change(rx, state).await?;
        if change.rollout.is_none() {
            return Some(change);
        }
    }
}

/// The events as a server-sent stream that holds `slot` while open and ends when the server stops
/// accepting (so that the drain is not held up by listeners who would wait for ever).
fn sse<S>(state: &AppState, events: S, slot: StreamSlot) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(until_shutdown(state, events, slot)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// `items` until the server stops accepting, holding `slot` for as long as the stream lives.
fn until_shutdown<S: Stream>(state: &AppState, items: S, slot: StreamSlot) -> impl Stream<Item = S::Item> {
    let mut stopping = state.shutting_down.subscribe();
    let stop = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    items.take_until(stop).map(move |item| {
        let _held = &slot;
        item
    })
}

/// A slot for one more stream of `key`, or the 429 that says whose limit it reached.
fn stream_slot(state: &AppState, key: String, limit: usize, whose: &str) -> Result<StreamSlot, ApiError> {
    state.streams.open(key, limit, state.limit_counters).ok_or_else(|| {
        ApiError::too_many(
            format!("{whose} has {limit} change streams open, the limit: close one (or raise it: sluice serve --max-streams-per-token / --max-anonymous-streams)"),
            5,
        )
    })
}

/// `GET /ofrep/v1/events`: one unnamed (`message`) event `{"type":"refetchEvaluation", …}` per committed
/// change. It carries no flag data, only "something changed", so it needs no token: browsers' and Node's
/// `EventSource` cannot send an `Authorization` header.
#[utoipa::path(get, path = "/ofrep/v1/events", tag = "ofrep", security((), ("bearer" = [])),
    responses((status = 200, description = "Server-sent events: `refetchEvaluation` on every change (never ends)", content_type = "text/event-stream", body = String), (status = 429, description = "Too many streams open", body = crate::error::ApiError)))]
pub(crate) async fn ofrep_events(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
) -> Response {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().copied();
    // A listener with a valid token counts against its token; one without, against its address.
    let tokens = state.tokens.load();
    let principal = match crate::auth::credential(&headers) {
        crate::auth::Credential::Token(t) => tokens.authenticate(t).cloned(),
        _ => None,
    };
    let token = principal.as_ref().map(|p| p.name.clone());
    let env_of_token = principal.as_ref().and_then(|p| p.only_env().map(str::to_string));
    drop(tokens);
    let limits = &state.options.limits;
    let slot = match token {
        Some(name) => {
            stream_slot(&state, format!("token:{name}"), limits.streams_per_token, &format!("the token `{name}`"))
        }
        None => {
            let address = peer.map_or_else(
                || "unknown".to_string(),
                |ConnectInfo(peer)| client_address(peer, &headers, &limits.trusted_proxies).to_string(),
            );
            stream_slot(
                &state,
                format!("address:{address}"),
                limits.anonymous_streams_per_address,
                &format!("the address {address}"),
            )
        }
    };
    let slot = match slot {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    // The environment: the token's, else the one `?env=` names, else every one (a change anywhere wakes).
    let env = match (env_of_token, crate::auth::env_param(query.as_deref())) {
        (Some(env), _) => Some(env),
        (None, Some(named)) => match state.catalog.resolve(Some(&named)) {
            Ok(env) => Some(env.name().to_string()),
            Err(e) => return ApiError::from(e).into_response(),
        },
        (None, None) => None,
    };
    let (rx, expired, stopping) = (state.subscribe(), state.expiries.subscribe(), state.clone());
    let events = stream::unfold((rx, expired, state, env), |(mut rx, mut expired, state, env)| async move {
        // A committed change, or an override expiring: either way the answers may differ now.
        let revision = |state: &AppState| match &env {
            Some(env) => state.catalog.env(env).map_or(0, |e| e.revision()),
            None => state.catalog.revision(),
        };
        let etag = loop {
            tokio::select! {
                change = next_flag_change(&mut rx, &state) => {
                    let change = change?;
                    // A change of another environment changes none of this client's answers; a catch-up
                    // after falling behind (no environments named) may have.
                    if env.as_ref().is_none_or(|e| change.envs.is_empty() || change.touches(e)) {
                        break format!("r{}", revision(&state));
                    }
                }
                at = expired.recv() => match at {
                    Ok((in_env, at)) if env.as_ref().is_none_or(|e| *e == in_env) => {
                        break format!("r{}-x{at}", revision(&state));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break format!("r{}-x", revision(&state)),
                    Err(RecvError::Closed) => return None,
                },
            }
        };
        let data = json!({
            "type": "refetchEvaluation",
            "etag": etag,
            "lastModified": chrono::Utc::now().timestamp(),
        });
        let event = Event::default().id(etag).data(data.to_string());
        Some((Ok(event), (rx, expired, state, env)))
    });
    sse(&stopping, events, slot)
}

/// Runs for the server's life: when an override's expiry passes, tells the OFREP event stream, since
/// answers changed without a write. Recomputes the next expiry after every committed change.
pub async fn announce_expiries(state: Arc<AppState>) {
    let mut changes = state.subscribe();
    loop {
        let now = chrono::Utc::now();
        // The next override to expire in any environment, and where.
        let next = state
            .catalog
            .envs()
            .iter()
            .flat_map(|env| {
                let snapshot = env.live().load();
                let times: Vec<_> = snapshot
                    .flags()
                    .iter()
                    .flat_map(|f| f.overrides.iter().filter_map(|o| o.expires_at))
                    .filter(|t| *t > now)
                    .collect();
                times.into_iter().map(|t| (t, env.name().to_string()))
            })
            .min();
        // Nothing expiring: wake on the next change (or hourly, which costs nothing).
        let wait = next.as_ref().map_or(Duration::from_secs(3600), |(t, _)| (*t - now).to_std().unwrap_or_default());
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                if let Some((t, env)) = next.filter(|(t, _)| *t <= chrono::Utc::now()) {
                    let _ = state.expiries.send((env, t.timestamp_millis()));
                }
            }
            change = changes.recv() => {
                if matches!(change, Err(RecvError::Closed)) {
                    return;
                }
            }
        }
    }
}

/// `GET /api/v1/stream` (viewer): every committed catalog change as an event `change` with its revision and
/// audit events, and every rollout transition or tick as an event `rollout` (with the rollout's id, status,
/// phase, percentage and the tick's decisions) — the feed the dashboard and `sluice rollout watch` read.
#[utoipa::path(get, path = "/api/v1/stream", tag = "rollouts", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, description = "Server-sent events `change` and `rollout` (never ends)", content_type = "text/event-stream", body = String), crate::openapi::ReadErrors))]
pub(crate) async fn changes(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let who = match state.require(&headers, Role::Viewer) {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let limit = state.options.limits.streams_per_token;
    let slot = match stream_slot(&state, format!("token:{}", who.name), limit, &format!("the token `{}`", who.name)) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let (rx, stopping) = (state.subscribe(), state.clone());
    let frames = stream::unfold((rx, state), |(mut rx, state)| async move {
        let first = match tokio::time::timeout(KEEP_ALIVE, next_change(&mut rx, &state)).await {
            Err(_) => return Some((Bytes::from_static(b":\n\n"), (rx, state))),
            Ok(change) => change?,
        };
        // What else arrives within a moment goes out in the same write: a hundred rollouts ticking in the
        // same second would otherwise wake each watcher and write to its socket a hundred times. Each
        // event's text is written once for every watcher; a watcher only joins them.
        tokio::time::sleep(COALESCE).await;
        let mut batch = vec![first];
        while batch.len() < COALESCE_MOST {
            match rx.try_recv() {
                Ok(change) => batch.push(change),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => batch.push(catch_up(&state)),
                Err(_) => break,
            }
        }
        let mut text = String::with_capacity(batch.iter().map(|c| c.to_sse().len()).sum());
        for change in &batch {
            text.push_str(change.to_sse());
        }
        Some((Bytes::from(text), (rx, state)))
    });
    sse_frames(&stopping, frames, slot)
}

/// Like [`sse`], for events already written as text (a batch of them per item), with the same
/// keep-alive: the caller's stream yields a comment when it has had nothing to send for [`KEEP_ALIVE`].
fn sse_frames<S>(state: &AppState, frames: S, slot: StreamSlot) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let frames = until_shutdown(state, frames, slot).map(Ok::<_, Infallible>);
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(frames))
        .into_response()
}
