//! The store: changes and their audit events commit together or not at all; the chain catches edits.
//!
//! Every test is written against `dyn Store` and runs once per backend, as `<backend>::<test>` (see
//! `store_tests!` below), so that a new backend is one constructor on `Database` and one name in the list. The
//! few tests that edit rows behind the store's back need a backend's own SQL; they are in `sqlite_only`.
//! PostgreSQL runs in a throwaway cluster per test (`tests/support/postgres.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sluice_flags::unleash::Constraint;
use sluice_flags::{Context, Flag, Override, SegmentDef};
use sluice_store::{
    AuditFilter, Change, Destination, EnvChange, PgStore, SqliteStore, Store, StoreError, Verification,
};

#[path = "../../../tests/support/postgres.rs"]
mod pg_cluster;

type OpenStore = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>> + Send + Sync>;

/// A fresh database of the backend under test.
struct Database {
    /// Connects a new store to the database, as a restarted server does.
    open: OpenStore,
    /// Keeps the database for as long as the test runs (a temporary folder).
    _kept: Box<dyn std::any::Any + Send + Sync>,
}

impl Database {
    async fn open(&self) -> Arc<dyn Store> {
        (self.open)().await
    }

    /// A new SQLite file, in a folder the store has to create.
    fn sqlite() -> Database {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/sluice.db");
        let open: OpenStore = Box::new(move || {
            let path = path.clone();
            Box::pin(async move { Arc::new(SqliteStore::open(path).await.unwrap()) as Arc<dyn Store> })
        });
        Database { open, _kept: Box::new(dir) }
    }

    /// A new database in a new PostgreSQL cluster; `None` when PostgreSQL is not installed (and CI does not
    /// require it).
    fn postgres() -> Option<Database> {
        let pg = pg_cluster::Postgres::start()?;
        let url = pg.create_database("sluice");
        let open: OpenStore = Box::new(move || {
            let url = url.clone();
            Box::pin(async move { Arc::new(PgStore::connect(&url).await.unwrap()) as Arc<dyn Store> })
        });
        Some(Database { open, _kept: Box::new(pg) })
    }
}

/// Instantiates each test (a function taking a `Database`) once per backend, as `<backend>::<test>`, with the
/// runtime attribute given before its name.
macro_rules! store_tests {
    (backends: [$($backend:ident),+ $(,)?]; tests: $tests:tt) => {
        $( store_tests!(@backend $backend $tests); )+
    };
    (@backend $backend:ident { $( #[$runtime:meta] $test:ident ),+ $(,)? }) => {
        mod $backend {
            $( #[$runtime] async fn $test() {
                if let Some(db) = super::Backend::present(super::Database::$backend()) { super::$test(db).await }
            } )+
        }
    };
}

/// A backend's database, or none when its server is not installed here (`postgres` says so; CI fails then).
trait Backend {
    fn present(self) -> Option<Database>;
}

impl Backend for Database {
    fn present(self) -> Option<Database> {
        Some(self)
    }
}

impl Backend for Option<Database> {
    fn present(self) -> Option<Database> {
        self
    }
}

store_tests! {
    backends: [sqlite, postgres];
    tests: {
        #[tokio::test] changes_are_audited_with_before_and_after,
        #[tokio::test] an_invalid_change_writes_nothing,
        #[tokio::test] a_segment_in_use_cannot_be_deleted,
        #[tokio::test] the_state_survives_a_restart,
        #[tokio::test] notifications_are_queued_with_their_transition_until_delivered,
        #[tokio::test] what_an_active_rollout_needs_cannot_be_deleted,
        #[tokio::test] tokens_authenticate_until_revoked_and_are_audited,
        #[tokio::test] rotating_a_token_retires_its_old_secret,
        #[tokio::test] a_batch_is_all_or_nothing,
        #[tokio::test] client_metrics_add_up_and_are_kept,
        #[tokio::test] a_flag_has_at_most_one_active_rollout,
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)] concurrent_writes_of_every_kind_all_commit,
        #[tokio::test] a_lease_has_one_holder_and_a_new_holder_fences_the_old,
        #[tokio::test] a_write_planned_from_an_old_revision_is_refused,
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)] writers_on_separate_connections_share_one_chain,
        #[tokio::test] a_copy_keeps_every_row_and_the_chain,
    }
}

