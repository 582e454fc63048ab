//! Container probes: startup, liveness and readiness, with `httpGet`, `tcpSocket` and
//! `exec` actions and Kubernetes' timing fields (`initialDelaySeconds`, `periodSeconds`,
//! `timeoutSeconds`, `successThreshold`, `failureThreshold`).
//!
//! One prober task runs per started container. It reports to the pod's worker through a
//! channel: `Started` once the startup probe passes, `Ready(bool)` when readiness crosses a
//! threshold, `Kill` when startup or liveness fails `failureThreshold` times in a row. The
//! worker owns the container; the prober only observes it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// What a prober tells the pod worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeEvent {
    /// The startup probe succeeded: liveness and readiness probes begin.
    Started,
    /// Readiness crossed its success or failure threshold.
    Ready(bool),
    /// Startup or liveness failed `failureThreshold` times in a row: restart the container.
    Kill(String),
    /// A probe failed (one `Unhealthy` event per threshold crossing).
    Unhealthy(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Http {
        https: bool,
        host: IpAddr,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: IpAddr,
        port: u16,
    },
    Exec(Vec<String>),
}

/// One probe of a container, parsed from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    action: Action,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn secs(v: &Value, field: &str, default: u64) -> Duration {
    Duration::from_secs(v.get(field).and_then(Value::as_u64).unwrap_or(default))
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &Value, container: &Value) -> Result<u16, String> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).map_err(|_| format!("port {n} out of range"));
    }
    let name = port.as_str().ok_or("port is missing")?;
    if let Ok(n) = name.parse::<u16>() {
        return Ok(n);
    }
    container
        .get("ports")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        })
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .map(|p| p as u16)
        .ok_or_else(|| format!("port {name:?} is not a named port of the container"))
}

