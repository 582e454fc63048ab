//! `wasi:http/proxy` services: an HTTP/1.1 listener per container port, a fresh instance
//! per request from a pre-instantiated component (`wasmtime_wasi_http::handler`, the same
//! machinery `wasmtime serve` uses).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use wasmtime::component::{Component, GuestTaskId};
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::io::TokioIo;
use wk_api::runtime::ContainerState;

use crate::host::{Host, HostTemplate};
use crate::{Container, WasmRuntime, new_store};

/// Counts one live unit (a request, a connection) for as long as it is held: a future
/// dropped half-way counts down too.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: &Arc<AtomicUsize>) -> Counted {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Expiration {
    request_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let me = self.get_mut();
        let timeout = match status {
            // One request per instance: an idle worker is done at once.
            WorkerStatus::Idle => Duration::ZERO,
            WorkerStatus::Requests | WorkerStatus::PostReturn => me.request_timeout,
        };
        match start.checked_add(timeout) {
            Some(deadline) => {
                let deadline = tokio::time::Instant::from_std(deadline);
                if deadline != me.sleep.deadline() {
                    me.sleep.as_mut().reset(deadline);
                }
                me.sleep.as_mut().poll(cx)
            }
            None => Poll::Pending,
        }
    }
}

struct Worker {
    request_timeout: Duration,
    oom: Arc<AtomicBool>,
    log: crate::logs::ContainerLog,
}

impl WorkerState for Worker {
    type StoreData = Host;
    type RequestData = u64;

    fn should_accept_request(&self, _concurrent: usize, total: usize) -> ShouldAccept {
        // A fresh instance per request.
        if total >= 1 {
            ShouldAccept::Never
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, Host>,
        _request: u64,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + 'static + Send + Sync>> {
        Box::pin(tokio::time::sleep(self.request_timeout))
    }

    fn drop(&self, store: Store<Host>, result: Result<(), wasmtime::Error>) {
        if let Err(e) = result {
            let why = if self.oom.load(Ordering::Relaxed) {
                "OOMKilled: memory limit exceeded"
            } else {
                "request failed"
            };
            self.log.note(&format!("{why}: {e:#}"));
        }
        drop(store);
    }
}

struct State {
    engine: wasmtime::Engine,
    pre: ProxyPre<Host>,
    template: Arc<HostTemplate>,
    request_timeout: Duration,
}

impl HandlerState for State {
    type StoreData = Host;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Host, Expiration, Worker>> {
        let oom = Arc::new(AtomicBool::new(false));
        let host = self
            .template
            .host(oom.clone())
            .map_err(|e| wasmtime::format_err!(e))?;
        let mut store = new_store(&self.engine, host, Some(self.request_timeout));
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: wasmtime_wasi_http::WasiHttpView::http,
            expiration: Expiration {
                request_timeout: self.request_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86400 * 365))),
            },
            state: Worker {
                request_timeout: self.request_timeout,
                oom,
                log: self.template.log.clone(),
            },
        })
    }
}

