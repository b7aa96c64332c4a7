//! What the controller's end-to-end tests start from: a store on disk with flags at 0%, its catalog, and
//! a controller running on the real clock.
#![allow(dead_code)]

use std::sync::Arc;

use sluice_controller::{Catalog, Controller, Seams};
use sluice_flags::Flag;
use sluice_store::{Change, Principal, Role, SqliteStore, Store};

/// A running controller over a fresh store holding boolean flags `keys`, each at 0%.
pub async fn running_with_flags(keys: &[&str]) -> (tempfile::TempDir, Arc<dyn Store>, Arc<Controller>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    for key in keys {
        let mut flag = Flag::boolean(key);
        flag.ramp.percent = 0;
        store.apply("test", Change::PutFlag(flag), None).await.unwrap();
    }
    let catalog = Arc::new(Catalog::load(store.clone(), Box::new(|_, _, _| {})).await.unwrap());
    let controller = Controller::new(catalog, Seams::default());
    tokio::spawn(controller.clone().run());
    (dir, store, controller)
}

/// Who starts the rollouts (plans that run programs need an admin).
pub fn admin() -> Principal {
    Principal { name: "admin".into(), role: Role::Admin, envs: None }
}
