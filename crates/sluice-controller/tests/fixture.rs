//! A database written by the version before typed rollout records (`tests/fixtures/v0.db`, see `v0.md`)
//! opens under this version, and its rollouts carry on: the running one ticks and promotes, the paused one
//! resumes, an interrupted promotion with a non-idempotent hook asks a person and then finishes, and a
//! rollback whose effects never ran is carried out.

use std::sync::Arc;

use sluice_controller::{Catalog, CommandBody, Controller, RunnerMemory, Seams};
use sluice_engine::{Clock, Status, VirtualClock};
use sluice_store::{Principal, Role, SqliteStore, Store, Verification};

const ACTIVE: &str = "fixture_active-1a2179bdf36";
const PAUSED: &str = "fixture_paused-1a2179bdf3c";
const OUTBOX: &str = "fixture_outbox-1a2179bdf51";
const ROLLED_BACK: &str = "fixture_rolled_back-1a2179bdf6c";
/// A moment after the fixture was written: its holds have not elapsed yet.
const THEN: u64 = 1_795_692_421_000;

fn operator() -> Principal {
    Principal { name: "fixture-operator".into(), role: Role::Operator, envs: None }
}

fn percent(controller: &Controller, flag: &str) -> u8 {
    controller
        .catalog()
        .resolve(None)
        .unwrap()
        .live()
        .load()
        .flags()
        .iter()
        .find(|f| f.key == flag)
        .unwrap()
        .ramp
        .percent
}

#[tokio::test]
async fn a_database_of_the_untyped_version_opens_and_its_rollouts_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v0.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v0.db"), &path).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { .. }));

    // Every record reads, typed.
    let statuses: Vec<(String, &'static str, bool, usize)> = store
        .rollouts(false)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.id.clone(), r.status().name(), r.active, r.outbox.len()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("fixture_active-1a2179bdf21".to_string(), "aborted", false, 0),
            (ACTIVE.into(), "running", true, 0),
            (PAUSED.into(), "paused", true, 0),
            (OUTBOX.into(), "running", true, 3),
            (ROLLED_BACK.into(), "rolled_back", false, 4),
        ]
    );

    let clock = Arc::new(VirtualClock::at(THEN));
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    let seams = Seams { clock: clock.clone() as Arc<dyn Clock>, ..Seams::default() };
    let controller = Controller::new(catalog, seams);
    controller.recover().await.unwrap();

    // The interrupted rollback is carried out: the flag is as before its rollout.
    let rolled_back = store.rollout(ROLLED_BACK).await.unwrap().unwrap();
    assert!(rolled_back.outbox.is_empty());
    assert_eq!(percent(&controller, "fixture_rolled_back"), 0);
    // The promotion whose non-idempotent hook was running waits for a person.
    let outbox = store.rollout(OUTBOX).await.unwrap().unwrap();
    assert_eq!(outbox.status().name(), "paused");
    assert!(outbox.outbox[0].uncertain && !outbox.outbox[1].uncertain);
    assert_eq!(percent(&controller, "fixture_outbox"), 10, "nothing ran on its own");
    let settle = CommandBody { pending: Some("retry".into()), ..Default::default() };
    controller.command_named(OUTBOX, "settle", settle, &operator()).await.unwrap();
    assert_eq!(percent(&controller, "fixture_outbox"), 50);
    let flag = controller
        .catalog()
        .resolve(None)
        .unwrap()
        .live()
        .load()
        .flags()
        .iter()
        .find(|f| f.key == "fixture_outbox")
        .cloned()
        .unwrap();
    assert_eq!(flag.ramp.segments, ["internal_qa"]);
    let resume = CommandBody { reason: Some("the migration ran once".into()), ..Default::default() };
    let summary = controller.command_named(OUTBOX, "resume", resume, &operator()).await.unwrap();
    assert_eq!(summary.status, Status::Running);

    // The paused one resumes, and the running ones tick on: an hour on, each is promoted.
    let resume = CommandBody { reason: Some("looked at the dashboard".into()), ..Default::default() };
    controller.command_named(PAUSED, "resume", resume, &operator()).await.unwrap();
    let memory = RunnerMemory::default();
    for _ in 0..62 {
        clock.advance_ms(60_000);
        controller.run_due(&memory).await.unwrap();
    }
    assert_eq!(percent(&controller, "fixture_active"), 50);
    assert_eq!(percent(&controller, "fixture_paused"), 50);
    assert_eq!(percent(&controller, "fixture_outbox"), 100);
    assert!(matches!(store.verify(None).await.unwrap(), Verification::Intact { .. }));

    // The transitions since were queued for the log notifier, and are delivered once each.
    let queued = store.due_notifications(1000).await.unwrap().len();
    assert!(queued > 0);
    let mut delivered = 0;
    loop {
        let n = controller.deliver_due().await;
        if n == 0 {
            break;
        }
        delivered += n;
    }
    assert_eq!(delivered, queued);
    assert!(store.due_notifications(1000).await.unwrap().is_empty());
}
