//! The agent's endpoint (the kubelet's API), which the API server proxies to. Requests
//! must carry the cluster's node token.
//! - `GET /containerLogs/{ns}/{pod}/{container}` for `pods/{name}/log`: `follow`,
//!   `tailLines`, `sinceSeconds`, `timestamps`, `limitBytes`;
//! - `POST /exec/{ns}/{pod}/{container}` for `pods/{name}/exec`: runs a command in the
//!   running container and answers its exit code and output.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use wk_api::runtime::Runtime;

use crate::Agent;

/// One log line: `<RFC 3339> <stream> <text>` as the runtime writes it.
fn split_line(line: &str) -> Option<(&str, &str)> {
    let (ts, rest) = line.split_once(' ')?;
    let (_stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((ts, text))
}

fn render(line: &str, timestamps: bool, since: Option<jiff::Timestamp>) -> Option<String> {
    let (ts, text) = split_line(line)?;
    if let Some(since) = since {
        if ts.parse::<jiff::Timestamp>().is_ok_and(|t| t < since) {
            return None;
        }
    }
    Some(if timestamps {
        format!("{ts} {text}\n")
    } else {
        format!("{text}\n")
    })
}

fn authorized(agent: &Agent, headers: &HeaderMap) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(wk_api::auth::bearer);
    match (token, agent.cfg.log_token.as_deref()) {
        (Some(t), Some(want)) => wk_api::auth::constant_time_eq(t.as_bytes(), want.as_bytes()),
        _ => false,
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecRequest {
    command: Vec<String>,
    timeout_seconds: u64,
}

async fn exec(
    State(agent): State<Arc<Agent>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(req): axum::Json<ExecRequest>,
) -> Response {
    if !authorized(&agent, &headers) {
        return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    }
    let Some((rt, id)) = agent
        .running
        .lock()
        .expect("running lock")
        .get(&format!("{ns}/{pod}/{container}"))
        .cloned()
    else {
        return (
            StatusCode::CONFLICT,
            format!("container {container} of pod {ns}/{pod} is not running on this node\n"),
        )
            .into_response();
    };
    match rt
        .exec(&id, &req.command, Duration::from_secs(req.timeout_seconds))
        .await
    {
        Ok(out) => axum::Json(serde_json::json!({
            "exitCode": out.exit_code,
            "stdout": String::from_utf8_lossy(&out.stdout),
            "stderr": String::from_utf8_lossy(&out.stderr),
        }))
        .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn container_logs(
    State(agent): State<Arc<Agent>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&agent, &headers) {
        return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    }
    let Some(dir) = agent
        .pod_dirs
        .lock()
        .await
        .get(&format!("{ns}/{pod}"))
        .cloned()
    else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} is not on this node\n"),
        )
            .into_response();
    };
    let previous = q.get("previous").is_some_and(|v| v == "true");
    // The runtime writes `<container>.log`; the agent keeps the last instance's log as
    // `<container>.previous.log` when it restarts a container.
    let path = dir.join("logs").join(if previous {
        format!("{container}.previous.log")
    } else {
        format!("{container}.log")
    });
    if previous && !path.exists() {
        return (
            StatusCode::BAD_REQUEST,
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found\n"),
        )
            .into_response();
    }
    let timestamps = q.get("timestamps").is_some_and(|v| v == "true");
    let follow = q.get("follow").is_some_and(|v| v == "true");
    let tail: Option<usize> = q.get("tailLines").and_then(|v| v.parse().ok());
    let limit: Option<usize> = q.get("limitBytes").and_then(|v| v.parse().ok());
    let since = q
        .get("sinceSeconds")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|s| jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s));
    let bytes = std::fs::read(&path).unwrap_or_default();
    let first = log_text(&bytes, timestamps, since, tail, limit);
    if !follow {
        return ([("content-type", "text/plain")], first).into_response();
    }
    let offset = bytes.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let key = format!("{ns}/{pod}");
    tokio::spawn(follow_file(
        agent.clone(),
        key,
        path,
        offset,
        timestamps,
        first,
        tx,
    ));
    (
        [("content-type", "text/plain")],
        Body::from_stream(tokio_stream_from(rx)),
    )
        .into_response()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What a log read answers: the lines of `log` (a log file's bytes: programs may write
/// any bytes, and lines are split at a length limit, which can cut a character; invalid
/// UTF-8 becomes U+FFFD), at most `tail` of them, cut to at most `limit` bytes at a
/// character's boundary.
fn log_text(
    log: &[u8],
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    tail: Option<usize>,
    limit: Option<usize>,
) -> String {
    let mut lines: Vec<String> = log
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| render(&String::from_utf8_lossy(l), timestamps, since))
        .collect();
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut text = lines.concat();
    if let Some(limit) = limit
        && limit < text.len()
    {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Takes the complete lines off the front of `partial` (bytes read from a log file),
/// rendered; an incomplete last line stays for the next read.
fn complete_lines(partial: &mut Vec<u8>, timestamps: bool) -> String {
    let mut out = String::new();
    while let Some(i) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=i).collect();
        if let Some(r) = render(&String::from_utf8_lossy(&line[..i]), timestamps, None) {
            out.push_str(&r);
        }
    }
    out
}