/// One holder at a time: a second bidder waits for expiry, takes over with a larger token, and the first
/// holder's fenced writes are refused from then on; each new holder is audited.
async fn a_lease_has_one_holder_and_a_new_holder_fences_the_old(db: Database) {
    use sluice_store::{Fence, LeaseBid, CONTROLLER_LEASE};
    use std::time::Duration;
    let store = db.open().await;
    let bid = |holder: &'static str, held: i64, ttl_ms: u64| LeaseBid {
        name: CONTROLLER_LEASE,
        holder,
        address: "http://127.0.0.1:1",
        held,
        ttl: Duration::from_millis(ttl_ms),
        takeover: false,
        fresh: held == 0,
    };
    // Long enough for what follows on a loaded machine; a's last renewal below makes it short.
    let a = store.take_lease(&bid("a", 0, 5_000)).await.unwrap();
    assert!(a.held());
    let a = a.into_lease();
    assert_eq!((a.holder.as_str(), a.token), ("a", 1));
    let fence_a = Fence::default();
    fence_a.set(a.token);
    let as_a = store.fenced(fence_a.clone());
    as_a.record_event("rollout:p", "rollout.note", "rollout:r1", serde_json::json!({}), None).await.unwrap();

    // b cannot take a live lease; a renews it with its token.
    let seen_by_b = store.take_lease(&bid("b", 0, 5_000)).await.unwrap();
    assert!(!seen_by_b.held());
    assert_eq!((seen_by_b.lease().holder.as_str(), seen_by_b.lease().token), ("a", 1));
    // A bid under a's name that is not a's term (a gave it up, or another process has a's name) neither
    // renews it nor is told it holds it.
    let given_up = LeaseBid { fresh: false, ..bid("a", 0, 5_000) };
    let not_renewed = store.take_lease(&given_up).await.unwrap();
    assert!(!not_renewed.held());
    assert_eq!((not_renewed.lease().holder.as_str(), not_renewed.lease().token), ("a", 1));
    let renewed = store.take_lease(&bid("a", 1, 300)).await.unwrap();
    assert!(renewed.held());
    assert_eq!(renewed.lease().token, 1);

    // a stops renewing; once it expired, b takes it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let b = store.take_lease(&bid("b", 0, 10_000)).await.unwrap();
    assert!(b.held());
    let b = b.into_lease();
    assert_eq!((b.holder.as_str(), b.token), ("b", 2));
    match as_a.record_event("rollout:p", "rollout.note", "rollout:r1", serde_json::json!({}), None).await {
        Err(StoreError::Fenced { held: 1, current: Some((holder, 2)) }) => assert_eq!(holder, "b"),
        other => panic!("a deposed holder's write must be fenced: {other:?}"),
    }
    // a comes back: the lease is b's.
    let back = store.take_lease(&bid("a", 1, 400)).await.unwrap();
    assert!(!back.held());
    assert_eq!(back.lease().holder, "b");
    let fence_b = Fence::default();
    fence_b.set(b.token);
    store
        .fenced(fence_b)
        .record_event("rollout:p", "rollout.note", "rollout:r1", serde_json::json!({}), None)
        .await
        .unwrap();

    // b lets go on its way out: a takes it at once.
    assert!(store.release_lease(CONTROLLER_LEASE, "b", 2).await.unwrap());
    let again = store.take_lease(&bid("a", 0, 400)).await.unwrap();
    assert!(again.held());
    assert_eq!(again.lease().token, 3);

    let leads: Vec<_> = store
        .audit(&AuditFilter { action_prefix: Some("lease.".into()), limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| (e.actor, e.after.unwrap()["token"].as_i64().unwrap()))
        .collect();
    assert_eq!(leads, [("replica:a".to_string(), 1), ("replica:b".to_string(), 2), ("replica:a".to_string(), 3)]);
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { .. }));
}

/// A write planned from the catalog at one revision is refused once another writer moved it on: a replica's
/// copy of the catalog may be a few milliseconds old, and must not overwrite what it has not seen.
async fn a_write_planned_from_an_old_revision_is_refused(db: Database) {
    let store = db.open().await;
    let first = store.apply("alice", Change::PutFlag(Flag::boolean("f")), None).await.unwrap();
    let mut g = Flag::boolean("g");
    g.ramp.percent = 5;
    store.apply("bob", Change::PutFlag(g), None).await.unwrap();
    let mut f = Flag::boolean("f");
    f.ramp.percent = 50;
    match store.apply_all_at("alice", vec![Change::PutFlag(f.clone())], None, Some(first.revision)).await {
        Err(StoreError::Stale { expected, revision }) => {
            assert_eq!((expected, revision), (first.revision, first.revision + 1))
        }
        other => panic!("{other:?}"),
    }
    let now = store.revision().await.unwrap();
    store.apply_all_at("alice", vec![Change::PutFlag(f)], None, Some(now)).await.unwrap();
    assert_eq!(audit_len(&*store).await, 3);
}

