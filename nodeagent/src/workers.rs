//! The balancer's TCP forwarding threads: one epoll loop per core, in the manner of
//! HAProxy's threads, with no async runtime in between.
//!
//! The threads share one listener per Service port, watched level-triggered with
//! `EPOLLEXCLUSIVE`: the kernel wakes one idle thread per new connection (a busy thread
//! is not woken), which accepts it. (The socket has `SO_REUSEPORT` too, so several
//! agents on one host share a VIP.) The connection then stays on that thread, unless the
//! thread forwards more than `SPREAD` connections beyond the least busy one: it hands the
//! connection over to that one instead, so long-lived connections end up spread evenly
//! (a burst of them would otherwise all land on whichever thread was idle). A thread
//! keeps its connections in a slab (slots are reused, so a connection allocates nothing
//! once the slab has grown), registers both sockets of a connection once,
//! edge-triggered for reading and writing, and never deregisters them: closing a socket
//! takes it out of the epoll set.
//!
//! Per connection: the endpoint is picked, connected without blocking, and the client's
//! first bytes are sent as soon as the connect completes (a loopback connect usually
//! has by the time `connect` returns). An endpoint that refuses, fails or times out the
//! connect is marked down and the connection moves to another one with the bytes it
//! has buffered. When one direction ends, the other socket is shut for writing; when
//! both have, the sockets are closed (the second shutdown is left to `close`).
//! Connections for a Wasm service of this agent are handed to the async runtime, which
//! serves the accepted socket itself.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use socket2::{Domain, Socket, Type};

use crate::forward::{self, Flow, Hop, Side, Splice, StepError};
use crate::proxy::{ATTEMPTS, Active, Backend, CONNECT_TIMEOUT, LocalServices, Table};

/// How long a listener is left alone after an accept ran out of descriptors or memory.
const PAUSE: Duration = Duration::from_millis(100);
/// Reads per direction before a connection yields to the others.
const BUDGET: u32 = 16;
/// Events taken from epoll at once.
const EVENTS: usize = 256;
/// How many more connections than the least busy thread a thread may forward before it
/// hands new ones over.
const SPREAD: usize = 2;

/// Token of a thread's wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// Listener tokens have this bit; connection tokens carry the slot, its generation and
/// the side.
const LISTENER: u64 = 1 << 63;
const GEN_MASK: u32 = (1 << 29) - 1;
/// Connection sockets: registered once, edge-triggered, both ways.
const CONN_FLAGS: EpollFlags = EpollFlags::EPOLLIN
    .union(EpollFlags::EPOLLOUT)
    .union(EpollFlags::EPOLLRDHUP)
    .union(EpollFlags::EPOLLPRI)
    .union(EpollFlags::EPOLLET);

fn conn_token(index: u32, generation: u32, backend: bool) -> u64 {
    (u64::from(generation & GEN_MASK) << 33) | (u64::from(index) << 1) | u64::from(backend)
}

/// What a Service port's listeners share across the threads.
pub struct ServicePort {
    pub table: Arc<Table>,
    pub local: Option<LocalServices>,
    pub splice: Splice,
    /// Bound on open connections (`max_connections`).
    limit: usize,
    open: AtomicUsize,
    /// Bytes moved through pipes by connections that have ended.
    pub spliced: AtomicU64,
}

impl ServicePort {
    pub fn new(
        table: Arc<Table>,
        local: Option<LocalServices>,
        splice: Splice,
        limit: usize,
    ) -> Arc<ServicePort> {
        Arc::new(ServicePort {
            table,
            local,
            splice,
            limit: limit.max(1),
            open: AtomicUsize::new(0),
            spliced: AtomicU64::new(0),
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a connection as open, if under the bound.
    fn admit(self: &Arc<Self>) -> Option<Open> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Open(self.clone()))
    }
}

/// One admitted connection of a Service port; uncounted when dropped.
struct Open(Arc<ServicePort>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many connections each thread forwards now (`GONE` once the thread has stopped).
struct Loads(Box<[Load]>);

/// One thread's count, on its own cache line: every accept reads them all, and every
/// open and close writes one.
#[repr(align(64))]
struct Load(AtomicUsize);

/// The load of a thread that has stopped (it is never the least busy one).
const GONE: usize = usize::MAX / 2;

impl Loads {
    fn new(n: usize) -> Loads {
        Loads((0..n).map(|_| Load(AtomicUsize::new(0))).collect())
    }

    /// The thread a new connection accepted by thread `me` should go to: `me`, unless it
    /// forwards more than `SPREAD` beyond the least busy thread.
    fn place(&self, me: usize) -> usize {
        let load = |i: usize| self.0[i].0.load(Ordering::Relaxed);
        let (least, least_load) = (0..self.0.len())
            .map(|i| (i, load(i)))
            .min_by_key(|&(_, l)| l)
            .unwrap_or((me, 0));
        if load(me) > least_load + SPREAD {
            least
        } else {
            me
        }
    }

    fn count(self: &Arc<Self>, thread: usize) -> Counted {
        self.0[thread].0.fetch_add(1, Ordering::Relaxed);
        Counted(self.clone(), thread)
    }
}

/// A connection counted in its thread's load; uncounted when dropped.
struct Counted(Arc<Loads>, usize);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0[self.1].0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a thread's load `GONE` when its loop ends, returning or unwinding.
struct Stopped(Arc<Loads>, usize);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.0[self.1].0.store(GONE, Ordering::Relaxed);
    }
}

