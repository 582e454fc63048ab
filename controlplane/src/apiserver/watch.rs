//! Watches: newline-delimited `{"type", "object"}` events over a chunked response.
//!
//! A watch starts from a resourceVersion within the retained history (else one `ERROR`
//! event with a 410 Expired `Status`, as the Kubernetes API server does), or with the
//! current state as `ADDED` events when no version is given. With a selector, an object
//! that starts matching arrives as `ADDED` and one that stops matching as `DELETED`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use wk_api::Status;

use super::handlers::{Filter, Params, Result};
use super::{ApiState, Target, table};
use crate::store::{Event, EventType};

/// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// Watches end after this long unless `timeoutSeconds` says otherwise; clients re-watch.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Watcher {
    target: Target,
    filter: Filter,
    params: Params,
    table: bool,
    first: bool,
    /// Keys known to match the selector (tracked only when a selector is set).
    matching: HashSet<String>,
    selective: bool,
    latest: u64,
    /// The revision the watch starts after: events at or before it are already known to
    /// the client (a server whose feed lags behind it could otherwise replay them).
    after: u64,
}

impl Watcher {
    fn line(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let t = table::watch_table(self.target.rt, obj, &self.params, self.first);
            self.first = false;
            t
        } else {
            obj.clone()
        };
        let mut text = json!({"type": kind, "object": object}).to_string();
        text.push('\n');
        Bytes::from(text)
    }

    /// Turns a store event into zero or one watch event for this watcher.
    fn translate(&mut self, ev: &Event) -> Option<Bytes> {
        self.latest = self.latest.max(ev.revision);
        if ev.revision <= self.after || !ev.key.starts_with(&self.filter.prefix) {
            return None;
        }
        let matches = self.filter.matches(&ev.object);
        if !self.selective {
            return matches.then(|| self.line(ev.kind.as_str(), &ev.object));
        }
        // Whether it matched before this event: sent by this watch as matching, or else
        // (an object this watch has not sent, perhaps last listed before it started)
        // from the object before a modification, parsed only then.
        let known = self.matching.contains(&ev.key)
            || match (&ev.previous, ev.kind) {
                (Some(prev), EventType::Modified) => {
                    serde_json::from_str::<Value>(prev).is_ok_and(|p| self.filter.matches(&p))
                }
                _ => false,
            };
        let kind = match (ev.kind, matches, known) {
            (EventType::Deleted, _, true) => {
                self.matching.remove(&ev.key);
                "DELETED"
            }
            // An object that matched before this watch began (its last state matches).
            (EventType::Deleted, true, false) => "DELETED",
            (EventType::Deleted, false, false) => return None,
            (_, true, true) => "MODIFIED",
            (_, true, false) => {
                self.matching.insert(ev.key.clone());
                "ADDED"
            }
            (_, false, true) => {
                self.matching.remove(&ev.key);
                "DELETED"
            }
            (_, false, false) => return None,
        };
        Some(self.line(kind, &ev.object))
    }

    fn bookmark(&mut self, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": self.latest.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.target.rt.kind, "apiVersion": self.target.rt.api_version(), "metadata": meta});
        self.line("BOOKMARK", &obj)
    }
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(futures::StreamExt::map(
        ReceiverStream::new(rx),
        Ok::<_, std::convert::Infallible>,
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

pub async fn serve(
    state: ApiState,
    target: Target,
    filter: Filter,
    params: Params,
    headers: HeaderMap,
) -> Result<Response> {
    let table = table::wants_table(&headers);
    let rv = params.get("resourceVersion").unwrap_or("").to_string();
    let send_initial = match params.get("sendInitialEvents") {
        Some(v) => v == "true",
        None => rv.is_empty() || rv == "0",
    };
    let bookmarks =
        params.flag("allowWatchBookmarks") && params.get("allowWatchBookmarks").is_some();
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let selective = !filter.labels.is_empty() || !filter.fields.requirements().is_empty();
    let mut w = Watcher {
        target,
        filter,
        params,
        table,
        first: true,
        matching: HashSet::new(),
        selective,
        latest: 0,
        after: 0,
    };

    // Initial state (a consistent read), then history after it, then live events.
    let (initial, start) = if send_initial {
        if rv.is_empty() {
            state.store.linearize().await?;
        }
        let prefix = w.filter.prefix.clone();
        let (revision, items, _) = state
            .store
            .read(move |sm| sm.list(&prefix, None, 0))
            .await?;
        (Some(items), revision)
    } else {
        let start: u64 = rv
            .parse()
            .map_err(|_| Status::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        (None, start)
    };
    w.latest = start;
    w.after = start;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let subscription = state.store.sm.hub.subscribe_from(start);
    let (past, live) = match subscription {
        Ok(s) => s,
        Err(expired) => {
            let status = Status::gone(expired.to_string());
            let line = w.line("ERROR", &serde_json::to_value(&status).unwrap_or_default());
            let _ = tx.send(line).await;
            return Ok(stream_response(rx));
        }
    };
    let mut preamble = Vec::new();
    if let Some(items) = initial {
        for (key, text) in items {
            let obj: Value = serde_json::from_str(&text).unwrap_or_default();
            if w.filter.matches(&obj) {
                if w.selective {
                    w.matching.insert(key);
                }
                preamble.push(w.line("ADDED", &obj));
            }
        }
        if bookmarks && w.params.get("sendInitialEvents") == Some("true") {
            preamble.push(w.bookmark(true));
        }
    }
    for ev in &past {
        if let Some(line) = w.translate(ev) {
            preamble.push(line);
        }
    }
    tokio::spawn(run(w, preamble, live, tx, bookmarks, timeout));
    Ok(stream_response(rx))
}

async fn run(
    mut w: Watcher,
    preamble: Vec<Bytes>,
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
    timeout: Duration,
) {
    for line in preamble {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(ev) => {
                    if let Some(line) = w.translate(&ev) {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                // Too slow to keep up, or the history was reset: end the stream; the
                // client re-watches from its last resourceVersion.
                Err(_) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                let line = w.bookmark(false);
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = &mut deadline => return,
        }
    }
}