/// Writers on their own connections (as replicas are) append to one chain, each event after the one
/// committed before it.
async fn writers_on_separate_connections_share_one_chain(db: Database) {
    let stores = [db.open().await, db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                let mut f = Flag::boolean(&format!("r{i}"));
                f.ramp.percent = n;
                store.apply(&format!("replica{i}"), Change::PutFlag(f), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(matches!(stores[0].verify(None).await.unwrap(), Verification::Intact { events: 60, .. }));
    assert_eq!(stores[2].revision().await.unwrap(), 60);
}

/// `copy` moves every row into an empty store and checks the chain there; a second copy into the same
/// store is refused and writes nothing.
async fn a_copy_keeps_every_row_and_the_chain(db: Database) {
    let dir = tempfile::tempdir().unwrap();
    let from = SqliteStore::open(dir.path().join("from.db")).await.unwrap();
    from.apply("alice", Change::PutSegment(qa()), None).await.unwrap();
    from.apply("alice", Change::PutFlag(Flag::boolean("f")), Some("why".into())).await.unwrap();
    let (_, text) = from.create_token("alice", "deployer", sluice_store::Role::Operator).await.unwrap();
    // Rotated with an overlap: the copy keeps both secrets, each until it ends.
    let (_, rotated, _) = from.rotate_token("alice", "deployer", std::time::Duration::from_secs(3600)).await.unwrap();
    from.record_client_metrics("production", &[("f".into(), "(enabled)".into(), 7)]).await.unwrap();
    let key = from.server_key("dashboard-session").await.unwrap();
    let to = db.open().await;
    let copied = sluice_store::copy(&from, &*to).await.unwrap();
    assert_eq!((copied.flags, copied.segments, copied.tokens, copied.audit_events), (1, 1, 1, 4));
    assert_eq!(copied.head, from.head().await.unwrap());
    assert_eq!(to.head().await.unwrap(), copied.head);
    assert_eq!(to.revision().await.unwrap(), from.revision().await.unwrap());
    assert_eq!(to.authenticate(&text).await.unwrap().map(|p| p.name), Some("deployer".to_string()));
    assert_eq!(to.authenticate(&rotated).await.unwrap().map(|p| p.name), Some("deployer".to_string()));
    assert_eq!(to.client_metrics("production").await.unwrap(), [("f".to_string(), "(enabled)".to_string(), 7)]);
    assert_eq!(to.server_key("dashboard-session").await.unwrap(), key);
    let (snapshot, _) = to.snapshot().await.unwrap();
    assert!(snapshot.contains("f"));
    // The chain goes on from the copied head.
    to.apply("bob", Change::DeleteFlag("f".into()), None).await.unwrap();
    assert!(matches!(to.verify(Some(&copied.head)).await.unwrap(), Verification::Intact { events: 5, .. }));
    match sluice_store::copy(&from, &*to).await {
        Err(StoreError::Conflict { message }) => assert!(message.contains("not empty"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(audit_len(&*to).await, 5);
}

fn qa() -> SegmentDef {
    SegmentDef {
        id: 0,
        name: "internal_qa".into(),
        description: String::new(),
        constraints: vec![Constraint {
            context_name: "email".into(),
            operator: "STR_ENDS_WITH".into(),
            values: Some(vec!["@example.com".into()]),
            ..Default::default()
        }],
    }
}

async fn audit_len(store: &dyn Store) -> usize {
    store.audit(&AuditFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
}

async fn changes_are_audited_with_before_and_after(db: Database) {
    let store = db.open().await;
    let mut flag = Flag::boolean("awf_bundle");
    let created = store.apply("alice", Change::PutFlag(flag.clone()), None).await.unwrap().event;
    assert_eq!((created.seq, created.action.as_str(), created.entity.as_str()), (1, "flag.create", "flag:awf_bundle"));
    assert!(created.before.is_none());

    flag.ramp.percent = 25;
    let applied = store.apply("bob", Change::PutFlag(flag), Some("phase 2".into())).await.unwrap();
    assert_eq!(applied.revision, 2);
    let (updated, snap) = (applied.event, applied.snapshot);
    assert_eq!(updated.action, "flag.update");
    assert_eq!(updated.before.as_ref().unwrap()["ramp"]["percent"], 0);
    assert_eq!(updated.after.as_ref().unwrap()["ramp"]["percent"], 25);
    assert_eq!(updated.reason.as_deref(), Some("phase 2"));
    assert_eq!(updated.prev_hash, created.hash);
    assert!(snap.resolve("awf_bundle", &Context::new().user_id("u")).is_some());

    let bobs = store.audit(&AuditFilter { actor: Some("bob".into()), ..Default::default() }).await.unwrap();
    assert_eq!(bobs, vec![updated.clone()]);
    let flags = store.audit(&AuditFilter { action_prefix: Some("flag.".into()), ..Default::default() }).await.unwrap();
    assert_eq!(flags.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(store.snapshot().await.unwrap().1, 2, "revision counts committed changes");
    assert_eq!(store.head().await.unwrap(), updated.hash);
}

async fn an_invalid_change_writes_nothing(db: Database) {
    let store = db.open().await;
    store.apply("alice", Change::PutFlag(Flag::boolean("f")), None).await.unwrap();
    let mut bad = Flag::boolean("f");
    bad.ramp.percent = 101;
    let err = store.apply("alice", Change::PutFlag(bad), None).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(e) if e.field == "ramp.percent"), "{err}");

    let mut unknown_segment = Flag::boolean("g");
    unknown_segment.ramp.segments = vec!["beta_testers".into()];
    let err = store.apply("alice", Change::PutFlag(unknown_segment), None).await.unwrap_err();
    assert!(err.to_string().contains("unknown segment `beta_testers`"), "{err}");

    assert_eq!(audit_len(&*store).await, 1);
    let (snap, revision) = store.snapshot().await.unwrap();
    assert_eq!((snap.keys().collect::<Vec<_>>(), revision), (vec!["f"], 1));
    assert_eq!(snap.flags()[0].ramp.percent, 0);
}

async fn a_segment_in_use_cannot_be_deleted(db: Database) {
    let store = db.open().await;
    store.apply("alice", Change::PutSegment(qa()), None).await.unwrap();
    let mut flag = Flag::boolean("bounded_reasoning");
    flag.ramp.segments = vec!["internal_qa".into()];
    flag.ramp.percent = 100;
    flag.overrides.push(Override::disable("userId", "vip"));
    let snap = store.apply("alice", Change::PutFlag(flag), None).await.unwrap().snapshot;
    assert!(snap.is_enabled("bounded_reasoning", &Context::new().user_id("a").property("email", "a@example.com")));

    let err = store.apply("alice", Change::DeleteSegment("internal_qa".into()), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("bounded_reasoning"));
    let err = store.apply("alice", Change::DeleteFlag("nope".into()), None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert_eq!(audit_len(&*store).await, 2);

    store.apply("alice", Change::DeleteFlag("bounded_reasoning".into()), None).await.unwrap();
    store.apply("alice", Change::DeleteSegment("internal_qa".into()), None).await.unwrap();
    assert_eq!(audit_len(&*store).await, 4);
}

async fn the_state_survives_a_restart(db: Database) {
    {
        let store = db.open().await;
        store.apply("alice", Change::PutSegment(qa()), None).await.unwrap();
        let mut flag = Flag::modes("stage_validation", &["off", "warn", "enforce"]);
        flag.ramp.percent = 10;
        store.apply("alice", Change::PutFlag(flag), None).await.unwrap();
    }
    let store = db.open().await;
    let (snap, revision) = store.snapshot().await.unwrap();
    assert_eq!(revision, 2);
    assert_eq!(snap.segments()[0].id, 1);
    assert_eq!(snap.flags()[0].ramp.percent, 10);
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { events: 2, .. }));
}

async fn tokens_authenticate_until_revoked_and_are_audited(db: Database) {
    use sluice_store::Role;
    let store = db.open().await;
    let (info, secret) = store.create_token("bootstrap", "ci-deployer", Role::Operator).await.unwrap();
    assert!(secret.starts_with(&format!("slc_{}_", info.id)));
    let who = store.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!((who.name.as_str(), who.role), ("ci-deployer", Role::Operator));

    // A wrong secret for the right id, garbage, and a near miss are all refused.
    let mut wrong = secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for bad in [wrong.as_str(), "slc_nope", "", &secret[..secret.len() - 1]] {
        assert_eq!(store.authenticate(bad).await.unwrap(), None, "{bad}");
    }
    // A token of any form can be added from the environment, once.
    let env_token = "an-operator-chosen-admin-token-0123456789";
    let added = store.bootstrap_token("bootstrap", "admin", Role::Admin, env_token).await.unwrap();
    assert_eq!(added, sluice_store::Bootstrap::Added { name: "admin".into() });
    let kept = store.bootstrap_token("bootstrap", "admin", Role::Admin, env_token).await.unwrap();
    assert_eq!(kept, sluice_store::Bootstrap::Kept);
    assert_eq!(store.authenticate(env_token).await.unwrap().unwrap().role, Role::Admin);
    assert!(store.bootstrap_token("bootstrap", "admin", Role::Admin, "short").await.is_err());

    let dup = store.create_token("bootstrap", "ci-deployer", Role::Viewer).await.unwrap_err();
    assert!(dup.to_string().contains("exists"), "{dup}");

    store.revoke_token("alice", "ci-deployer").await.unwrap();
    assert_eq!(store.authenticate(&secret).await.unwrap(), None);
    let tokens = store.tokens().await.unwrap();
    assert!(tokens.iter().find(|t| t.name == "ci-deployer").unwrap().revoked_at.is_some());
    assert_eq!(store.token_table().await.unwrap().len(), 1, "only the admin token is active");
    let actions: Vec<String> =
        store.audit(&AuditFilter::default()).await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, vec!["token.revoke", "token.create", "token.create"]);
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { events: 3, .. }));
}

/// A changed `SLUICE_ADMIN_TOKEN` revokes the secret it replaces (audited), and a replica started with a
/// revoked or rotated-away one is refused; a rotation keeps the old secret working through its overlap
/// only, and a revocation ends the overlap too.
async fn rotating_a_token_retires_its_old_secret(db: Database) {
    use sluice_store::{Bootstrap, Role};
    let store = db.open().await;
    let first = "the-first-admin-token-0123456789abcdef";
    let second = "the-second-admin-token-0123456789abcdef";
    store.bootstrap_token("serve", "sluice-serve", Role::Admin, first).await.unwrap();
    let replaced = store.bootstrap_token("serve", "sluice-serve", Role::Admin, second).await.unwrap();
    assert_eq!(replaced, Bootstrap::Replaced { name: "sluice-serve".into() });
    assert_eq!(store.authenticate(first).await.unwrap(), None, "the replaced secret is revoked");
    assert_eq!(store.authenticate(second).await.unwrap().unwrap().name, "sluice-serve");
    let refused = store.bootstrap_token("serve", "sluice-serve", Role::Admin, first).await.unwrap_err();
    assert!(refused.to_string().contains("revoked or rotated away"), "{refused}");
    assert_eq!(store.authenticate(second).await.unwrap().unwrap().name, "sluice-serve", "the refusal changed nothing");
    let event = &store.audit(&AuditFilter::default()).await.unwrap()[0];
    assert_eq!(
        (event.action.as_str(), event.reason.as_deref()),
        ("token.rotate", Some("SLUICE_ADMIN_TOKEN changed: the token it replaces is revoked"))
    );

    // Rotation with an overlap: both work until it ends; the old one is refused after.
    let (_, old) = store.create_token("alice", "deployer", Role::Operator).await.unwrap();
    let (_, new, event) = store.rotate_token("alice", "deployer", std::time::Duration::from_millis(300)).await.unwrap();
    assert_eq!(event.action, "token.rotate");
    let table = store.token_table().await.unwrap();
    assert_eq!(table.authenticate(&old).unwrap().name, "deployer");
    assert_eq!(table.authenticate(&new).unwrap().name, "deployer");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(table.authenticate(&old).is_none(), "the overlap ends on time, without a reload");
    assert!(table.authenticate(&new).is_some());
    assert_eq!(store.authenticate(&old).await.unwrap(), None);

    // A revocation ends an overlap at once.
    let (_, newest, _) = store.rotate_token("alice", "deployer", std::time::Duration::from_secs(3600)).await.unwrap();
    assert!(store.authenticate(&new).await.unwrap().is_some(), "in its overlap");
    store.revoke_token("alice", "deployer").await.unwrap();
    assert_eq!(store.authenticate(&new).await.unwrap(), None);
    assert_eq!(store.authenticate(&newest).await.unwrap(), None);
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { .. }));
}