/// An accepted connection, its endpoint, and what it is counted in.
struct Accepted {
    client: Socket,
    peer: SocketAddr,
    port: Arc<ServicePort>,
    backend: Arc<Backend>,
    open: Open,
    counted: Counted,
}

enum Command {
    Listen(u64, Arc<Socket>, Arc<ServicePort>),
    Unlisten(u64),
    /// A connection another thread accepted, to forward here.
    Adopt(Accepted),
}

struct Thread {
    commands: Sender<Command>,
    wake: EventFd,
}

impl Thread {
    /// Queues `c` for the thread and wakes it; `c` comes back if the thread has stopped.
    fn send(&self, c: Command) -> Result<(), Command> {
        self.commands.send(c).map_err(|e| e.0)?;
        let _ = self.wake.write(1);
        Ok(())
    }
}

/// The forwarding threads.
pub struct Workers {
    threads: Arc<[Thread]>,
    #[cfg(test)]
    loads: Arc<Loads>,
    next_id: AtomicU64,
}

/// The listener of one Service port.
pub struct Listening {
    id: u64,
    /// Where it listens (the port chosen, if it was 0).
    pub addr: SocketAddr,
}

impl Workers {
    /// Starts `n` threads (at least one), each with a partner thread running a
    /// single-threaded tokio runtime that serves the connections it hands to local Wasm
    /// services (as the pod's own listener would, but without work stealing between
    /// threads: measured faster in BENCHMARKS.md).
    pub fn start(n: usize) -> io::Result<Workers> {
        let n = n.max(1);
        let mut threads = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
            let (commands, rx) = channel();
            threads.push(Thread { commands, wake });
            receivers.push(rx);
        }
        let threads: Arc<[Thread]> = threads.into();
        let loads = Arc::new(Loads::new(n));
        for (me, rx) in receivers.into_iter().enumerate() {
            let runtime = handoff_runtime(me)?;
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            epoll.add(
                &threads[me].wake,
                EpollEvent::new(EpollFlags::EPOLLIN, WAKE),
            )?;
            let l = Loop::new(epoll, threads.clone(), me, loads.clone(), rx, runtime);
            std::thread::Builder::new()
                .name(format!("wk-proxy-{me}"))
                .spawn(move || l.run())?;
        }
        Ok(Workers {
            threads,
            #[cfg(test)]
            loads,
            next_id: AtomicU64::new(1),
        })
    }

    /// Connections each thread forwards now.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.loads
            .0
            .iter()
            .map(|l| l.0.load(Ordering::Relaxed))
            .collect()
    }

    /// Listens on `addr` for `port`, on every thread.
    pub fn listen(&self, addr: SocketAddr, port: Arc<ServicePort>) -> io::Result<Listening> {
        let socket = Arc::new(reuse_port_listener(addr)?);
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("a listener without an address"))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        for t in self.threads.iter() {
            let _ = t.send(Command::Listen(id, socket.clone(), port.clone()));
        }
        Ok(Listening { id, addr })
    }

    /// Stops accepting for a Service port; its established connections run to their end.
    pub fn unlisten(&self, l: Listening) {
        tracing::debug!(listen = %l.addr, "stop accepting");
        for t in self.threads.iter() {
            let _ = t.send(Command::Unlisten(l.id));
        }
    }
}

/// A thread running a single-threaded tokio runtime for handed-over connections.
fn handoff_runtime(i: usize) -> io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(format!("wk-handoff-{i}"))
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

fn reuse_port_listener(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s)
}

/// Errors that say this process or host is short of something, not that a peer is bad.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Connect errors that are the endpoint's (or its network's) doing, and so count against
/// it; others (no descriptors, no local ports) are ours.
fn endpoint_fault(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ETIMEDOUT)
    )
}