/// Sends what is appended to the file until the pod leaves the node or the client goes.
async fn follow_file(
    agent: Arc<Agent>,
    key: String,
    path: PathBuf,
    mut offset: u64,
    timestamps: bool,
    first: String,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
        return;
    }
    let mut partial = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tx.closed() => return,
        }
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0; // rotated
            }
            let before = partial.len();
            if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_end(&mut partial).is_ok() {
                offset += (partial.len() - before) as u64;
            }
        }
        let out = complete_lines(&mut partial, timestamps);
        if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
            return;
        }
        if !agent.pod_dirs.lock().await.contains_key(&key) {
            return;
        }
    }
}

/// The agent's HTTP endpoints.
pub(crate) fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", post(exec))
        .with_state(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_render_with_and_without_timestamps() {
        let l = "2026-11-22T03:00:00.000000000Z stdout GET /x";
        assert_eq!(render(l, false, None).unwrap(), "GET /x\n");
        assert_eq!(
            render(l, true, None).unwrap(),
            "2026-11-22T03:00:00.000000000Z GET /x\n"
        );
        let later: jiff::Timestamp = "2026-11-22T04:00:00Z".parse().unwrap();
        assert!(render(l, false, Some(later)).is_none());
    }

    /// Bytes that are not UTF-8 (a program's own, or a character cut where a long line
    /// was split) neither empty the log nor stall a follow, and `limitBytes` never cuts
    /// a character in two.
    #[test]
    fn logs_that_are_not_utf8_still_read_and_follow() {
        let mut log = b"2026-11-22T03:00:00Z stdout caf\xc3\n".to_vec();
        log.extend_from_slice("2026-11-22T03:00:01Z stdout \u{e9}t\u{e9}\n".as_bytes());
        assert_eq!(
            log_text(&log, false, None, None, None),
            "caf\u{fffd}\n\u{e9}t\u{e9}\n"
        );
        assert_eq!(
            log_text(&log, false, None, Some(1), None),
            "\u{e9}t\u{e9}\n"
        );
        // "é" is two bytes: a limit of 1 gives nothing rather than half of it.
        assert_eq!(log_text(&log, false, None, Some(1), Some(1)), "");
        assert_eq!(log_text(&log, false, None, Some(1), Some(3)), "\u{e9}t");

        // A follow that reads the first line and part of the second, then the rest.
        let cut = log.iter().position(|&b| b == b'\n').unwrap() + 10;
        let mut partial = log[..cut].to_vec();
        assert_eq!(complete_lines(&mut partial, false), "caf\u{fffd}\n");
        partial.extend_from_slice(&log[cut..]);
        assert_eq!(complete_lines(&mut partial, false), "\u{e9}t\u{e9}\n");
        assert!(partial.is_empty());
    }
}