async fn a_batch_is_all_or_nothing(db: Database) {
    let store = db.open().await;
    let mut uses_qa = Flag::boolean("bounded_reasoning");
    uses_qa.ramp.segments = vec!["internal_qa".into()];
    let mut bad = Flag::boolean("broken");
    bad.ramp.ramped = "missing".into();

    // The segment and a flag using it land together...
    let batch = store
        .apply_all("importer", vec![Change::PutSegment(qa()), Change::PutFlag(uses_qa.clone())], Some("import".into()))
        .await
        .unwrap();
    assert_eq!(batch.events.len(), 2);
    assert_eq!(batch.revision, 1, "one batch, one revision");

    // ...and one bad flag rejects the whole batch.
    let err = store
        .apply_all("importer", vec![Change::PutFlag(Flag::boolean("fine")), Change::PutFlag(bad)], None)
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(e) if e.flag == "broken" && e.field == "ramp.ramped"), "{err}");
    let (snap, revision) = store.snapshot().await.unwrap();
    assert_eq!((snap.len(), revision), (1, 1));
    assert_eq!(audit_len(&*store).await, 2);
}

async fn client_metrics_add_up_and_are_kept(db: Database) {
    {
        let store = db.open().await;
        let report = vec![("f".to_string(), "on".to_string(), 7), ("f".to_string(), "off".to_string(), 3)];
        store.record_client_metrics("production", &report).await.unwrap();
        store.record_client_metrics("production", &report[..1]).await.unwrap();
    }
    let store = db.open().await;
    assert_eq!(
        store.client_metrics("production").await.unwrap(),
        vec![("f".to_string(), "off".to_string(), 3), ("f".to_string(), "on".to_string(), 14)]
    );
}