impl Probe {
    /// Parses `container.<field>` (`livenessProbe`, …); `None` when the container has none.
    pub(crate) fn of(
        container: &Value,
        field: &str,
        pod_ip: Ipv4Addr,
    ) -> Result<Option<Probe>, String> {
        let Some(spec) = container.get(field).filter(|v| v.is_object()) else {
            return Ok(None);
        };
        let host_of = |v: &Value| -> Result<IpAddr, String> {
            match v
                .get("host")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
            {
                Some(h) => h
                    .parse()
                    .map_err(|_| format!("{field}: host {h:?} is not an IP address")),
                None => Ok(IpAddr::V4(pod_ip)),
            }
        };
        let action = if let Some(h) = spec.get("httpGet") {
            let path = h.get("path").and_then(Value::as_str).unwrap_or("/");
            Action::Http {
                https: h.get("scheme").and_then(Value::as_str) == Some("HTTPS"),
                host: host_of(h)?,
                port: resolve_port(h.get("port").unwrap_or(&Value::Null), container)
                    .map_err(|e| format!("{field}.httpGet: {e}"))?,
                path: if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                },
                headers: h
                    .get("httpHeaders")
                    .and_then(Value::as_array)
                    .map(|hs| {
                        hs.iter()
                            .filter_map(|x| {
                                Some((
                                    x.get("name")?.as_str()?.to_string(),
                                    x.get("value")?.as_str()?.to_string(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        } else if let Some(t) = spec.get("tcpSocket") {
            Action::Tcp {
                host: host_of(t)?,
                port: resolve_port(t.get("port").unwrap_or(&Value::Null), container)
                    .map_err(|e| format!("{field}.tcpSocket: {e}"))?,
            }
        } else if let Some(e) = spec.get("exec") {
            let cmd = e
                .get("command")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            Action::Exec(cmd)
        } else {
            return Err(format!("{field}: no handler (httpGet, tcpSocket or exec)"));
        };
        let liveness_like = field != "readinessProbe";
        Ok(Some(Probe {
            action,
            initial_delay: secs(spec, "initialDelaySeconds", 0),
            period: secs(spec, "periodSeconds", 10).max(Duration::from_secs(1)),
            timeout: secs(spec, "timeoutSeconds", 1).max(Duration::from_secs(1)),
            // Liveness and startup probes must use 1 (validation enforces it in Kubernetes).
            success_threshold: if liveness_like {
                1
            } else {
                spec.get("successThreshold")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .max(1) as u32
            },
            failure_threshold: spec
                .get("failureThreshold")
                .and_then(Value::as_u64)
                .unwrap_or(3)
                .max(1) as u32,
        }))
    }

    /// Runs the probe once: `Ok` on success, the failure's description otherwise (the text
    /// Kubernetes puts after `Liveness probe failed: `).
    pub(crate) async fn check(
        &self,
        http: &reqwest::Client,
        exec: Option<&Exec>,
    ) -> Result<(), String> {
        match &self.action {
            Action::Http {
                https,
                host,
                port,
                path,
                headers,
            } => {
                let scheme = if *https { "https" } else { "http" };
                let host = match host {
                    IpAddr::V6(a) => format!("[{a}]"),
                    IpAddr::V4(a) => a.to_string(),
                };
                let url = format!("{scheme}://{host}:{port}{path}");
                let mut req = http
                    .get(&url)
                    .timeout(self.timeout)
                    .header("user-agent", "kube-probe/1.32");
                for (k, v) in headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                match req.send().await {
                    Ok(r) if (200..400).contains(&r.status().as_u16()) => Ok(()),
                    Ok(r) => Err(format!(
                        "HTTP probe failed with statuscode: {}",
                        r.status().as_u16()
                    )),
                    Err(e) if e.is_timeout() => {
                        Err(format!("Get \"{url}\": context deadline exceeded"))
                    }
                    Err(e) => Err(format!("Get \"{url}\": {}", root_cause(&e))),
                }
            }
            Action::Tcp { host, port } => {
                match tokio::time::timeout(
                    self.timeout,
                    tokio::net::TcpStream::connect((*host, *port)),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: connect: {e}")),
                    Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
                }
            }
            // Wasm containers with exec probes are refused before they start (see `exec_probe`).
            Action::Exec(cmd) => match exec {
                None => Err(format!("exec {cmd:?}: this runtime cannot exec")),
                Some(exec) => match exec(cmd.clone(), self.timeout).await {
                    Ok((0, _)) => Ok(()),
                    // Kubernetes reports the command's output, if it printed any.
                    Ok((code, output)) if output.trim().is_empty() => {
                        Err(format!("command {cmd:?} exited with {code}"))
                    }
                    Ok((_, output)) => Err(output.trim().to_string()),
                    Err(e) => Err(e),
                },
            },
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Runs a command in the probed container: its exit code and output, or why it could
/// not run.
pub(crate) type Exec = std::sync::Arc<
    dyn Fn(
            Vec<String>,
            Duration,
        ) -> futures::future::BoxFuture<'static, Result<(i32, String), String>>
        + Send
        + Sync,
>;

/// The probes of one container.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probes {
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
}

impl Probes {
    pub(crate) fn of(container: &Value, pod_ip: Ipv4Addr) -> Result<Probes, String> {
        Ok(Probes {
            startup: Probe::of(container, "startupProbe", pod_ip)?,
            liveness: Probe::of(container, "livenessProbe", pod_ip)?,
            readiness: Probe::of(container, "readinessProbe", pod_ip)?,
        })
    }

    /// The first probe with an `exec` action, by field name.
    pub(crate) fn exec_probe(&self) -> Option<&'static str> {
        [
            ("startupProbe", &self.startup),
            ("livenessProbe", &self.liveness),
            ("readinessProbe", &self.readiness),
        ]
        .into_iter()
        .find(|(_, p)| {
            p.as_ref()
                .is_some_and(|p| matches!(p.action, Action::Exec(_)))
        })
        .map(|(f, _)| f)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }
}

/// Probes one container from its start until the task is aborted. `send` gets the
/// container's events.
pub(crate) async fn run(
    probes: Probes,
    http: reqwest::Client,
    exec: Option<Exec>,
    send: impl Fn(ProbeEvent) + Send + Sync,
) {
    let started_at = Instant::now();
    if let Some(p) = &probes.startup {
        tokio::time::sleep(p.initial_delay).await;
        let mut failures = 0;
        loop {
            match p.check(&http, exec.as_ref()).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    if failures >= p.failure_threshold {
                        send(ProbeEvent::Unhealthy(format!("Startup probe failed: {e}")));
                        send(ProbeEvent::Kill(format!(
                            "Container failed startup probe, will be restarted: {e}"
                        )));
                        return;
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
        send(ProbeEvent::Started);
    }
    let liveness = async {
        let Some(p) = &probes.liveness else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(started_at + p.initial_delay).await;
        let mut failures = 0;
        loop {
            match p.check(&http, exec.as_ref()).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= p.failure_threshold {
                        send(ProbeEvent::Unhealthy(format!("Liveness probe failed: {e}")));
                        send(ProbeEvent::Kill(format!(
                            "Container failed liveness probe, will be restarted: {e}"
                        )));
                        return;
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
    };
    let readiness = async {
        let Some(p) = &probes.readiness else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep_until(started_at + p.initial_delay).await;
        let (mut ok, mut bad) = (0u32, 0u32);
        let mut ready = None;
        loop {
            match p.check(&http, exec.as_ref()).await {
                Ok(()) => {
                    ok += 1;
                    bad = 0;
                    if ok >= p.success_threshold && ready != Some(true) {
                        ready = Some(true);
                        send(ProbeEvent::Ready(true));
                    }
                }
                Err(e) => {
                    bad += 1;
                    ok = 0;
                    if bad >= p.failure_threshold && ready != Some(false) {
                        ready = Some(false);
                        send(ProbeEvent::Unhealthy(format!(
                            "Readiness probe failed: {e}"
                        )));
                        send(ProbeEvent::Ready(false));
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
    };
    // Liveness ends only by killing the container; readiness never ends on its own.
    tokio::select! {
        _ = liveness => {}
        _ = readiness => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

    #[test]
    fn probes_parse_with_kubernetes_defaults_and_named_ports() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "healthz", "port": "http"}},
            "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 2, "successThreshold": 3, "failureThreshold": 1}});
        let p = Probes::of(&c, IP).unwrap();
        let l = p.liveness.unwrap();
        assert_eq!(
            l.action,
            Action::Http {
                https: false,
                host: IpAddr::V4(IP),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(
            (
                l.period,
                l.timeout,
                l.failure_threshold,
                l.success_threshold
            ),
            (Duration::from_secs(10), Duration::from_secs(1), 3, 1)
        );
        let r = p.readiness.unwrap();
        assert_eq!(
            r.action,
            Action::Tcp {
                host: IpAddr::V4(IP),
                port: 9000
            }
        );
        assert_eq!(
            (r.period, r.success_threshold, r.failure_threshold),
            (Duration::from_secs(2), 3, 1)
        );
        assert!(p.startup.is_none());
    }

    #[test]
    fn unknown_named_port_is_an_error() {
        let c = json!({"livenessProbe": {"httpGet": {"port": "web"}}});
        let e = Probes::of(&c, IP).unwrap_err();
        assert!(e.contains("\"web\" is not a named port"), "{e}");
        let c = json!({"livenessProbe": {"initialDelaySeconds": 1}});
        assert!(Probes::of(&c, IP).unwrap_err().contains("no handler"));
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // A tiny HTTP server answering 200 on /ok and 503 elsewhere.
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let code = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {code}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let probe = |spec: Value| Probe::of(&json!({"p": spec}), "p", IP).unwrap().unwrap();
        assert_eq!(
            probe(json!({"httpGet": {"path": "/ok", "port": port}}))
                .check(&http, None)
                .await,
            Ok(())
        );
        let e = probe(json!({"httpGet": {"path": "/bad", "port": port}}))
            .check(&http, None)
            .await
            .unwrap_err();
        assert_eq!(e, "HTTP probe failed with statuscode: 503");
        assert_eq!(
            probe(json!({"tcpSocket": {"port": port}}))
                .check(&http, None)
                .await,
            Ok(())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = probe(json!({"tcpSocket": {"port": closed}}))
            .check(&http, None)
            .await
            .unwrap_err();
        assert!(e.contains("connect"), "{e}");
    }

    #[tokio::test]
    async fn liveness_failures_past_the_threshold_ask_for_a_kill() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = json!({"livenessProbe": {"tcpSocket": {"port": closed}, "periodSeconds": 1, "failureThreshold": 2}});
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let http = reqwest::Client::new();
        let start = std::time::Instant::now();
        run(Probes::of(&c, IP).unwrap(), http, None, move |e| {
            let _ = tx.send(e);
        })
        .await;
        assert!(
            matches!(rx.recv().await, Some(ProbeEvent::Unhealthy(m)) if m.starts_with("Liveness probe failed: dial tcp"))
        );
        assert!(matches!(rx.recv().await, Some(ProbeEvent::Kill(_))));
        // Two failures one period apart.
        assert!(start.elapsed() >= Duration::from_secs(1));
    }
}