/// A non-blocking connect to `addr`: the socket, and whether the first write may be tried
/// at once (the connect is done, or is over loopback, where it completes within the call).
fn start_connect(addr: SocketAddr) -> io::Result<(Socket, bool)> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    match s.connect(&addr.into()) {
        Ok(()) => Ok((s, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((s, addr.ip().is_loopback())),
        Err(e) => Err(e),
    }
}

/// A connection whose endpoint has not yet answered the connect.
struct Connecting {
    attempt: usize,
    tried: [SocketAddr; ATTEMPTS],
}

impl Connecting {
    fn new() -> Connecting {
        Connecting {
            attempt: 0,
            tried: [SocketAddr::from(([0, 0, 0, 0], 0)); ATTEMPTS],
        }
    }

    /// Marks `failed` down and picks the next endpoint not yet tried, if attempts remain.
    fn skip(&mut self, table: &Table, client: IpAddr, failed: &Backend) -> Option<Arc<Backend>> {
        tracing::debug!(endpoint = %failed.addr, "connect to the endpoint failed; skipping it");
        table.mark_down(failed);
        self.tried[self.attempt] = failed.addr;
        self.attempt += 1;
        if self.attempt == ATTEMPTS {
            return None;
        }
        table.pick(client, &self.tried[..self.attempt])
    }

    /// Starts a connect to `backend`, moving on to the next endpoint while connects fail
    /// by the endpoint's fault: the endpoint, its socket, and whether to write at once.
    fn connect(
        &mut self,
        table: &Table,
        client: IpAddr,
        mut backend: Arc<Backend>,
    ) -> Option<(Arc<Backend>, Socket, bool)> {
        loop {
            match start_connect(backend.addr) {
                Ok((s, write_first)) => return Some((backend, s, write_first)),
                Err(e) if endpoint_fault(&e) => backend = self.skip(table, client, &backend)?,
                Err(e) => {
                    tracing::warn!(endpoint = %backend.addr, error = %e, "cannot connect");
                    return None;
                }
            }
        }
    }
}

struct Conn {
    port: Arc<ServicePort>,
    peer: SocketAddr,
    client: Side,
    backend: Side,
    /// The endpoint, counted as busy with this connection.
    active: Active,
    /// Client to endpoint, and back.
    up: Hop,
    down: Hop,
    up_ended: bool,
    down_ended: bool,
    /// The endpoint has been shut for writing (the client ended).
    backend_shut: bool,
    connecting: Option<Connecting>,
    _open: Open,
    _counted: Counted,
}

/// A Service port's shared listener as one thread watches it: id, socket, port.
type ListenerSlot = (u64, Arc<Socket>, Arc<ServicePort>);

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// What to do with a connection after a step.
enum Next {
    Wait,
    Again,
    Retry,
    Close,
}

struct Loop {
    epoll: Epoll,
    /// Every thread, this one (`me`) included, and how busy each is.
    threads: Arc<[Thread]>,
    me: usize,
    loads: Arc<Loads>,
    commands: Receiver<Command>,
    listeners: Vec<Option<ListenerSlot>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Connect deadlines, in order (all are `CONNECT_TIMEOUT` after their start).
    deadlines: VecDeque<(Instant, u32, u32)>,
    again: Vec<(u32, u32)>,
    /// Listeners taken out of the epoll set after running out of descriptors: when to
    /// put them back, their index and id.
    paused: Vec<(Instant, usize, u64)>,
    handoff: tokio::runtime::Handle,
}

impl Loop {
    fn new(
        epoll: Epoll,
        threads: Arc<[Thread]>,
        me: usize,
        loads: Arc<Loads>,
        commands: Receiver<Command>,
        handoff: tokio::runtime::Handle,
    ) -> Loop {
        Loop {
            epoll,
            threads,
            me,
            loads,
            commands,
            listeners: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            deadlines: VecDeque::new(),
            again: Vec::new(),
            paused: Vec::new(),
            handoff,
        }
    }

    fn run(mut self) {
        let _stopped = Stopped(self.loads.clone(), self.me);
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let mut again = Vec::new();
        loop {
            let next = self
                .deadlines
                .front()
                .map(|d| d.0)
                .into_iter()
                .chain(self.paused.iter().map(|p| p.0))
                .min();
            let timeout = if !self.again.is_empty() {
                EpollTimeout::ZERO
            } else if let Some(at) = next {
                let ms = at
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .clamp(1, 1000);
                EpollTimeout::from(ms as u16)
            } else {
                EpollTimeout::NONE
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "epoll failed; the forwarding thread stops");
                    return;
                }
            };
            for ev in &events[..n] {
                let (token, flags) = (ev.data(), ev.events());
                if token == WAKE {
                    let _ = self.threads[self.me].wake.read();
                    self.commands();
                } else if token & LISTENER != 0 {
                    self.accept((token & !LISTENER) as usize);
                } else {
                    self.event(token, flags);
                }
            }
            std::mem::swap(&mut again, &mut self.again);
            for (index, generation) in again.drain(..) {
                self.run_conn(index, generation);
            }
            self.expire();
            if !self.paused.is_empty() {
                self.resume();
            }
        }
    }

    fn commands(&mut self) {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Listen(id, socket, port) => {
                    let index = match self.listeners.iter().position(Option::is_none) {
                        Some(i) => i,
                        None => {
                            self.listeners.push(None);
                            self.listeners.len() - 1
                        }
                    };
                    if let Err(e) = self.watch_listener(index, &socket) {
                        tracing::warn!(error = %e, "cannot watch a service listener");
                        continue;
                    }
                    self.listeners[index] = Some((id, socket, port));
                }
                Command::Adopt(a) => self.open(a),
                Command::Unlisten(id) => {
                    for l in &mut self.listeners {
                        if l.as_ref().is_some_and(|(i, ..)| *i == id) {
                            if let Some((_, socket, _)) = l.take() {
                                // The other threads hold the socket open a while longer.
                                let _ = self.epoll.delete(&*socket);
                            }
                        }
                    }
                }
            }
        }
    }

    fn accept(&mut self, index: usize) {
        let Some(Some((id, listener, port))) = self.listeners.get(index) else {
            return;
        };
        let (client, peer) = match listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
            Ok((s, a)) => match a.as_socket() {
                Some(peer) => (s, peer),
                None => return,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if out_of_resources(&e) => {
                // The connection stays queued and the listener would be reported on
                // every turn: stop watching it for a while (never sleep here, the
                // thread's other connections would wait too).
                tracing::warn!(error = %e, "accept failed; pausing the listener");
                let _ = self.epoll.delete(&**listener);
                let id = *id;
                self.paused.push((Instant::now() + PAUSE, index, id));
                return;
            }
            Err(e) => {
                // This connection's own trouble (e.g. aborted before it was accepted).
                tracing::debug!(error = %e, "accept failed");
                return;
            }
        };
        let port = port.clone();
        let Some(open) = port.admit() else {
            // Over the bound: refuse rather than queue without limit.
            return;
        };
        let Some(backend) = port.table.pick(peer.ip(), &[]) else {
            return;
        };
        if let Some(service) = port.local.as_ref().and_then(|l| l(backend.addr)) {
            self.hand_off(client, backend, service, open);
            return;
        }
        let thread = self.loads.place(self.me);
        let accepted = Accepted {
            client,
            peer,
            port,
            backend,
            open,
            counted: self.loads.count(thread),
        };
        if thread == self.me {
            self.open(accepted);
        } else if let Err(Command::Adopt(mut a)) =
            self.threads[thread].send(Command::Adopt(accepted))
        {
            // That thread has stopped: forward it here.
            a.counted = self.loads.count(self.me);
            self.open(a);
        }
    }

    /// Serves a connection for a Wasm service of this agent on the async runtime, with
    /// no socket hop to the pod.
    fn hand_off(
        &self,
        client: Socket,
        backend: Arc<Backend>,
        service: Arc<wk_runtime_wasm::LocalService>,
        open: Open,
    ) {
        self.handoff.spawn(async move {
            let _active = Active::new(backend);
            let _open = open;
            if let Ok(s) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(client)) {
                service.serve(s).await;
            }
        });
    }

    /// Starts forwarding a new connection: a slot, the connect, the first steps.
    fn open(&mut self, a: Accepted) {
        let Accepted {
            client,
            peer,
            port,
            backend,
            open,
            counted,
        } = a;
        let mut connecting = Connecting::new();
        let Some((backend, outbound, write_first)) =
            connecting.connect(&port.table, peer.ip(), backend)
        else {
            return;
        };
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.slots[index as usize].generation;
        if let Err(e) = self.watch(index, generation, &client, &outbound, true) {
            tracing::debug!(error = %e, "cannot watch a proxied connection");
            self.free.push(index);
            return;
        }
        self.slots[index as usize].conn = Some(Conn {
            active: Active::new(backend),
            _open: open,
            _counted: counted,
            peer,
            client: Side::new(client, true, true),
            backend: Side::new(outbound, false, write_first),
            up: Hop::new(port.splice),
            down: Hop::new(port.splice),
            up_ended: false,
            down_ended: false,
            backend_shut: false,
            connecting: Some(connecting),
            port,
        });
        self.connecting(index, generation);
    }

    /// Adds a connection's sockets to the epoll set under the slot's generation (the
    /// client's is re-tagged when it is already there).
    fn watch(
        &self,
        index: u32,
        generation: u32,
        client: &Socket,
        outbound: &Socket,
        new_client: bool,
    ) -> nix::Result<()> {
        let mut ev = EpollEvent::new(CONN_FLAGS, conn_token(index, generation, false));
        if new_client {
            self.epoll.add(client, ev)?;
        } else {
            self.epoll.modify(client, &mut ev)?;
        }
        let ev = EpollEvent::new(CONN_FLAGS, conn_token(index, generation, true));
        self.epoll.add(outbound, ev)
    }

    /// A connect has started: it gets its deadline, and the connection its first steps.
    fn connecting(&mut self, index: u32, generation: u32) {
        self.deadlines
            .push_back((Instant::now() + CONNECT_TIMEOUT, index, generation));
        self.run_conn(index, generation);
    }

    fn event(&mut self, token: u64, flags: EpollFlags) {
        let index = ((token >> 1) & u64::from(u32::MAX)) as u32;
        let generation = (token >> 33) as u32;
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        if slot.generation & GEN_MASK != generation {
            return;
        }
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        let failed = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
        let backend = token & 1 == 1;
        let read_ended = if backend {
            conn.down_ended
        } else {
            conn.up_ended
        };
        if read_ended && flags.intersects(failed) {
            // A reset (or error) on a side that will not be read again: nothing else
            // would notice it until the other side has something to say.
            self.close(index);
            return;
        }
        let urgent = flags.contains(EpollFlags::EPOLLPRI);
        if urgent {
            // TCP urgent data: passed on in order without its urgent byte (which only
            // a MSG_OOB read returns), as HAProxy does in TCP mode.
            if backend {
                conn.down.stop_splicing();
            } else {
                conn.up.stop_splicing();
            }
        }
        let side = if backend {
            &mut conn.backend
        } else {
            &mut conn.client
        };
        let gone = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLPRI | failed;
        side.readable |= flags.intersects(EpollFlags::EPOLLIN | gone);
        side.writable |= flags.intersects(EpollFlags::EPOLLOUT | failed);
        side.peer_shut |= flags.contains(EpollFlags::EPOLLRDHUP);
        side.closing |= urgent || flags.intersects(failed);
        if backend && conn.connecting.is_some() {
            if flags.intersects(failed) {
                self.retry(index);
                return;
            }
            if flags.contains(EpollFlags::EPOLLOUT) {
                conn.connecting = None;
            }
        }
        self.run_conn(index, generation);
    }

    /// Steps a connection both ways and acts on the outcome.
    fn run_conn(&mut self, index: u32, generation: u32) {
        let slot = &mut self.slots[index as usize];
        if slot.generation & GEN_MASK != generation & GEN_MASK {
            return;
        }
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        match conn.step() {
            Next::Wait => {}
            Next::Again => self.again.push((index, generation)),
            Next::Retry => self.retry(index),
            Next::Close => self.close(index),
        }
    }

    /// The endpoint refused, failed or timed out the connect: mark it down and try
    /// another one with what the client has sent so far.
    fn retry(&mut self, index: u32) {
        let Some(mut conn) = self.slots[index as usize].conn.take() else {
            return;
        };
        let reconnected = self.reconnect(index, &mut conn);
        self.slots[index as usize].conn = Some(conn);
        match reconnected {
            Some(generation) => self.connecting(index, generation),
            None => self.close(index),
        }
    }

    /// Connects `conn` (in slot `index`) to the next endpoint: the slot's new generation,
    /// or `None` when none is left to try.
    fn reconnect(&mut self, index: u32, conn: &mut Conn) -> Option<u32> {
        let c = conn.connecting.as_mut()?;
        let (table, client) = (&conn.port.table, conn.peer.ip());
        let next = c.skip(table, client, &conn.active.0)?;
        let (backend, outbound, write_first) = c.connect(table, client, next)?;
        // Counted on the new endpoint, no longer on the old.
        conn.active = Active::new(backend);
        // A new generation, so that reports about the old socket still in this batch are
        // not taken for the new one's.
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        self.watch(index, generation, &conn.client.socket, &outbound, false)
            .ok()?;
        conn.backend = Side::new(outbound, false, write_first);
        conn.up.new_destination();
        // The client may have had news meanwhile: look again.
        conn.client.readable = true;
        Some(generation)
    }

    fn close(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let Some(conn) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        if conn.up.total > 0 && conn.down.total == 0 && conn.connecting.is_none() {
            tracing::debug!(endpoint = %conn.active.0.addr, sent = conn.up.total, "endpoint closed without answering");
        }
        conn.port
            .spliced
            .fetch_add(conn.up.spliced + conn.down.spliced, Ordering::Relaxed);
        conn.up.release();
        conn.down.release();
        // Dropping the sockets closes them, which also takes them out of the epoll set.
    }

    /// Watches paused listeners again once their pause is over.
    fn resume(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.paused.drain(..).partition(|p| p.0 <= now);
        self.paused = later;
        for (_, index, id) in due {
            if let Some(Some((i, socket, _))) = self.listeners.get(index)
                && *i == id
                && let Err(e) = self.watch_listener(index, socket)
            {
                tracing::warn!(error = %e, "cannot watch a service listener again");
            }
        }
    }

    /// Adds a Service port's shared listener to this thread's epoll set: level-triggered,
    /// and only one waiting thread woken per new connection.
    fn watch_listener(&self, index: usize, socket: &Socket) -> nix::Result<()> {
        let ev = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
            LISTENER | index as u64,
        );
        self.epoll.add(socket, ev)
    }

    /// Retries connects past their deadline, and drops the deadlines of connects that
    /// have completed (so that an idle thread does not wake for them).
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, index, generation)) = self.deadlines.front() {
            let slot = &self.slots[index as usize];
            let pending = slot.generation & GEN_MASK == generation & GEN_MASK
                && slot.conn.as_ref().is_some_and(|c| c.connecting.is_some());
            if pending && at > now {
                break;
            }
            self.deadlines.pop_front();
            if pending {
                tracing::debug!("connect timed out");
                self.retry(index);
            }
        }
    }
}

