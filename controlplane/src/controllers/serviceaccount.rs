//! ServiceAccounts: every active namespace has one named `default`, as Kubernetes'
//! service-account controller keeps it (made again if deleted). wk issues no tokens.

use std::collections::HashSet;

use serde_json::json;
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, s};

pub(crate) async fn run(client: &Client, w: &World) {
    let have: HashSet<&str> = w
        .serviceaccounts
        .iter()
        .filter(|sa| s(sa, "/metadata/name") == "default")
        .map(|sa| s(sa, "/metadata/namespace"))
        .collect();
    let rt = lookup("serviceaccounts").expect("serviceaccounts");
    for ns in &w.namespaces {
        let name = s(ns, "/metadata/name");
        if have.contains(name)
            || ns.pointer("/metadata/deletionTimestamp").is_some()
            || s(ns, "/status/phase") == "Terminating"
        {
            continue;
        }
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": name}});
        if let Err(e) = client.create(rt, Some(name), &sa, &[]).await {
            tracing::debug!(namespace = name, error = %e, "creating the default service account failed");
        }
    }
}