async fn a_flag_has_at_most_one_active_rollout(db: Database) {
    use serde_json::json;
    use sluice_store::{RolloutRecord, RolloutSave};
    let store = db.open().await;
    store.apply("alice", Change::PutFlag(Flag::boolean("awf_bundle")), None).await.unwrap();
    let (plan, running) = started("awf-week-1");
    let record = |id: &str, plan: &str| RolloutRecord {
        env: "production".into(),
        id: id.into(),
        flag: "awf_bundle".into(),
        plan_name: plan.into(),
        plan_text: "name: x".into(),
        original_flag: Flag::boolean("awf_bundle"),
        state: running.clone(),
        active: true,
        outbox: Vec::new(),
        created_by: "alice".into(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    store.create_rollout(&record("r1", "awf-week-1"), &[], &[]).await.unwrap();
    let err = store.create_rollout(&record("r2", "awf-other"), &[], &[]).await.unwrap_err();
    assert!(err.to_string().contains("`awf-week-1` (r1)"), "{err}");

    let mut rolled_back = running.clone();
    rolled_back.rollback(&plan, 1, "errors").unwrap();
    let events = [("rollout.rolled_back".to_string(), json!({"phase": 1}), Some("errors".to_string()))];
    let saved = store
        .save_rollout(&RolloutSave {
            actor: "sluice",
            id: "r1",
            state: &rolled_back,
            outbox: &[],
            events: &events,
            notifications: &[],
            decisions: None,
        })
        .await
        .unwrap();
    assert_eq!(saved[0].action, "rollout.rolled_back");
    store.create_rollout(&record("r2", "awf-again"), &[], &[]).await.unwrap();
    assert_eq!(store.rollouts(true).await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["r2"]);
    assert_eq!(store.rollout("r1").await.unwrap().unwrap().state, rolled_back);

    store.record_decisions("r2", 1000, &[decided("a", 1.0), decided("b", 2.0)]).await.unwrap();
    store.record_decisions("r2", 2000, &[decided("c", 3.0)]).await.unwrap();
    let last_two = store.decisions("r2", 2).await.unwrap();
    assert_eq!(last_two, vec![decided("b", 2.0), decided("c", 3.0)]);
    // The flag's creation, two rollout creations, the rollback.
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { events: 4, .. }));
}