impl Conn {
    fn step(&mut self) -> Next {
        let mut again = false;
        if !self.up_ended {
            match forward::step(&mut self.client, &mut self.backend, &mut self.up, BUDGET) {
                Ok(flow) => {
                    if self.connecting.is_some() && self.up.total > 0 && self.up.pending() == 0 {
                        // A write went through: the connect has completed.
                        self.connecting = None;
                    }
                    match flow {
                        Flow::Blocked => {}
                        Flow::Budget => again = true,
                        Flow::Ended => self.up_ended = true,
                    }
                }
                // Writing to an endpoint still connecting fails when the connect does.
                Err(StepError::Write(_)) if self.connecting.is_some() => return Next::Retry,
                Err(e) => return self.failed(&e),
            }
        }
        if self.connecting.is_some() {
            // Nothing comes back, and nothing may be shut, before the connect completes.
            return if again { Next::Again } else { Next::Wait };
        }
        if self.up_ended && !self.backend_shut {
            if self.down_ended {
                // Both ways are done: closing sends the FIN.
                return Next::Close;
            }
            let _ = self.backend.socket.shutdown(Shutdown::Write);
            self.backend_shut = true;
        }
        if !self.down_ended {
            match forward::step(&mut self.backend, &mut self.client, &mut self.down, BUDGET) {
                Ok(Flow::Blocked) => {}
                Ok(Flow::Budget) => again = true,
                Ok(Flow::Ended) => {
                    self.down_ended = true;
                    if self.up_ended {
                        return Next::Close;
                    }
                    let _ = self.client.socket.shutdown(Shutdown::Write);
                }
                Err(e) => return self.failed(&e),
            }
        }
        if again { Next::Again } else { Next::Wait }
    }

