//! The controllers' view of the cluster: an in-memory copy of the kinds they read, kept
//! current from the store's watch feed (an informer, in client-go's words).
//!
//! It lists every kind in one read transaction (one revision for all of them), then
//! applies the watch events after that revision. A lagging or reset watch relists. The
//! revision the copy reflects is published so a controller pass can wait until the cache
//! has seen the effects of the previous pass's writes (client-go's "expectations").

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use wk_api::resource::lookup;

use super::World;
use crate::store::Store;
use crate::store::sm::{Event, EventType};

/// The kinds the controllers read, in `World` order.
pub(crate) const KINDS: [&str; 12] = [
    "nodes",
    "pods",
    "replicasets",
    "deployments",
    "daemonsets",
    "jobs",
    "cronjobs",
    "services",
    "endpoints",
    "leases",
    "namespaces",
    "serviceaccounts",
];

type Objects = BTreeMap<String, Arc<Value>>;

pub(crate) struct Cache {
    prefixes: Vec<String>,
    objects: RwLock<Vec<Objects>>,
    revision: watch::Sender<u64>,
}

impl Cache {
    pub(crate) fn new() -> Arc<Cache> {
        let prefixes = KINDS
            .iter()
            .map(|k| lookup(k).expect("kind registered").key_prefix(None))
            .collect();
        Arc::new(Cache {
            prefixes,
            objects: RwLock::new(vec![Objects::new(); KINDS.len()]),
            revision: watch::channel(0).0,
        })
    }

    fn kind_of(&self, key: &str) -> Option<usize> {
        self.prefixes
            .iter()
            .position(|p| key.starts_with(p.as_str()))
    }

    /// Keeps the copy current until the process ends.
    pub(crate) async fn run(self: Arc<Self>, store: Store) {
        loop {
            if let Err(e) = self.follow(&store).await {
                tracing::debug!(error = %e, "controller cache: relisting");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One list, then events until the watch lags or is reset.
    async fn follow(&self, store: &Store) -> Result<(), String> {
        let start = store
            .read(|sm| sm.revision())
            .await
            .map_err(|e| e.to_string())?;
        let (past, mut rx) = store
            .sm
            .hub
            .subscribe_from(start)
            .map_err(|e| e.to_string())?;
        let prefixes = self.prefixes.clone();
        let (listed, pages) = store
            .read(move |sm| sm.list_prefixes(&prefixes))
            .await
            .map_err(|e| e.to_string())?;
        let fresh: Vec<Objects> = pages
            .into_iter()
            .map(|items| {
                items
                    .into_iter()
                    .filter_map(|(k, text)| Some((k, Arc::new(serde_json::from_str(&text).ok()?))))
                    .collect()
            })
            .collect();
        *self.objects.write().expect("cache lock") = fresh;
        self.revision.send_replace(listed);
        for e in past {
            self.apply(&e, listed);
        }
        loop {
            match rx.recv().await {
                Ok(e) => self.apply(&e, listed),
                Err(RecvError::Lagged(n)) => return Err(format!("watch lagged by {n} events")),
                Err(RecvError::Closed) => return Err("watch reset".into()),
            }
        }
    }

    fn apply(&self, e: &Event, listed: u64) {
        if e.revision <= listed {
            return;
        }
        if let Some(i) = self.kind_of(&e.key) {
            let mut objects = self.objects.write().expect("cache lock");
            match e.kind {
                EventType::Deleted => objects[i].remove(&e.key),
                _ => objects[i].insert(e.key.clone(), e.object.clone()),
            };
        }
        self.revision.send_replace(e.revision);
    }

    /// Waits (at most `timeout`) until the copy reflects `revision`; false on timeout.
    pub(crate) async fn wait_for(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Everything, as of now.
    pub(crate) fn world(&self) -> World {
        let objects = self.objects.read().expect("cache lock");
        let take = |kind: &str| -> Vec<Arc<Value>> {
            let i = KINDS.iter().position(|k| *k == kind).expect("cached kind");
            objects[i].values().cloned().collect()
        };
        World {
            nodes: take("nodes"),
            pods: take("pods"),
            replicasets: take("replicasets"),
            deployments: take("deployments"),
            daemonsets: take("daemonsets"),
            jobs: take("jobs"),
            cronjobs: take("cronjobs"),
            services: take("services"),
            endpoints: take("endpoints"),
            leases: take("leases"),
            namespaces: take("namespaces"),
            serviceaccounts: take("serviceaccounts"),
        }
    }
}