/// Everything that writes — flag changes, audit events, rollout decisions, SDK metrics — at once from many
/// tasks, as a busy server does: every write succeeds (none is refused as `database is locked`) and the
/// chain stays whole.
async fn concurrent_writes_of_every_kind_all_commit(db: Database) {
    use serde_json::json;
    let store = db.open().await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u8 {
                let mut f = Flag::boolean(&format!("f{t}"));
                f.ramp.percent = i;
                store.apply("alice", Change::PutFlag(f), None).await?;
                store
                    .record_event("runner", "rollout.decision", &format!("rollout:r{t}"), json!({"i": i}), None)
                    .await?;
                store.record_decisions(&format!("r{t}"), i64::from(i), &[decided("g", f64::from(i))]).await?;
                store.record_client_metrics("production", &[(format!("f{t}"), "on".into(), 1)]).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { events: 640, .. }));
    let metrics = store.client_metrics("production").await.unwrap();
    assert_eq!(metrics.iter().map(|(_, _, n)| n).sum::<u64>(), 320);
}

/// Tests that edit or read rows behind the store's back, which takes a backend's own SQL.
mod sqlite_only {
    /// Every commit is synced (`synchronous=FULL`): a transition written before its effects run must
    /// survive a power cut, not only a crash of the process.
    #[tokio::test]
    async fn every_pooled_connection_commits_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(dir.path().join("s.db")).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        for _ in 0..4 {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await.unwrap();
            assert_eq!(level, 2, "synchronous=FULL");
        }
    }

    use super::*;

    async fn sqlite_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("data/sluice.db")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn verify_names_the_first_edited_record_and_the_anchor_catches_a_rewritten_tail() {
        let (_dir, store) = sqlite_store().await;
        for i in 0..5 {
            let mut f = Flag::boolean("f");
            f.ramp.percent = i * 10;
            store.apply("alice", Change::PutFlag(f), None).await.unwrap();
        }
        let anchored = store.head().await.unwrap();
        assert_eq!(
            store.verify(Some(&anchored)).await.unwrap(),
            Verification::Intact { events: 5, head: anchored.clone() }
        );

        // Someone edits record 3 in the file.
        sqlx::query("UPDATE audit SET actor = 'mallory' WHERE seq = 3").execute(store.pool()).await.unwrap();
        match store.verify(None).await.unwrap() {
            Verification::Broken { seq, problem } => {
                assert_eq!((seq, problem.contains("hash")), (3, true))
            }
            other => panic!("{other:?}"),
        }

        // They recompute every hash from record 3 on: the chain is consistent again...
        let mut events = store.audit(&AuditFilter { limit: 100, ..Default::default() }).await.unwrap();
        events.reverse();
        for i in 2..events.len() {
            events[i].prev_hash = events[i - 1].hash.clone();
            events[i].hash = events[i].computed_hash();
            sqlx::query("UPDATE audit SET prev_hash = $1, hash = $2 WHERE seq = $3")
                .bind(&events[i].prev_hash)
                .bind(&events[i].hash)
                .bind(events[i].seq)
                .execute(store.pool())
                .await
                .unwrap();
        }
        assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { .. }));
        // ...but not with the head anchored before the edit.
        assert!(matches!(store.verify(Some(&anchored)).await.unwrap(), Verification::HeadMissing { .. }));
    }

    #[tokio::test]
    async fn a_token_secret_is_not_stored() {
        let (_dir, store) = sqlite_store().await;
        let (_, secret) = store.create_token("bootstrap", "ci-deployer", sluice_store::Role::Operator).await.unwrap();
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT secret_sha256 FROM tokens").fetch_all(store.pool()).await.unwrap();
        assert!(!stored.iter().any(|s| secret.contains(s.as_str()) || s.contains(&secret[20..])));
    }
}

/// A plan of one flag and a rollout of it, started.
fn started(name: &str) -> (sluice_plan::Plan, sluice_engine::Rollout) {
    let yaml = format!("name: {name}\nflag: awf_bundle\nphases: [{{percent: 10}}, {{percent: 100}}]\n");
    let (plan, _) = sluice_plan::load("p.yaml", &yaml, None).unwrap();
    let mut rollout = sluice_engine::Rollout::new(&plan);
    rollout.start(&plan, 0);
    (plan, rollout)
}