    fn failed(&self, e: &StepError) -> Next {
        tracing::debug!(endpoint = %self.active.0.addr, error = %e, "forwarding ended with an error");
        Next::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// An echo server that shuts its side once the client has.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        addr
    }

    async fn wait_for(what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Through a forwarding thread to an echo server, over real loopback sockets: 8 MiB
    /// come back intact after the client half-closes, spliced in `Auto` and copied in
    /// `Off`, and the connection is closed once both ways have ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_transfers_arrive_intact_spliced_or_copied() {
        let workers = Workers::start(1).unwrap();
        let echo = echo().await;
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for mode in [Splice::Auto, Splice::Off] {
            let table = Table::new();
            table.update(&[echo], false);
            let port = ServicePort::new(table, None, mode, 16);
            let l = workers.listen(any_port(), port.clone()).unwrap();
            let front = l.addr;
            let mut client = connect_when_listening(front).await;
            let (mut r, mut w) = client.split();
            let send = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let ((), n) = tokio::join!(send, r.read_to_end(&mut back));
            n.unwrap();
            assert!(
                back == data,
                "{mode:?}: {} bytes back of {}",
                back.len(),
                data.len()
            );
            wait_for("the connection closes", || port.open_connections() == 0).await;
            let spliced = port.spliced.load(Ordering::Relaxed);
            match mode {
                Splice::Auto => assert!(spliced > data.len() as u64, "{spliced}"),
                Splice::Off => assert_eq!(spliced, 0),
            }
            workers.unlisten(l);
        }
    }