fn error_response(
    code: hyper::StatusCode,
    text: &str,
) -> hyper::Response<wasmtime_wasi_http::WasiBody> {
    let body = Full::new(Bytes::from(format!("{text}\n")))
        .map_err(|_| unreachable!())
        .boxed_unsync();
    let mut r = hyper::Response::new(body);
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// One running wasi:http service, able to serve a connection however it arrived: from
/// its own listeners, or handed over by the node's balancer (no socket hop for local
/// endpoints).
pub struct LocalService {
    handler: ProxyHandler<State>,
    request_timeout: Duration,
    in_flight: Arc<AtomicUsize>,
    open_conns: Arc<AtomicUsize>,
    next_id: Arc<AtomicU64>,
    /// Set when the service stops: open connections finish their request and close.
    /// Its sender belongs to the service's task: when that ends or is aborted (its grace
    /// period ran out), connections handed over by the balancer, which run outside the
    /// task, end too.
    closing: tokio::sync::watch::Receiver<bool>,
}

impl LocalService {
    /// Serves HTTP/1.1 on `stream` until the connection ends (or the service stops).
    pub async fn serve(&self, stream: tokio::net::TcpStream) {
        let _ = stream.set_nodelay(true);
        let (handler, in_flight, next_id) = (
            self.handler.clone(),
            self.in_flight.clone(),
            self.next_id.clone(),
        );
        let request_timeout = self.request_timeout;
        let mut closing = self.closing.clone();
        let _conn = Counted::new(&self.open_conns);
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                let in_flight = in_flight.clone();
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                async move {
                    // Counted down when the request ends, or when hyper drops it because
                    // its client went away.
                    let _request = Counted::new(&in_flight);
                    let began = Instant::now();
                    let req = req.map(|b| {
                        b.map_err(|e| -> wasmtime_wasi_http::Error { e.into() })
                            .boxed_unsync()
                    });
                    let resp = match handler.handle(id, req).await {
                        Ok(r) => r,
                        // Cut off at its deadline (by expiry or by the epoch interrupt, which
                        // surfaces as a missing response).
                        Err(e)
                            if e.is::<wasmtime_wasi_http::handler::ExpirationError>()
                                || began.elapsed() >= request_timeout =>
                        {
                            error_response(hyper::StatusCode::GATEWAY_TIMEOUT, "request timed out")
                        }
                        Err(e) => {
                            tracing::debug!(error = %format!("{e:#}"), "wasi:http request failed");
                            error_response(
                                hyper::StatusCode::INTERNAL_SERVER_ERROR,
                                "the component failed to handle the request",
                            )
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
        // (No header-read timeout: hyper's, on a Tokio timer, cost 15% of requests per
        // second at 16 and 64 connections. A stalled client holds its connection until
        // the stop's grace period ends, which aborts it with the service's task.)
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let closing_now = tokio::select! {
            _ = conn.as_mut() => return,
            c = closing.wait_for(|c| *c) => c.is_ok(),
        };
        if closing_now {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                // The service's task is gone.
                _ = closing.changed() => {}
            }
        }
    }

    /// Whether it still takes connections.
    pub fn is_open(&self) -> bool {
        !*self.closing.borrow()
    }
}

/// How long an accept loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A connection on any of `listeners`.
async fn accept_any(
    listeners: &[tokio::net::TcpListener],
) -> std::io::Result<tokio::net::TcpStream> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                return std::task::Poll::Ready(r.map(|(stream, _)| stream));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// A service's entries in the map the node's balancer hands connections through,
/// removed when the service's task ends however it ends.
struct Closed {
    local:
        Arc<std::sync::RwLock<std::collections::HashMap<std::net::SocketAddr, Arc<LocalService>>>>,
    addrs: Vec<std::net::SocketAddr>,
    service: Arc<LocalService>,
}

impl Drop for Closed {
    fn drop(&mut self) {
        let mut local = self.local.write().expect("local lock");
        for a in &self.addrs {
            if local.get(a).is_some_and(|s| Arc::ptr_eq(s, &self.service)) {
                local.remove(a);
            }
        }
    }
}

/// Binds the container's ports and serves until stopped; returns the serving task.
pub async fn start(
    rt: &WasmRuntime,
    component: &Component,
    template: Arc<HostTemplate>,
    container: Arc<Container>,
    default_timeout: Duration,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let pre = rt
        .linker
        .instantiate_pre(component)
        .map_err(|e| format!("{e:#}"))?;
    let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(|e| format!("{e:#}"))?;
    let request_timeout = template
        .config
        .limits
        .request_timeout
        .unwrap_or(default_timeout);
    let mut listeners = Vec::new();
    for p in &template.config.ports {
        let addr = std::net::SocketAddr::new(p.host_ip, p.host_port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        listeners.push(l);
    }
    if listeners.is_empty() {
        return Err("a wasi:http service needs at least one containerPort".into());
    }
    let handler = ProxyHandler::new(State {
        engine: rt.engine.clone(),
        pre: ProxyPre::P2(pre),
        template,
        request_timeout,
    });
    let stop = container.stop.clone();
    let drain_ms = container.drain_ms.clone();
    // Tells open connections to finish their current request and close.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let service = Arc::new(LocalService {
        handler,
        request_timeout,
        in_flight: Arc::new(AtomicUsize::new(0)),
        open_conns: Arc::new(AtomicUsize::new(0)),
        next_id: Arc::new(AtomicU64::new(0)),
        closing: closing_rx,
    });
    let addrs: Vec<std::net::SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    // The node's balancer may hand connections for these addresses straight in.
    for a in &addrs {
        rt.local
            .write()
            .expect("local lock")
            .insert(*a, service.clone());
    }
    let local = rt.local.clone();
    Ok(tokio::spawn(async move {
        // The listeners and the hand-off entries belong to this task: when it ends, or is
        // aborted because the grace period ran out (`stop` then waits for it to be
        // dropped), the ports are free again and the balancer stops handing in; and
        // `closing_tx` goes, which ends the connections it handed in.
        let closed = Closed {
            local,
            addrs,
            service: service.clone(),
        };
        // The connections belong to this task too: aborted with it, they stop serving
        // (a stop whose grace ran out leaves no request running on).
        let mut conns = tokio::task::JoinSet::new();
        let accepting = async {
            loop {
                tokio::select! {
                    accepted = accept_any(&listeners) => match accepted {
                        Ok(stream) => {
                            let service = service.clone();
                            conns.spawn(async move { service.serve(stream).await });
                        }
                        Err(e) => {
                            // Out of descriptors, say: wait instead of spinning.
                            tracing::debug!(error = %e, "accept failed");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                    },
                    // Reap finished connections as they end.
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        };
        // Stop: keep accepting while balancers learn the endpoint is going, then close
        // the listeners, let in-flight requests finish, report Completed.
        let draining = async {
            stop.notified().await;
            tokio::time::sleep(Duration::from_millis(drain_ms.load(Ordering::Relaxed))).await;
        };
        tokio::select! {
            _ = accepting => {}
            _ = draining => {}
        }
        drop(listeners);
        drop(closed);
        let _ = closing_tx.send(true);
        while service.in_flight.load(Ordering::SeqCst) > 0
            || service.open_conns.load(Ordering::SeqCst) > 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started_at = match &*container.state.borrow() {
            ContainerState::Running { started_at } => *started_at,
            _ => jiff::Timestamp::now(),
        };
        container.state.send_replace(ContainerState::Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            message: String::new(),
            started_at,
            finished_at: jiff::Timestamp::now(),
        });
    }))
}
