//! The SQL every backend runs, written once: [`Store`] for every [`Backend`] (SQLite and PostgreSQL each
//! say how they begin a read and a write, and what their clock is; `session.rs`), as plain functions. The
//! SQL is portable between the two; what a change does and audits is decided by the backend-neutral
//! modules (`catalog`, `audit`, `token`, `rollout`).

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;

use crate::audit::{AuditRow, NewEvent};
use crate::catalog::{Catalog, RowEdit};
use crate::rollout::{self, NotificationRow, RolloutRow};
use crate::session::{Backend, Query, Row, Session, Tx, Values, Writer};
use crate::stored::{self, count_from_column, count_to_column, rfc3339, to_json};
use crate::token::{self, NewToken, TokenRow};
use crate::{
    audit, AppliedBatch, AuditEvent, AuditFilter, AuditNote, Bootstrap, Catalogs, Change, Decided, Destination,
    EnvChange, Environment, Fence, Lease, LeaseAnswer, LeaseBid, NewDecision, NewNotification, QueuedNotification,
    Role, RolloutRecord, RolloutSave, Store, StoreError, TokenInfo, TokenTable, CONTROLLER_LEASE,
};

/// A backend's embedded migrations, (version, description, SQL), as sqlx runs them.
pub(crate) fn migrations_of(list: &'static [(i64, &'static str, &'static str)]) -> Vec<sqlx::migrate::Migration> {
    use sqlx::migrate::{Migration, MigrationType};
    use sqlx::SqlSafeStr;
    list.iter()
        .map(|(version, description, sql)| {
            Migration::new(*version, (*description).into(), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect()
}

#[async_trait]
impl<B: Backend> Store for B {
    async fn snapshots(&self) -> Result<Catalogs, StoreError> {
        // One snapshot of the database: a commit between the reads must not label catalog N as N+1.
        let mut tx = self.begin_read().await?;
        let catalog = load_catalog(&mut tx).await?;
        let envs = read_environments(&mut tx).await?;
        let revision: i64 = Query::new("SELECT revision FROM revision WHERE id = 1").scalar(&mut tx).await?;
        tx.commit().await?;
        let compiled = catalog.into_snapshots()?;
        let envs = envs.into_iter().zip(compiled).map(|(env, (_, snapshot))| (env, snapshot)).collect();
        Ok(Catalogs { revision, envs })
    }

    async fn environments(&self) -> Result<Vec<Environment>, StoreError> {
        read_environments(&mut self.acquire().await?).await
    }

    async fn change_env(
        &self,
        actor: &str,
        change: EnvChange,
        reason: Option<String>,
    ) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let now = Utc::now();
        let catalog = load_catalog(&mut tx).await?;
        let names: Vec<String> = catalog.env_names().map(str::to_string).collect();
        let exists = |name: &str| names.iter().any(|n| n == name);
        let missing = |name: &str| StoreError::NotFound { entity: format!("environment `{name}`") };
        let taken = |name: &str| StoreError::Conflict { message: format!("environment `{name}` exists already") };
        let invalid = |name: &str, message: String| StoreError::InvalidField {
            entity: format!("environment `{name}`"),
            field: "name".into(),
            message,
        };
        let revision: i64 = Query::new("UPDATE revision SET revision = revision + 1 WHERE id = 1 RETURNING revision")
            .scalar(&mut tx)
            .await?;
        let event = match &change {
            EnvChange::Create(name) => {
                crate::check_env_name(name).map_err(|m| invalid(name, m))?;
                if exists(name) {
                    return Err(taken(name));
                }
                Query::new("INSERT INTO environments (name, revision, created_at) VALUES ($1, $2, $3)")
                    .bind(name)
                    .bind(revision)
                    .bind(rfc3339(now))
                    .execute(&mut tx)
                    .await?;
                let flags = catalog.definitions();
                for flag in &flags {
                    let edit =
                        RowEdit::PutFlag { env: name.clone(), key: flag.key.clone(), body: to_json(flag).to_string() };
                    write_edit(&mut tx, &edit, &rfc3339(now)).await?;
                }
                let after = serde_json::json!({"name": name, "flags": flags.len()});
                NewEvent::note(now, actor, "env.create", &format!("env:{name}"), after, reason).in_env(name)
            }
            EnvChange::Rename { from, to } => {
                crate::check_env_name(to).map_err(|m| invalid(to, m))?;
                if !exists(from) {
                    return Err(missing(from));
                }
                if exists(to) {
                    return Err(taken(to));
                }
                Query::new("UPDATE environments SET name = $2, revision = $3 WHERE name = $1")
                    .bind(from)
                    .bind(to)
                    .bind(revision)
                    .execute(&mut tx)
                    .await?;
                // Built-in aggregates are kept as `flag@env`.
                Query::new(
                    "UPDATE metrics SET flag = substr(flag, 1, length(flag) - length($1)) || $2 \
                     WHERE substr(flag, length(flag) - length($1) + 1) = $1",
                )
                .bind(format!("@{from}"))
                .bind(format!("@{to}"))
                .execute(&mut tx)
                .await?;
                for sql in [
                    "UPDATE flags SET env = $2 WHERE env = $1",
                    "UPDATE rollouts SET env = $2 WHERE env = $1",
                    "UPDATE client_metrics SET env = $2 WHERE env = $1",
                ] {
                    Query::new(sql).bind(from).bind(to).execute(&mut tx).await?;
                }
                // Tokens keep their environments as a JSON list: rewritten one by one.
                let limited: Vec<(String, String)> =
                    Query::new("SELECT id, envs FROM tokens WHERE envs IS NOT NULL").fetch_all(&mut tx).await?;
                for (id, envs) in limited {
                    let mut list: Vec<String> = stored::parse_json(&envs, || format!("token {id}, `envs`"))?;
                    if list.iter().any(|e| e == from) {
                        list.iter_mut().filter(|e| *e == from).for_each(|e| e.clone_from(to));
                        Query::new("UPDATE tokens SET envs = $1 WHERE id = $2")
                            .bind(to_json(&list).to_string())
                            .bind(&id)
                            .execute(&mut tx)
                            .await?;
                    }
                }
                let after = serde_json::json!({"from": from, "to": to});
                NewEvent::note(now, actor, "env.rename", &format!("env:{to}"), after, reason).in_env(to)
            }
            EnvChange::Delete(name) => {
                if !exists(name) {
                    return Err(missing(name));
                }
                let enabled: Vec<String> = catalog
                    .flags_of(name)
                    .unwrap_or_default()
                    .iter()
                    .filter(|f| f.enabled)
                    .map(|f| f.key.clone())
                    .collect();
                let running: Vec<(String, String)> =
                    Query::new("SELECT id, flag FROM rollouts WHERE env = $1 AND (active = 1 OR outbox <> '[]')")
                        .bind(name)
                        .fetch_all(&mut tx)
                        .await?;
                let limited: Vec<(String, String)> =
                    Query::new("SELECT name, envs FROM tokens WHERE envs IS NOT NULL AND revoked_at IS NULL")
                        .fetch_all(&mut tx)
                        .await?;
                let mut only_here = Vec::new();
                for (token, envs) in limited {
                    let list: Vec<String> = stored::parse_json(&envs, || format!("token `{token}`, `envs`"))?;
                    if list.iter().all(|e| e == name) {
                        only_here.push(token);
                    }
                }
                crate::environment::refuse_delete(name, names.len(), &enabled, &running, &only_here)?;
                // A token of several environments loses this one: were an environment of that name made
                // again, the token must not reach it.
                let lists: Vec<(String, String)> =
                    Query::new("SELECT id, envs FROM tokens WHERE envs IS NOT NULL").fetch_all(&mut tx).await?;
                for (id, envs) in lists {
                    let mut list: Vec<String> = stored::parse_json(&envs, || format!("token {id}, `envs`"))?;
                    if list.iter().any(|e| e == name) {
                        list.retain(|e| e != name);
                        Query::new("UPDATE tokens SET envs = $1 WHERE id = $2")
                            .bind(to_json(&list).to_string())
                            .bind(&id)
                            .execute(&mut tx)
                            .await?;
                    }
                }
                Query::new("DELETE FROM metrics WHERE substr(flag, length(flag) - length($1) + 1) = $1")
                    .bind(format!("@{name}"))
                    .execute(&mut tx)
                    .await?;
                for sql in [
                    "DELETE FROM environments WHERE name = $1",
                    "DELETE FROM flags WHERE env = $1",
                    "DELETE FROM client_metrics WHERE env = $1",
                ] {
                    Query::new(sql).bind(name).execute(&mut tx).await?;
                }
                let after = serde_json::json!({"name": name});
                NewEvent::note(now, actor, "env.delete", &format!("env:{name}"), after, reason).in_env(name)
            }
        };
        let event = append_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn apply_in(
        &self,
        actor: &str,
        env: Option<&str>,
        changes: Vec<Change>,
        reason: Option<String>,
        expect_revision: Option<i64>,
    ) -> Result<AppliedBatch, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let now = Utc::now();
        if let Some(expected) = expect_revision {
            let revision: i64 = Query::new("SELECT revision FROM revision WHERE id = 1").scalar(&mut tx).await?;
            if revision != expected {
                return Err(StoreError::Stale { expected, revision });
            }
        }
        // Checked in the write's own transaction: a rollout starting meanwhile cannot slip past it.
        if changes.iter().any(|c| matches!(c, Change::DeleteFlag(_) | Change::DeleteSegment(_))) {
            let rows: Vec<RolloutRow> =
                Query::new("SELECT * FROM rollouts WHERE active = 1 OR outbox <> '[]'").fetch_all(&mut tx).await?;
            let busy = rows.into_iter().map(RolloutRow::into_record).collect::<Result<Vec<_>, _>>()?;
            rollout::refuse_deleting_what_rollouts_need(&changes, &busy)?;
        }
        let catalog = load_catalog(&mut tx).await?;
        let env = match env {
            Some(env) => env.to_string(),
            None => crate::environment::only(catalog.env_names().map(|n| (n.to_string(), n.to_string())).collect())?,
        };
        let batch = catalog.apply(&env, changes, actor, reason, now)?;
        let updated_at = rfc3339(now);
        for edit in &batch.edits {
            write_edit(&mut tx, edit, &updated_at).await?;
        }
        let events = append_all(&mut tx, batch.events).await?;
        let revision: i64 = Query::new("UPDATE revision SET revision = revision + 1 WHERE id = 1 RETURNING revision")
            .scalar(&mut tx)
            .await?;
        for name in std::iter::once(&env).chain(batch.others.iter().map(|(name, _)| name)) {
            Query::new("UPDATE environments SET revision = $1 WHERE name = $2")
                .bind(revision)
                .bind(name)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(AppliedBatch { events, env, snapshot: batch.snapshot, others: batch.others, revision })
    }

    async fn revision(&self) -> Result<i64, StoreError> {
        Ok(Query::new("SELECT revision FROM revision WHERE id = 1").scalar(&mut self.acquire().await?).await?)
    }

    fn fenced(&self, fence: Fence) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(self.with_fence(fence))
    }

    async fn take_lease(&self, bid: &LeaseBid<'_>) -> Result<LeaseAnswer, StoreError> {
        let (_writer, mut tx) = self.begin_unfenced_write().await?;
        let now_ms: i64 = Query::new(&format!("SELECT {}", B::NOW_MS)).scalar(&mut tx).await?;
        let current = read_lease(&mut tx, bid.name, now_ms).await?;
        let ttl = i64::try_from(bid.ttl.as_millis()).unwrap_or(i64::MAX);
        let renewing = current.as_ref().is_some_and(|l| l.holder == bid.holder && l.token == bid.held);
        let free = current.as_ref().is_none_or(|l| {
            l.expires_in_ms <= 0 || bid.takeover || (bid.fresh && l.holder == bid.holder && l.token != bid.held)
        });
        if !renewing && !free {
            return Ok(LeaseAnswer::Refused(current.expect("a lease that is not free exists")));
        }
        let token = if renewing { bid.held } else { current.as_ref().map_or(1, |l| l.token + 1) };
        Query::new(
            "INSERT INTO leases (name, holder, address, token, expires_ms, since_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, address = excluded.address, \
               token = excluded.token, expires_ms = excluded.expires_ms, \
               since_ms = CASE WHEN leases.token = excluded.token THEN leases.since_ms ELSE excluded.since_ms END",
        )
        .bind(bid.name)
        .bind(bid.holder)
        .bind(bid.address)
        .bind(token)
        .bind(now_ms.saturating_add(ttl))
        .bind(now_ms)
        .execute(&mut tx)
        .await?;
        if !renewing {
            let previous = current.as_ref().map(|l| {
                serde_json::json!({
                    "holder": l.holder, "token": l.token, "expired_ms_ago": -l.expires_in_ms,
                })
            });
            let after = serde_json::json!({
                "holder": bid.holder, "address": bid.address, "token": token, "previous": previous,
            });
            let note = NewEvent::note(
                Utc::now(),
                &format!("replica:{}", bid.holder),
                "lease.acquire",
                &format!("lease:{}", bid.name),
                after,
                None,
            );
            append_audit(&mut tx, note).await?;
        }
        tx.commit().await?;
        Ok(LeaseAnswer::Held(Lease {
            name: bid.name.to_string(),
            holder: bid.holder.to_string(),
            address: bid.address.to_string(),
            token,
            expires_in_ms: ttl,
            since_ms: if renewing { current.map_or(now_ms, |l| l.since_ms) } else { now_ms },
        }))
    }

    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let mut conn = self.acquire().await?;
        let now_ms: i64 = Query::new(&format!("SELECT {}", B::NOW_MS)).scalar(&mut conn).await?;
        read_lease(&mut conn, name, now_ms).await
    }

    async fn release_lease(&self, name: &str, holder: &str, token: i64) -> Result<bool, StoreError> {
        let (_writer, mut tx) = self.begin_unfenced_write().await?;
        let released = Query::new(&format!(
            "UPDATE leases SET expires_ms = {} WHERE name = $1 AND holder = $2 AND token = $3",
            B::NOW_MS
        ))
        .bind(name)
        .bind(holder)
        .bind(token)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(released > 0)
    }

    async fn fence_holds(&self) -> Result<(), StoreError> {
        match self.fence() {
            Some(fence) => check_fence(&mut self.acquire().await?, fence).await,
            None => Ok(()),
        }
    }

    fn change_feed(&self) -> Option<crate::ChangeFeed> {
        self.feed()
    }

    async fn dump(&self) -> Result<crate::copy::Dump, StoreError> {
        use crate::copy::*;
        let mut tx = self.begin_read().await?;
        let dump = Dump {
            revision: Query::new("SELECT revision FROM revision WHERE id = 1").scalar(&mut tx).await?,
            environments: read_table(&mut tx, &ENVIRONMENTS).await?,
            flags: read_table(&mut tx, &FLAGS).await?,
            segments: read_table(&mut tx, &SEGMENTS).await?,
            audit: Query::new("SELECT * FROM audit ORDER BY seq").fetch_all(&mut tx).await?,
            tokens: read_table(&mut tx, &TOKENS).await?,
            client_metrics: read_table(&mut tx, &CLIENT_METRICS).await?,
            rollouts: read_table(&mut tx, &ROLLOUTS).await?,
            decisions: read_table(&mut tx, &DECISIONS).await?,
            notifications: read_table(&mut tx, &NOTIFICATIONS).await?,
            metrics: read_table(&mut tx, &METRICS).await?,
            server_keys: read_table(&mut tx, &SERVER_KEYS).await?,
            retired_secrets: read_table(&mut tx, &RETIRED_SECRETS).await?,
        };
        tx.commit().await?;
        Ok(dump)
    }

    async fn restore(&self, dump: &crate::copy::Dump) -> Result<(), StoreError> {
        let (_writer, mut tx) = self.begin_unfenced_write().await?;
        let (audit, flags, tokens, rollouts): (i64, i64, i64, i64) = Query::new(
            "SELECT (SELECT COUNT(*) FROM audit), (SELECT COUNT(*) FROM flags), (SELECT COUNT(*) FROM tokens), \
               (SELECT COUNT(*) FROM rollouts)",
        )
        .fetch_one(&mut tx)
        .await?;
        if audit + flags + tokens + rollouts > 0 {
            return Err(StoreError::Conflict {
                message: format!(
                    "the destination is not empty ({audit} audit events, {flags} flags, {tokens} tokens, \
                     {rollouts} rollouts): copy into a new database"
                ),
            });
        }
        use crate::copy::*;
        Query::new("UPDATE revision SET revision = $1 WHERE id = 1").bind(dump.revision).execute(&mut tx).await?;
        // A new store starts with the environment `production`: the source's environments replace it.
        Query::new("DELETE FROM environments").execute(&mut tx).await?;
        write_table(&mut tx, &ENVIRONMENTS, &dump.environments).await?;
        write_table(&mut tx, &FLAGS, &dump.flags).await?;
        write_table(&mut tx, &SEGMENTS, &dump.segments).await?;
        for row in &dump.audit {
            insert_audit_row(&mut tx, row).await?;
        }
        write_table(&mut tx, &TOKENS, &dump.tokens).await?;
        write_table(&mut tx, &RETIRED_SECRETS, &dump.retired_secrets).await?;
        write_table(&mut tx, &CLIENT_METRICS, &dump.client_metrics).await?;
        write_table(&mut tx, &ROLLOUTS, &dump.rollouts).await?;
        write_table(&mut tx, &DECISIONS, &dump.decisions).await?;
        write_table(&mut tx, &NOTIFICATIONS, &dump.notifications).await?;
        write_table(&mut tx, &METRICS, &dump.metrics).await?;
        write_table(&mut tx, &SERVER_KEYS, &dump.server_keys).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        // One static statement: an absent filter is a NULL parameter that matches everything.
        let rows: Vec<AuditRow> = Query::new(
            "SELECT * FROM audit \
             WHERE (CAST($1 AS TEXT) IS NULL OR actor = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR entity = $2) \
               AND (CAST($3 AS TEXT) IS NULL OR substr(action, 1, length($3)) = $3) \
               AND (CAST($4 AS TEXT) IS NULL OR at >= $4) \
             ORDER BY seq DESC LIMIT $5",
        )
        .bind(&filter.actor)
        .bind(&filter.entity)
        .bind(&filter.action_prefix)
        .bind(filter.since.map(rfc3339))
        .bind(filter.page_size())
        .fetch_all(&mut self.acquire().await?)
        .await?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn head(&self) -> Result<String, StoreError> {
        let head: Option<String> = Query::new("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")
            .scalar_optional(&mut self.acquire().await?)
            .await?;
        Ok(head.unwrap_or_else(|| audit::GENESIS.into()))
    }

    async fn create_token_in(
        &self,
        actor: &str,
        name: &str,
        role: Role,
        envs: Option<Vec<String>>,
    ) -> Result<(TokenInfo, String), StoreError> {
        token::check_name(name)?;
        let (_writer, mut tx) = begin_write(self).await?;
        if token_name_taken(&mut tx, name).await? {
            return Err(token::name_taken(name));
        }
        let existing: Vec<Environment> = read_environments(&mut tx).await?;
        let envs = crate::environment::token_envs(name, role, envs, &existing)?;
        let new = NewToken::generated(actor, name, role, envs, Utc::now());
        insert_token(&mut tx, &new).await?;
        tx.commit().await?;
        Ok((new.info, new.text))
    }

    async fn bootstrap_token(&self, actor: &str, name: &str, role: Role, text: &str) -> Result<Bootstrap, StoreError> {
        token::check_text(text)?;
        let hash = token::sha256_hex(text);
        let now = Utc::now();
        let (_writer, mut tx) = begin_write(self).await?;
        let active: Option<String> =
            Query::new("SELECT name FROM tokens WHERE secret_sha256 = $1 AND revoked_at IS NULL")
                .bind(&hash)
                .scalar_optional(&mut tx)
                .await?;
        if active.is_some() {
            return Ok(Bootstrap::Kept);
        }
        // A secret rotated away: still valid through its overlap, refused after.
        let retired: Option<(String, String, Option<String>)> = Query::new(
            "SELECT t.name, r.until, t.revoked_at FROM retired_secrets r JOIN tokens t ON t.id = r.token_id \
             WHERE r.secret_sha256 = $1",
        )
        .bind(&hash)
        .fetch_optional(&mut tx)
        .await?;
        if let Some((owner, until, revoked_at)) = retired {
            if revoked_at.is_none() && until > rfc3339(now) {
                return Ok(Bootstrap::Overlapping { name: owner, until });
            }
            return Err(token::revoked_bootstrap(&owner, revoked_at.as_deref().unwrap_or(&until)));
        }
        let revoked: Option<(String, String)> =
            Query::new("SELECT name, revoked_at FROM tokens WHERE secret_sha256 = $1 AND revoked_at IS NOT NULL")
                .bind(&hash)
                .fetch_optional(&mut tx)
                .await?;
        if let Some((owner, at)) = revoked {
            return Err(token::revoked_bootstrap(&owner, &at));
        }
        // A new text for the token the last one made: the one it replaces is revoked, so that
        // rotating a leaked SLUICE_ADMIN_TOKEN takes the leaked one away.
        let current: Option<(String, String, String)> =
            Query::new("SELECT id, role, secret_sha256 FROM tokens WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .fetch_optional(&mut tx)
                .await?;
        if let Some((id, current_role, old)) = current {
            if current_role == role.as_str() {
                replace_secret(&mut tx, &id, &old, &hash, now).await?;
                let event = token::rotated_event(actor, now, &id, name, &current_role, &rfc3339(now))
                    .because("SLUICE_ADMIN_TOKEN changed: the token it replaces is revoked");
                append_audit(&mut tx, event).await?;
                tx.commit().await?;
                return Ok(Bootstrap::Replaced { name: name.to_string() });
            }
        }
        let taken = token_name_taken(&mut tx, name).await?;
        let new = NewToken::chosen(actor, name, taken, role, text, now);
        insert_token(&mut tx, &new).await?;
        tx.commit().await?;
        Ok(Bootstrap::Added { name: new.info.name })
    }

    async fn rotate_token(
        &self,
        actor: &str,
        name: &str,
        overlap: std::time::Duration,
    ) -> Result<(TokenInfo, String, AuditEvent), StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let row: Option<TokenRow> = Query::new(
            "SELECT id, name, role, created_at, created_by, revoked_at, envs FROM tokens WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = row else { return Err(StoreError::NotFound { entity: format!("token:{name}") }) };
        let info = row.into_info()?;
        let old: String =
            Query::new("SELECT secret_sha256 FROM tokens WHERE id = $1").bind(&info.id).scalar(&mut tx).await?;
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::MAX);
        let text = token::generated_text(&info.id);
        replace_secret(&mut tx, &info.id, &old, &token::sha256_hex(&text), until).await?;
        let event = append_audit(
            &mut tx,
            token::rotated_event(actor, now, &info.id, name, info.role.as_str(), &rfc3339(until)),
        )
        .await?;
        tx.commit().await?;
        Ok((info, text, event))
    }

    async fn revoke_token(&self, actor: &str, name: &str) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let row: Option<(String, String)> =
            Query::new("SELECT id, role FROM tokens WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .fetch_optional(&mut tx)
                .await?;
        let Some((id, role)) = row else {
            return Err(StoreError::NotFound { entity: format!("token:{name}") });
        };
        let now = Utc::now();
        Query::new("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
            .bind(rfc3339(now))
            .bind(&id)
            .execute(&mut tx)
            .await?;
        // A secret still in its rotation overlap goes with it.
        Query::new("UPDATE retired_secrets SET until = $1 WHERE token_id = $2 AND until > $1")
            .bind(rfc3339(now))
            .bind(&id)
            .execute(&mut tx)
            .await?;
        let event = append_audit(&mut tx, token::revoked_event(actor, now, &id, name, &role)).await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows: Vec<TokenRow> = Query::new(
            "SELECT id, name, role, created_at, created_by, revoked_at, envs FROM tokens ORDER BY created_at, name",
        )
        .fetch_all(&mut self.acquire().await?)
        .await?;
        rows.into_iter().map(TokenRow::into_info).collect()
    }

    async fn server_key(&self, name: &str) -> Result<String, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        // The first caller makes it; everyone after (any replica) reads the same one.
        Query::new(
            "INSERT INTO server_keys (name, key_hex, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(token::random_hex(32))
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&mut tx)
        .await?;
        let key: String =
            Query::new("SELECT key_hex FROM server_keys WHERE name = $1").bind(name).scalar(&mut tx).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn token_table(&self) -> Result<TokenTable, StoreError> {
        let mut tx = self.begin_read().await?;
        let rows = Query::new("SELECT name, role, secret_sha256, envs FROM tokens WHERE revoked_at IS NULL")
            .fetch_all(&mut tx)
            .await?;
        let overlapping = Query::new(
            "SELECT t.name, t.role, r.secret_sha256, r.until, t.envs FROM retired_secrets r \
             JOIN tokens t ON t.id = r.token_id WHERE t.revoked_at IS NULL AND r.until > $1",
        )
        .bind(rfc3339(Utc::now()))
        .fetch_all(&mut tx)
        .await?;
        tx.commit().await?;
        token::table_from_rows(rows, overlapping)
    }

    async fn chain(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = Query::new("SELECT * FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&mut self.acquire().await?)
            .await?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn record_client_metrics(&self, env: &str, counts: &[(String, String, u64)]) -> Result<(), StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        for (flag, variant, n) in counts {
            Query::new(
                "INSERT INTO client_metrics (flag, variant, count, env) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (env, flag, variant) DO UPDATE SET count = \
                   CASE WHEN client_metrics.count > 9223372036854775807 - excluded.count \
                        THEN 9223372036854775807 ELSE client_metrics.count + excluded.count END",
            )
            .bind(flag)
            .bind(variant)
            .bind(count_to_column(*n))
            .bind(env)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn client_metrics(&self, env: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            Query::new("SELECT flag, variant, count FROM client_metrics WHERE env = $1 ORDER BY flag, variant")
                .bind(env)
                .fetch_all(&mut self.acquire().await?)
                .await?;
        Ok(rows.into_iter().map(|(f, v, n)| (f, v, count_from_column(n))).collect())
    }

    async fn create_rollout(
        &self,
        r: &RolloutRecord,
        events: &[AuditNote],
        notifications: &[NewNotification],
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let active: Option<(String, String)> =
            Query::new("SELECT id, plan_name FROM rollouts WHERE env = $1 AND flag = $2 AND active = 1")
                .bind(&r.env)
                .bind(&r.flag)
                .fetch_optional(&mut tx)
                .await?;
        if let Some((id, plan_name)) = active {
            return Err(rollout::already_active(&r.flag, &id, &plan_name));
        }
        // A delete of the flag that committed after the plan was checked: the rollout would ramp nothing.
        let flag: Option<(String,)> = Query::new("SELECT key FROM flags WHERE env = $1 AND key = $2")
            .bind(&r.env)
            .bind(&r.flag)
            .fetch_optional(&mut tx)
            .await?;
        if flag.is_none() {
            return Err(StoreError::NotFound { entity: format!("flag:{} in environment `{}`", r.flag, r.env) });
        }
        let now = Utc::now();
        Query::new(
            "INSERT INTO rollouts (id, flag, plan_name, plan_text, original_flag, state, status, active, outbox, created_by, created_at, updated_at, env) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $10, $11)",
        )
        .bind(&r.id)
        .bind(&r.flag)
        .bind(&r.plan_name)
        .bind(&r.plan_text)
        .bind(to_json(&r.original_flag).to_string())
        .bind(to_json(&r.state).to_string())
        .bind(r.state.status.name())
        .bind(to_json(&r.outbox).to_string())
        .bind(&r.created_by)
        .bind(rfc3339(now))
        .bind(&r.env)
        .execute(&mut tx)
        .await?;
        let written = append_all(&mut tx, rollout::created_events(r, events, now)).await?;
        queue_notifications(&mut tx, notifications, now).await?;
        tx.commit().await?;
        Ok(written)
    }

    async fn save_rollout(&self, save: &RolloutSave<'_>) -> Result<Vec<AuditEvent>, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let now = Utc::now();
        let env: Option<String> = Query::new(
            "UPDATE rollouts SET state = $1, status = $2, active = $3, outbox = $4, updated_at = $5 WHERE id = $6 \
             RETURNING env",
        )
        .bind(to_json(save.state).to_string())
        .bind(save.state.status.name())
        .bind(i64::from(!save.state.status.is_terminal()))
        .bind(to_json(&save.outbox).to_string())
        .bind(rfc3339(now))
        .bind(save.id)
        .scalar_optional(&mut tx)
        .await?;
        let Some(env) = env else {
            return Err(rollout::not_found(save.id));
        };
        let events = append_all(&mut tx, rollout::saved_events(save, &env, now)).await?;
        queue_notifications(&mut tx, save.notifications, now).await?;
        if let Some((at_ms, decisions)) = save.decisions {
            insert_decisions(&mut tx, save.id, at_ms, decisions).await?;
        }
        tx.commit().await?;
        Ok(events)
    }

    async fn due_notifications(&self, limit: u32) -> Result<Vec<QueuedNotification>, StoreError> {
        let rows: Vec<NotificationRow> = Query::new(
            "SELECT id, destination, rollout_id, body, attempts, last_error, created_ms, dead_ms FROM notifications \
             WHERE delivered_ms IS NULL AND dead_ms IS NULL AND next_ms <= $1 ORDER BY next_ms, created_ms LIMIT $2",
        )
        .bind(Utc::now().timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(&mut self.acquire().await?)
        .await?;
        rows.into_iter().map(NotificationRow::into_queued).collect()
    }

    async fn notification_delivered(&self, id: &str, destination: &Destination) -> Result<(), StoreError> {
        let delivered = Query::new("UPDATE notifications SET delivered_ms = $1 WHERE id = $2 AND destination = $3")
            .bind(Utc::now().timestamp_millis())
            .bind(id)
            .bind(destination.to_string());
        write_one(self, delivered).await.map(drop)
    }

    async fn notification_failed(
        &self,
        id: &str,
        destination: &Destination,
        error: &str,
        retry_in: std::time::Duration,
    ) -> Result<(), StoreError> {
        let next =
            Utc::now().timestamp_millis().saturating_add(i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX));
        let failed = Query::new(
            "UPDATE notifications SET attempts = attempts + 1, next_ms = $1, last_error = $2 WHERE id = $3 AND destination = $4",
        )
        .bind(next)
        .bind(stored::bounded_text(error, 4096))
        .bind(id)
        .bind(destination.to_string());
        write_one(self, failed).await.map(drop)
    }

    async fn notification_dead(
        &self,
        id: &str,
        destination: &Destination,
        error: &str,
        detail: Value,
    ) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let now = Utc::now();
        let marked = Query::new(
            "UPDATE notifications SET attempts = attempts + 1, dead_ms = $1, last_error = $2 \
             WHERE id = $3 AND destination = $4 AND dead_ms IS NULL AND delivered_ms IS NULL",
        )
        .bind(now.timestamp_millis())
        .bind(stored::bounded_text(error, 4096))
        .bind(id)
        .bind(destination.to_string())
        .execute(&mut tx)
        .await?;
        if marked == 0 {
            return Err(StoreError::Conflict {
                message: format!("notification {id} to {destination} is not waiting to be delivered"),
            });
        }
        let rollout: String = Query::new("SELECT rollout_id FROM notifications WHERE id = $1 AND destination = $2")
            .bind(id)
            .bind(destination.to_string())
            .scalar(&mut tx)
            .await?;
        let event = append_audit(
            &mut tx,
            NewEvent::note(now, "sluice", "rollout.notification_dead", &format!("rollout:{rollout}"), detail, None),
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    async fn dead_notifications(&self, rollout: Option<&str>) -> Result<Vec<QueuedNotification>, StoreError> {
        let rows: Vec<NotificationRow> = Query::new(
            "SELECT id, destination, rollout_id, body, attempts, last_error, created_ms, dead_ms FROM notifications \
             WHERE dead_ms IS NOT NULL AND ($1 = '' OR rollout_id = $1) ORDER BY dead_ms, id, destination",
        )
        .bind(rollout.unwrap_or(""))
        .fetch_all(&mut self.acquire().await?)
        .await?;
        rows.into_iter().map(NotificationRow::into_queued).collect()
    }

    async fn redeliver(
        &self,
        actor: &str,
        rollout: &str,
        reason: Option<String>,
    ) -> Result<(usize, Option<AuditEvent>), StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let now = Utc::now();
        let dead: Vec<(String, String)> = Query::new(
            "SELECT id, destination FROM notifications WHERE rollout_id = $1 AND dead_ms IS NOT NULL ORDER BY dead_ms, id",
        )
        .bind(rollout)
        .fetch_all(&mut tx)
        .await?;
        if dead.is_empty() {
            return Ok((0, None));
        }
        Query::new(
            "UPDATE notifications SET dead_ms = NULL, attempts = 0, next_ms = $1 WHERE rollout_id = $2 AND dead_ms IS NOT NULL",
        )
        .bind(now.timestamp_millis())
        .bind(rollout)
        .execute(&mut tx)
        .await?;
        let sent: Vec<Value> = dead.iter().map(|(id, d)| serde_json::json!({"id": id, "destination": d})).collect();
        let event = append_audit(
            &mut tx,
            NewEvent::note(
                now,
                actor,
                "rollout.notification_redeliver",
                &format!("rollout:{rollout}"),
                serde_json::json!({"notifications": sent}),
                reason,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((dead.len(), Some(event)))
    }

    async fn rollouts(&self, active_only: bool) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows: Vec<RolloutRow> = Query::new("SELECT * FROM rollouts WHERE active = 1 OR $1 = 0 ORDER BY created_at")
            .bind(i64::from(active_only))
            .fetch_all(&mut self.acquire().await?)
            .await?;
        rows.into_iter().map(RolloutRow::into_record).collect()
    }

    async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let row: Option<RolloutRow> = Query::new("SELECT * FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.acquire().await?)
            .await?;
        row.map(RolloutRow::into_record).transpose()
    }

    async fn record_decisions(&self, id: &str, at_ms: i64, decisions: &[Decided]) -> Result<(), StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let decisions: Vec<NewDecision> =
            decisions.iter().map(|d| NewDecision { decided: d.clone(), changed: true }).collect();
        insert_decisions(&mut tx, id, at_ms, &decisions).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_decisions(&self, before_ms: i64) -> Result<u64, StoreError> {
        write_one(self, Query::new("DELETE FROM decisions WHERE changed = 0 AND at_ms < $1").bind(before_ms)).await
    }

    async fn save_metrics(&self, replica: &str, flags: &[(String, String)], at_ms: i64) -> Result<(), StoreError> {
        if flags.is_empty() {
            return Ok(());
        }
        let (_writer, mut tx) = begin_write(self).await?;
        for (flag, body) in flags {
            Query::new(
                "INSERT INTO metrics (replica, flag, body, saved_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (replica, flag) DO UPDATE SET body = excluded.body, saved_at_ms = excluded.saved_at_ms",
            )
            .bind(replica)
            .bind(flag)
            .bind(body)
            .bind(at_ms)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_metrics(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(Query::new("SELECT replica, flag, body FROM metrics ORDER BY replica, flag")
            .fetch_all(&mut self.acquire().await?)
            .await?)
    }

    async fn decisions(&self, id: &str, limit: u32) -> Result<Vec<Decided>, StoreError> {
        let rows: Vec<(String,)> = Query::new(
            "SELECT body FROM (SELECT body, at_ms, seq FROM decisions WHERE rollout_id = $1 \
               ORDER BY at_ms DESC, seq DESC LIMIT $2) AS last ORDER BY at_ms, seq",
        )
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&mut self.acquire().await?)
        .await?;
        rows.iter().map(|(body,)| rollout::parse_decision(id, body)).collect()
    }

    async fn record_event(
        &self,
        actor: &str,
        action: &str,
        entity: &str,
        after: Value,
        reason: Option<String>,
    ) -> Result<AuditEvent, StoreError> {
        let (_writer, mut tx) = begin_write(self).await?;
        let event = append_audit(&mut tx, NewEvent::note(Utc::now(), actor, action, entity, after, reason)).await?;
        tx.commit().await?;
        Ok(event)
    }
}

/// A write, one at a time; a controller's write (a fenced store) checks its fence in the same transaction.
async fn begin_write<B: Backend>(backend: &B) -> Result<(Writer<'_>, Tx), StoreError> {
    let (writer, mut tx) = backend.begin_unfenced_write().await?;
    if let Some(fence) = backend.fence() {
        check_fence(&mut tx, fence).await?;
    }
    Ok((writer, tx))
}

/// One statement as a write of its own: how many rows it changed.
async fn write_one<B: Backend>(backend: &B, statement: Query<'_>) -> Result<u64, StoreError> {
    let (_writer, mut tx) = begin_write(backend).await?;
    let changed = statement.execute(&mut tx).await?;
    tx.commit().await?;
    Ok(changed)
}

/// The lease called `name` as the database sees it at `now_ms`, if anyone ever took it.
async fn read_lease(conn: &mut impl Session, name: &str, now_ms: i64) -> Result<Option<Lease>, StoreError> {
    let row: Option<(String, String, i64, i64, i64)> =
        Query::new("SELECT holder, address, token, expires_ms, since_ms FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(holder, address, token, expires_ms, since_ms)| Lease {
        name: name.to_string(),
        holder,
        address,
        token,
        expires_in_ms: expires_ms.saturating_sub(now_ms),
        since_ms,
    }))
}

/// Refuses a controller's write unless its fence still holds the controller lease: a replica that
/// was deposed while it slept (a pause, a partition) must not act on what it believed before.
async fn check_fence(conn: &mut impl Session, fence: &Fence) -> Result<(), StoreError> {
    let held = fence.token();
    let current: Option<(String, i64)> = Query::new("SELECT holder, token FROM leases WHERE name = $1")
        .bind(CONTROLLER_LEASE)
        .fetch_optional(&mut *conn)
        .await?;
    match current {
        Some((_, token)) if held != 0 && token == held => Ok(()),
        current => Err(StoreError::Fenced { held, current }),
    }
}

/// Writes an audit row as it is (a copy between stores): its hash is checked after, never recomputed.
/// Every row of a table a copy moves.
async fn read_table<T: Row>(conn: &mut impl Session, table: &crate::copy::Table) -> Result<Vec<T>, StoreError> {
    Query::new(&table.select()).fetch_all(conn).await
}

/// Writes rows read by [`read_table`] back, as they were.
async fn write_table<T: Values>(
    conn: &mut impl Session,
    table: &crate::copy::Table,
    rows: &[T],
) -> Result<(), StoreError> {
    let insert = table.insert();
    for row in rows {
        row.bind_to(Query::new(&insert)).execute(conn).await?;
    }
    Ok(())
}

async fn insert_audit_row(conn: &mut impl Session, row: &AuditRow) -> Result<(), StoreError> {
    Query::new(
        "INSERT INTO audit (seq, at, actor, action, entity, before, after, reason, prev_hash, hash, env) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(row.seq)
    .bind(&row.at)
    .bind(&row.actor)
    .bind(&row.action)
    .bind(&row.entity)
    .bind(&row.before)
    .bind(&row.after)
    .bind(&row.reason)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .bind(&row.env)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn load_catalog(conn: &mut impl Session) -> Result<Catalog, StoreError> {
    let envs: Vec<(String,)> = Query::new("SELECT name FROM environments ORDER BY name").fetch_all(&mut *conn).await?;
    let flags = Query::new("SELECT env, key, body FROM flags ORDER BY env, key").fetch_all(&mut *conn).await?;
    let segments = Query::new("SELECT name, body FROM segments ORDER BY id").fetch_all(&mut *conn).await?;
    Catalog::from_rows(envs.into_iter().map(|(e,)| e).collect(), flags, segments)
}

async fn read_environments(conn: &mut impl Session) -> Result<Vec<Environment>, StoreError> {
    let rows: Vec<(String, i64, String)> =
        Query::new("SELECT name, revision, created_at FROM environments ORDER BY name").fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(|(name, revision, created_at)| Environment { name, revision, created_at }).collect())
}

/// Writes one change's row; `now` is the flag's `updated_at`.
async fn write_edit(tx: &mut impl Session, edit: &RowEdit, now: &str) -> Result<(), StoreError> {
    let query = match edit {
        RowEdit::PutFlag { env, key, body } => Query::new(
            "INSERT INTO flags (env, key, body, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (env, key) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(env)
        .bind(key)
        .bind(body)
        .bind(now),
        RowEdit::DeleteFlag { key } => Query::new("DELETE FROM flags WHERE key = $1").bind(key),
        RowEdit::PutSegment { id, name, body } => Query::new(
            "INSERT INTO segments (id, name, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .bind(id)
        .bind(name)
        .bind(body),
        RowEdit::DeleteSegment { name } => Query::new("DELETE FROM segments WHERE name = $1").bind(name),
    };
    query.execute(&mut *tx).await?;
    Ok(())
}

async fn token_name_taken(tx: &mut impl Session, name: &str) -> Result<bool, StoreError> {
    let taken: Option<String> =
        Query::new("SELECT id FROM tokens WHERE name = $1").bind(name).scalar_optional(&mut *tx).await?;
    Ok(taken.is_some())
}

/// Gives token `id` the secret `new`; its secret `old` keeps working until `until`, and is known as
/// retired ever after.
async fn replace_secret(
    tx: &mut impl Session,
    id: &str,
    old: &str,
    new: &str,
    until: chrono::DateTime<Utc>,
) -> Result<(), StoreError> {
    Query::new("UPDATE tokens SET secret_sha256 = $1 WHERE id = $2").bind(new).bind(id).execute(&mut *tx).await?;
    Query::new(
        "INSERT INTO retired_secrets (secret_sha256, token_id, until) VALUES ($1, $2, $3) \
         ON CONFLICT (secret_sha256) DO UPDATE SET until = excluded.until",
    )
    .bind(old)
    .bind(id)
    .bind(rfc3339(until))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_token(tx: &mut impl Session, new: &NewToken) -> Result<(), StoreError> {
    let info = &new.info;
    Query::new(
        "INSERT INTO tokens (id, name, role, secret_sha256, created_at, created_by, envs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&info.id)
    .bind(&info.name)
    .bind(info.role.as_str())
    .bind(&new.secret_sha256)
    .bind(&info.created_at)
    .bind(&info.created_by)
    .bind(info.envs.as_ref().map(|envs| to_json(envs).to_string()))
    .execute(&mut *tx)
    .await?;
    append_audit(tx, new.created_event()).await?;
    Ok(())
}

/// Appends `event` to the chain after the current head, inside the caller's write transaction.
async fn append_audit(tx: &mut impl Session, event: NewEvent) -> Result<AuditEvent, StoreError> {
    let head: Option<(i64, String)> =
        Query::new("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let event = event.link(head);
    insert_audit_row(tx, &AuditRow::of(&event)).await?;
    Ok(event)
}

/// Appends a tick's decisions in the transaction that decided them.
async fn insert_decisions(
    tx: &mut impl Session,
    id: &str,
    at_ms: i64,
    decisions: &[NewDecision],
) -> Result<(), StoreError> {
    for d in decisions {
        Query::new("INSERT INTO decisions (rollout_id, at_ms, body, changed) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(at_ms)
            .bind(serde_json::to_string(&d.decided).expect("a decision serializes"))
            .bind(i64::from(d.changed))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Queues notifications in the transaction that raised them; a repeat of one already queued is ignored.
async fn queue_notifications(
    tx: &mut impl Session,
    notifications: &[NewNotification],
    now: chrono::DateTime<Utc>,
) -> Result<(), StoreError> {
    let ms = now.timestamp_millis();
    for n in notifications {
        Query::new(
            "INSERT INTO notifications (id, destination, rollout_id, body, created_ms, next_ms) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (id, destination) DO NOTHING",
        )
        .bind(&n.id)
        .bind(n.destination.to_string())
        .bind(&n.rollout_id)
        .bind(n.body.to_string())
        .bind(ms)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn append_all(tx: &mut impl Session, events: Vec<NewEvent>) -> Result<Vec<AuditEvent>, StoreError> {
    let mut written = Vec::with_capacity(events.len());
    for event in events {
        written.push(append_audit(tx, event).await?);
    }
    Ok(written)
}