    #[test]
    fn a_thread_keeps_what_it_accepts_until_it_is_spread_more_than_the_others() {
        let loads = |l: &[usize]| Loads(l.iter().map(|&n| Load(AtomicUsize::new(n))).collect());
        assert_eq!(loads(&[0, 0]).place(0), 0);
        assert_eq!(loads(&[SPREAD, 0]).place(0), 0);
        assert_eq!(loads(&[SPREAD + 1, 0]).place(0), 1);
        assert_eq!(loads(&[SPREAD + 1, 1]).place(0), 0);
        assert_eq!(loads(&[9, 4, 1]).place(0), 2);
        assert_eq!(loads(&[9, 4, 1]).place(2), 2);
        // A stopped thread is never the least busy.
        assert_eq!(loads(&[SPREAD + 5, GONE]).place(0), 0);
    }

    /// Long-lived connections arriving one after another (the kernel wakes the same idle
    /// thread for each) end up spread over both threads, and are uncounted as they close.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_lived_connections_are_spread_over_the_threads() {
        let workers = Workers::start(2).unwrap();
        let table = Table::new();
        table.update(&[echo().await], false);
        let l = workers
            .listen(any_port(), ServicePort::new(table, None, Splice::Off, 100))
            .unwrap();
        let mut held = Vec::new();
        for i in 0..40u8 {
            let mut c = connect_when_listening(l.addr).await;
            c.write_all(&[i]).await.unwrap();
            let mut b = [0];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
            held.push(c);
        }
        let loads = workers.loads();
        assert_eq!(loads.iter().sum::<usize>(), 40, "{loads:?}");
        assert!(loads.iter().all(|&n| n + SPREAD >= 20), "{loads:?}");
        drop(held);
        wait_for("the connections are uncounted", || {
            workers.loads().iter().all(|&n| n == 0)
        })
        .await;
    }

    async fn connect_when_listening(addr: SocketAddr) -> TcpStream {
        let start = Instant::now();
        loop {
            match TcpStream::connect(addr).await {
                Ok(s) => return s,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(5), "{addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// An endpoint whose accept queue is full never answers the connect: a client that
    /// resets meanwhile does not count against the endpoint, and one that waits is moved
    /// to the next endpoint after `CONNECT_TIMEOUT`, with what it sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connects_that_hang_time_out_and_client_resets_do_not_blame_the_endpoint() {
        let workers = Workers::start(1).unwrap();
        let echo = echo().await;
        let full = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let full_addr = free_addr();
        full.bind(&full_addr.into()).unwrap();
        full.listen(0).unwrap();
        // Fill the accept queue; later SYNs are dropped.
        let fillers: Vec<Socket> = (0..4)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&full_addr.into());
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let table = Table::new();
        table.update(&[full_addr], false);
        let port = ServicePort::new(table.clone(), None, Splice::Auto, 64);
        let l = workers.listen(any_port(), port.clone()).unwrap();
        let front = l.addr;
        let down = |t: &Table| {
            t.backends.read().unwrap()[0]
                .down_until
                .load(Ordering::Relaxed)
        };

        // A client that resets while the connect hangs.
        let c = connect_when_listening(front).await.into_std().unwrap();
        let c = Socket::from(c);
        c.set_linger(Some(Duration::ZERO)).unwrap();
        wait_for("the connection to be admitted", || {
            port.open_connections() == 1
        })
        .await;
        drop(c);
        wait_for("the reset connection closes", || {
            port.open_connections() == 0
        })
        .await;
        assert_eq!(
            down(&table),
            0,
            "a client's reset is not the endpoint's fault"
        );

        // A client that waits: after the connect timeout, the echo endpoint answers.
        table.update(&[full_addr, echo], false);
        let mut waited = None;
        for i in 0..4 {
            let start = Instant::now();
            let mut c = connect_when_listening(front).await;
            let msg = format!("still there {i}");
            c.write_all(msg.as_bytes()).await.unwrap();
            c.shutdown().await.unwrap();
            let mut back = String::new();
            tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut back))
                .await
                .expect("the connection is answered")
                .unwrap();
            assert_eq!(back, msg);
            if start.elapsed() >= CONNECT_TIMEOUT {
                waited = Some(start.elapsed());
            }
        }
        assert!(
            waited.is_some(),
            "one connection went to the hanging endpoint first"
        );
        assert!(
            down(&table) > 0,
            "the endpoint that timed out is marked down"
        );
        drop(fillers);
    }

    /// A client that has sent everything (FIN) and then resets, while the endpoint keeps
    /// quiet: the connection is closed at once, not when the endpoint next speaks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_after_the_clients_fin_closes_the_connection() {
        let workers = Workers::start(1).unwrap();
        let quiet = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let quiet_addr = quiet.local_addr().unwrap();
        let (got_eof, mut eof) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let (mut s, _) = quiet.accept().await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            got_eof.send(buf).await.unwrap();
            // Holds the connection, saying nothing.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let table = Table::new();
        table.update(&[quiet_addr], false);
        let port = ServicePort::new(table, None, Splice::Auto, 16);
        let l = workers.listen(any_port(), port.clone()).unwrap();
        let mut c = connect_when_listening(l.addr).await;
        c.write_all(b"request").await.unwrap();
        c.shutdown().await.unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), eof.recv())
            .await
            .expect("the endpoint sees the client's FIN")
            .unwrap();
        assert_eq!(sent, b"request");
        assert_eq!(port.open_connections(), 1);
        let c = Socket::from(c.into_std().unwrap());
        c.set_linger(Some(Duration::ZERO)).unwrap();
        drop(c);
        wait_for("the reset connection to close", || {
            port.open_connections() == 0
        })
        .await;
    }

    /// An endpoint sends 1 MiB, then TCP urgent data and more bytes, all queued before
    /// the balancer reads past the first bytes (the client reads late): everything but
    /// the urgent byte arrives, in order. Spliced with the endpoint's FIN after it (a
    /// splice stops at the urgent mark and then says 0), and copied with the connection
    /// left open (a read stops short at the mark although more is queued).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn urgent_data_neither_stalls_nor_cuts_the_stream() {
        let workers = Workers::start(1).unwrap();
        let filler: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        for (mode, fin) in [(Splice::Auto, true), (Splice::Off, false)] {
            let sender = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let sender_addr = sender.local_addr().unwrap();
            let sent = filler.clone();
            std::thread::spawn(move || {
                let (s, _) = sender.accept().unwrap();
                let s = Socket::from(s);
                let mut w = &s;
                std::io::Write::write_all(&mut w, &sent).unwrap();
                std::io::Write::write_all(&mut w, b"abc").unwrap();
                s.send_out_of_band(b"!").unwrap();
                std::io::Write::write_all(&mut w, b"def").unwrap();
                if !fin {
                    std::thread::sleep(Duration::from_secs(10));
                }
            });
            let table = Table::new();
            table.update(&[sender_addr], false);
            let port = ServicePort::new(table, None, mode, 16);
            let l = workers.listen(any_port(), port.clone()).unwrap();
            let mut c = connect_when_listening(l.addr).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut want = filler.clone();
            want.extend_from_slice(b"abcdef");
            let mut got = vec![0u8; want.len()];
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
                .await
                .unwrap_or_else(|_| panic!("{mode:?}: the stream stalls at the urgent mark"))
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert!(got == want, "{mode:?}: the bytes arrive in order");
            if fin {
                let mut rest = Vec::new();
                c.read_to_end(&mut rest).await.unwrap();
                assert!(
                    rest.is_empty(),
                    "{mode:?}: {} bytes after the end",
                    rest.len()
                );
                drop(c);
                wait_for("the connection closes", || port.open_connections() == 0).await;
                assert!(
                    port.spliced.load(Ordering::Relaxed) > 0,
                    "the filler went through the pipe"
                );
            }
            workers.unlisten(l);
        }
    }

    /// An endpoint that refuses is skipped and the bytes the client sent meanwhile go to
    /// the next one; an endpoint that speaks first is heard before the client says
    /// anything; beyond the bound, connections are refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_endpoints_are_retried_servers_speak_first_and_the_bound_holds() {
        let workers = Workers::start(1).unwrap();
        let echo = echo().await;
        let refusing = free_addr();
        let table = Table::new();
        table.update(&[refusing, echo], false);
        let port = ServicePort::new(table.clone(), None, Splice::Auto, 64);
        let l = workers.listen(any_port(), port.clone()).unwrap();
        let front = l.addr;
        for i in 0..6 {
            let mut c = connect_when_listening(front).await;
            let msg = format!("hello {i}");
            c.write_all(msg.as_bytes()).await.unwrap();
            c.shutdown().await.unwrap();
            let mut back = String::new();
            c.read_to_string(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
        let down = table
            .backends
            .read()
            .unwrap()
            .iter()
            .find(|b| b.addr == refusing)
            .unwrap()
            .down_until
            .load(Ordering::Relaxed);
        assert!(down > 0, "the refusing endpoint is marked down");

        // A server that greets first.
        let greeter = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let greeter_addr = greeter.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = greeter.accept().await.unwrap();
                tokio::spawn(async move {
                    s.write_all(b"220 ready\r\n").await.unwrap();
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                });
            }
        });
        let table = Table::new();
        table.update(&[greeter_addr], false);
        let port = ServicePort::new(table, None, Splice::Auto, 1);
        let g = workers.listen(any_port(), port.clone()).unwrap();
        let front = g.addr;
        let mut first = connect_when_listening(front).await;
        let mut buf = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), first.read_exact(&mut buf))
            .await
            .expect("the greeting arrives")
            .unwrap();
        assert_eq!(&buf, b"220 ready\r\n");
        // The bound is one connection: a second one is closed unanswered.
        let mut second = TcpStream::connect(front).await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut rest))
            .await
            .expect("the refused connection is closed");
        assert!(n.is_err() || rest.is_empty(), "{rest:?}");
        assert_eq!(port.open_connections(), 1);
        drop(first);
        wait_for("the first connection closes", || {
            port.open_connections() == 0
        })
        .await;
    }
}