/// Notifications are queued with the transition that raised them, due at once, kept (with their error)
/// until delivered, retried after the backoff given, and never queued twice for one destination.
async fn notifications_are_queued_with_their_transition_until_delivered(db: Database) {
    use serde_json::json;
    use sluice_store::{NewNotification, RolloutRecord, RolloutSave};
    let store = db.open().await;
    store.apply("alice", Change::PutFlag(Flag::boolean("awf_bundle")), None).await.unwrap();
    let (_, running) = started("p");
    let queued = |id: &str, destination: &str| NewNotification {
        id: id.into(),
        destination: destination.parse().unwrap(),
        rollout_id: "r1".into(),
        body: json!({"event": id}),
    };
    let record = RolloutRecord {
        env: "production".into(),
        id: "r1".into(),
        flag: "awf_bundle".into(),
        plan_name: "p".into(),
        plan_text: "name: p".into(),
        original_flag: Flag::boolean("awf_bundle"),
        state: running.clone(),
        active: true,
        outbox: Vec::new(),
        created_by: "alice".into(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    store.create_rollout(&record, &[], &[queued("e1", "log"), queued("e1", "notify[0]")]).await.unwrap();
    let save = |notifications: &[NewNotification]| {
        let notifications = notifications.to_vec();
        let store = store.clone();
        let state = running.clone();
        async move {
            store
                .save_rollout(&RolloutSave {
                    actor: "sluice",
                    id: "r1",
                    state: &state,
                    outbox: &[],
                    events: &[],
                    notifications: &notifications,
                    decisions: None,
                })
                .await
                .unwrap()
        }
    };
    // The same event again (a transition retried after a crash) is not queued twice.
    save(&[queued("e1", "log"), queued("e2", "log")]).await;
    let due = |store: Arc<dyn Store>| async move {
        let mut due: Vec<(String, String, u32)> = store
            .due_notifications(100)
            .await
            .unwrap()
            .into_iter()
            .map(|n| (n.id, n.destination.to_string(), n.attempts))
            .collect();
        due.sort();
        due
    };
    assert_eq!(
        due(store.clone()).await,
        [("e1".into(), "log".into(), 0), ("e1".into(), "notify[0]".into(), 0), ("e2".into(), "log".into(), 0)]
    );
    store.notification_delivered("e1", &Destination::Log).await.unwrap();
    store
        .notification_failed("e1", &Destination::Notifier(0), "slack: 503", std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    store.notification_failed("e2", &Destination::Log, "disk full", std::time::Duration::ZERO).await.unwrap();
    assert_eq!(due(store.clone()).await, [("e2".into(), "log".into(), 1)]);
    let again = store.due_notifications(100).await.unwrap();
    assert_eq!(again[0].last_error.as_deref(), Some("disk full"));
    // Kept across a restart.
    let reopened = db.open().await;
    assert_eq!(due(reopened).await, [("e2".into(), "log".into(), 1)]);

    // Given up: no longer due, audited once in the same transaction, listed, and sent again only when a
    // person says so (audited too).
    let head = store.chain(0, 1000).await.unwrap().len();
    let event =
        store.notification_dead("e1", &Destination::Notifier(0), "404 Not Found", json!({"attempt": 2})).await.unwrap();
    assert_eq!((event.action.as_str(), event.entity.as_str()), ("rollout.notification_dead", "rollout:r1"));
    assert!(store.notification_dead("e1", &Destination::Notifier(0), "again", json!({})).await.is_err(), "dead once");
    assert_eq!(due(store.clone()).await, [("e2".into(), "log".into(), 1)]);
    let dead = store.dead_notifications(Some("r1")).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].destination, dead[0].attempts), (Destination::Notifier(0), 2));
    assert_eq!(dead[0].last_error.as_deref(), Some("404 Not Found"));
    assert!(dead[0].dead_ms.is_some());
    assert!(store.dead_notifications(Some("r9")).await.unwrap().is_empty());
    let (n, event) = store.redeliver("alice", "r1", Some("hook fixed".into())).await.unwrap();
    assert_eq!((n, event.unwrap().action.as_str()), (1, "rollout.notification_redeliver"));
    assert!(store.dead_notifications(None).await.unwrap().is_empty());
    let mut again = due(store.clone()).await;
    again.sort();
    assert_eq!(again, [("e1".into(), "notify[0]".into(), 0), ("e2".into(), "log".into(), 1)]);
    assert_eq!(store.redeliver("alice", "r1", None).await.unwrap().0, 0, "nothing left to send again");
    assert_eq!(store.chain(0, 1000).await.unwrap().len(), head + 2);
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { .. }));
}

/// A decision as kept: `check` with `value`, a plain threshold.
fn decided(check: &str, value: f64) -> sluice_store::Decided {
    sluice_store::Decided {
        decision: sluice_engine::CheckDecision {
            at: 1,
            check: check.into(),
            kind: sluice_engine::CheckKind::Gate,
            value: Some(value),
            threshold: sluice_engine::Threshold::Below { limit: 10.0 },
            outcome: sluice_engine::Outcome::Holds,
            note: None,
            run: 1,
            needed: 1,
            dry_run: false,
            interval: None,
        },
        action: "none".into(),
    }
}

