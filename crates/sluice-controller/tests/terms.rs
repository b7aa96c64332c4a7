//! A new term of the controller (a replica that takes the lease again after losing it) pauses the rollouts
//! of flags disabled while it did not lead. The rollout's next tick is an interval away (an hour here):
//! only the new term's sweep can pause it in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_controller::{Catalog, Controller, Seams};
use sluice_engine::Status;
use sluice_flags::Flag;
use sluice_store::{Change, Fence, LeaseBid, Principal, Role, SqliteStore, Store, CONTROLLER_LEASE};

const PLAN: &str = "name: hourly\nflag: f\nanalysis: { interval: 1h }\n\
    gates: [ { name: g, command: [echo, '0'], value_from: last_number, below: 1 } ]\n\
    phases: [ { percent: 10, hold: 1h }, { percent: 100 } ]\n";

/// Polls `done` every 20 ms for at most `within`.
async fn until(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let began = Instant::now();
    while !done().await {
        assert!(began.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_term_pauses_the_rollouts_of_flags_disabled_while_nobody_led() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    let mut flag = Flag::boolean("f");
    flag.ramp.percent = 0;
    store.apply("test", Change::PutFlag(flag), None).await.unwrap();
    let bid = LeaseBid {
        name: CONTROLLER_LEASE,
        holder: "r1",
        address: "http://127.0.0.1:1",
        held: 0,
        ttl: Duration::from_secs(3600),
        takeover: false,
        fresh: true,
    };
    let token = store.take_lease(&bid).await.unwrap().into_lease().token;
    let fence = Fence::default();
    fence.set(token);
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    let controller = Controller::new(catalog.clone(), Seams { fence: Some(fence.clone()), ..Seams::default() });
    let first_term = tokio::spawn(controller.clone().run());
    let admin = Principal { name: "admin".into(), role: Role::Admin, envs: None };
    let id = controller.start(&admin, None, "hourly.yaml", PLAN).await.unwrap().id;
    // Running under the first term: its first tick is an interval (an hour) away.
    assert_eq!(store.rollout(&id).await.unwrap().unwrap().state.status, Status::Running);

    // The term ends (the lease lapsed): its runner stops at its next scan. Only then does a person pull the
    // kill switch, which no leader hears.
    fence.set(0);
    tokio::time::timeout(Duration::from_secs(10), first_term).await.expect("the first term's runner stops").unwrap();
    let mut disabled = catalog.resolve(None).unwrap().live().load().flags()[0].clone();
    disabled.enabled = false;
    catalog
        .write("production", "bob", None, |_| {
            Ok::<_, sluice_store::StoreError>(vec![Change::PutFlag(disabled.clone())])
        })
        .await
        .unwrap();
    assert_eq!(store.rollout(&id).await.unwrap().unwrap().state.status, Status::Running, "nobody leads");

    // The same replica leads again: its next tick of the rollout is an hour away, and the rollout pauses now.
    fence.set(token);
    tokio::spawn(controller.clone().run());
    until("the new term pauses the rollout", Duration::from_secs(10), async || {
        matches!(store.rollout(&id).await.unwrap().unwrap().state.status, Status::Paused { .. })
    })
    .await;
    let Status::Paused { reason, .. } = store.rollout(&id).await.unwrap().unwrap().state.status else { unreachable!() };
    assert!(reason.contains("kill switch"), "{reason}");
}