/// A segment that the current or a later phase of an active rollout names, or the flag a rollout ramps,
/// cannot be deleted: refused in the delete's own transaction, naming the rollout. A rollout of a flag
/// deleted since its plan was checked does not start.
async fn what_an_active_rollout_needs_cannot_be_deleted(db: Database) {
    use sluice_store::RolloutRecord;
    let store = db.open().await;
    store.apply("alice", Change::PutSegment(qa()), None).await.unwrap();
    store.apply("alice", Change::PutFlag(Flag::boolean("awf_bundle")), None).await.unwrap();
    store.apply("alice", Change::PutFlag(Flag::boolean("other")), None).await.unwrap();
    let text =
        "name: staged\nflag: awf_bundle\nphases:\n  - { percent: 10 }\n  - { percent: 50, segments: [internal_qa] }\n";
    let (plan, _) = sluice_plan::load("p.yaml", text, None).unwrap();
    let mut state = sluice_engine::Rollout::new(&plan);
    state.start(&plan, 0);
    let record = |id: &str, flag: &str| RolloutRecord {
        env: "production".into(),
        id: id.into(),
        flag: flag.into(),
        plan_name: "staged".into(),
        plan_text: text.into(),
        original_flag: Flag::boolean(flag),
        state: state.clone(),
        active: true,
        outbox: Vec::new(),
        created_by: "alice".into(),
        created_at: String::new(),
        updated_at: String::new(),
    };
    store.create_rollout(&record("r1", "awf_bundle"), &[], &[]).await.unwrap();
    let refused = store.apply("bob", Change::DeleteSegment("internal_qa".into()), None).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict { message } if message.contains("staged") && message.contains("r1") && message.contains("phase 2")),
        "{refused}"
    );
    let refused = store.apply("bob", Change::DeleteFlag("awf_bundle".into()), None).await.unwrap_err();
    assert!(matches!(&refused, StoreError::Conflict { message } if message.contains("(r1)")), "{refused}");
    // Nothing was written.
    assert_eq!(store.snapshot().await.unwrap().0.segments().len(), 1);

    store.apply("bob", Change::DeleteFlag("other".into()), None).await.unwrap();
    let gone = store.create_rollout(&record("r2", "other"), &[], &[]).await.unwrap_err();
    assert!(matches!(gone, StoreError::NotFound { .. }), "{gone}");
}

/// A database written by the version before environments (`sluice serve` at a82a4b2: a segment, three
/// flags one of them disabled, an sdk and an operator token, a running rollout, SDK counts; 12 audit
/// events) opens as one environment, `production`, with everything kept, its chain verifying as it did;
/// after the upgrade it takes a second environment, a rename, and new events that name theirs.
#[tokio::test]
async fn a_store_from_before_environments_opens_as_production_with_everything_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/before-environments.db"), &path).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();

    let envs = store.environments().await.unwrap();
    assert_eq!(envs.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["production"]);
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { events: 12, .. }));
    let (snapshot, _) = store.snapshot().await.unwrap();
    let flags: Vec<(&str, bool, u8)> =
        snapshot.flags().iter().map(|f| (f.key.as_str(), f.enabled, f.ramp.percent)).collect();
    assert_eq!(flags, [("auth_mode", true, 10), ("checkout", true, 25), ("legacy", false, 0)]);
    assert_eq!(snapshot.segments()[0].name, "internal");
    let tokens = store.tokens().await.unwrap();
    let envs_of = |name: &str| tokens.iter().find(|t| t.name == name).unwrap().envs.clone();
    assert_eq!(envs_of("shop"), Some(vec!["production".to_string()]), "an sdk token belongs to production");
    assert_eq!(envs_of("ops"), None, "an operator token may act everywhere");
    let sdk = "slc_b98eff932d572f91_efa75be1480af5718e6f2b4533a36eb88cb866c52c226bd48fc9a95543457f49";
    assert_eq!(store.authenticate(sdk).await.unwrap().unwrap().only_env(), Some("production"));
    let rollouts = store.rollouts(true).await.unwrap();
    assert_eq!((rollouts.len(), rollouts[0].env.as_str(), rollouts[0].flag.as_str()), (1, "production", "checkout"));
    let counts = store.client_metrics("production").await.unwrap();
    assert!(counts.contains(&("checkout".to_string(), "(enabled)".to_string(), 5)), "{counts:?}");

    // The upgraded store takes what environments bring, and the chain still verifies from its start.
    store.change_env("admin", EnvChange::Rename { from: "production".into(), to: "prod".into() }, None).await.unwrap();
    store.change_env("admin", EnvChange::Create("staging".into()), None).await.unwrap();
    let catalogs = store.snapshots().await.unwrap();
    let staging = &catalogs.envs.iter().find(|(e, _)| e.name == "staging").unwrap().1;
    assert!(staging.flags().iter().all(|f| !f.enabled && f.ramp.percent == 0), "a new environment starts off");
    assert_eq!(store.rollouts(true).await.unwrap()[0].env, "prod", "the rollout followed the rename");
    assert_eq!(store.authenticate(sdk).await.unwrap().unwrap().only_env(), Some("prod"));
    let applied =
        store.apply_in("admin", Some("staging"), vec![Change::DeleteSegment("nope".into())], None, None).await;
    assert!(matches!(applied, Err(StoreError::NotFound { .. })));
    let mut flag = staging.flags()[0].clone();
    flag.enabled = true;
    let applied = store.apply_in("admin", Some("staging"), vec![Change::PutFlag(flag)], None, None).await.unwrap();
    assert_eq!(applied.events[0].env.as_deref(), Some("staging"));
    assert!(applied.others.is_empty(), "a state change is one environment's");
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { events: 15, .. }));
    let old = store.chain(0, 12).await.unwrap();
    assert!(old.iter().all(|e| e.env.is_none()), "events from before keep no environment");
}
