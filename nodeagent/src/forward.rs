//! Moving a proxied connection's bytes between its two sockets, one step at a time
//! (the forwarding threads in `workers` call [`step`] when epoll reports a socket).
//!
//! Each direction starts by copying through a small buffer; as soon as one read fills
//! the buffer (a bulk transfer, not a request/response exchange), it switches to
//! splice(2) through a pipe and the bytes stay in the kernel from then on (HAProxy's
//! `splice-auto`). Small messages stay on the copy path because there it is cheaper: a
//! short read shows the socket is drained and saves the next read, which a splice
//! cannot show (it also stops at the pipe's slot count), so splicing small messages
//! costs one more system call each.
//!
//! Buffers and pipes come from a per-thread pool and go back to it when the connection
//! ends, so forwarding allocates neither per connection.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use socket2::Socket;

/// Bytes buffered per direction on the copy path.
pub const COPY_BUFFER: usize = 4096;
/// Bytes asked of one splice (a pipe holds 64 KiB by default).
const SPLICE_CHUNK: usize = 64 * 1024;
/// Pooled buffers and pipes kept per thread.
const POOL_MAX: usize = 1024;

/// Whether directions may switch to splice(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splice {
    /// Once a read fills the copy buffer.
    Auto,
    /// Never: always copy through the buffer.
    Off,
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; COPY_BUFFER].into_boxed_slice())
}

fn give_buffer(b: Box<[u8]>) {
    BUFFERS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    Ok(Pipe { read, write })
}

fn give_pipe(p: Pipe) {
    PIPES.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(p);
        }
    });
}

/// One direction's staging area: bytes read from the source and not yet written on,
/// in the buffer (`start..end`) or in the pipe (`in_pipe`). A fill only happens once
/// both are empty, so bytes leave in the order they came.
pub(crate) struct Hop {
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    pipe: Option<Pipe>,
    in_pipe: usize,
    splice: Splice,
    /// A read has filled the buffer: this direction carries a bulk transfer.
    bulk: bool,
    /// Bytes that went through the pipe.
    pub spliced: u64,
    /// Bytes read from the source.
    pub total: u64,
    /// `TCP_NODELAY` has been set on the destination.
    nodelay: bool,
}

impl Hop {
    pub fn new(splice: Splice) -> Hop {
        Hop {
            buffer: take_buffer(),
            start: 0,
            end: 0,
            pipe: None,
            in_pipe: 0,
            splice,
            bulk: false,
            spliced: 0,
            total: 0,
            nodelay: false,
        }
    }

    pub fn pending(&self) -> usize {
        self.end - self.start + self.in_pipe
    }

    /// Reads from `src` into the pipe (once splicing) or the buffer: the byte count, and
    /// whether `src` is known to be drained.
    fn fill(&mut self, src: &Socket) -> io::Result<(usize, bool)> {
        if self.splice == Splice::Off
            && let Some(p) = self.pipe.take()
        {
            // Splicing was stopped (urgent data); the pipe is empty, as fills only
            // happen once everything pending has gone.
            give_pipe(p);
        }
        if let Some(pipe) = &self.pipe {
            let n = splice(
                src,
                None,
                &pipe.write,
                None,
                SPLICE_CHUNK,
                SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
            )?;
            if n > 0 {
                self.in_pipe = n;
                // A short splice may only mean the pipe ran out of slots.
                return Ok((n, false));
            }
            // Nothing spliced: the end, or TCP urgent data, whose mark a splice cannot
            // get past (it stops there, and says 0 once the FIN is in too). A read
            // tells which, and this direction copies from now on.
            self.splice = Splice::Off;
            if let Some(p) = self.pipe.take() {
                give_pipe(p);
            }
        }
        let n = (&*src).read(&mut self.buffer)?;
        (self.start, self.end) = (0, n);
        let full = n == self.buffer.len();
        self.bulk |= full;
        if full && self.splice == Splice::Auto {
            // A bulk transfer: later reads go through a pipe.
            match take_pipe() {
                Ok(p) => self.pipe = Some(p),
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for splice; copying");
                    self.splice = Splice::Off;
                }
            }
        }
        Ok((n, !full))
    }

    /// Writes pending bytes to `dst`, buffered ones first: whether the socket took all
    /// it was offered (a short write means its send buffer is full).
    fn drain(&mut self, dst: &Socket) -> io::Result<bool> {
        if self.start < self.end {
            let want = self.end - self.start;
            let n = (&*dst).write(&self.buffer[self.start..self.end])?;
            self.start += n;
            return Ok(n == want);
        }
        let pipe = self.pipe.as_ref().expect("pending bytes are in the pipe");
        let n = splice(
            &pipe.read,
            None,
            dst,
            None,
            self.in_pipe,
            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
        )?;
        let all = n == self.in_pipe;
        self.in_pipe -= n;
        self.spliced += n as u64;
        Ok(all)
    }

    /// The source has TCP urgent data: a splice cannot get past its mark (it keeps
    /// saying "try again"), so this direction copies from now on.
    pub fn stop_splicing(&mut self) {
        self.splice = Splice::Off;
    }

    /// The destination changed (a retry): `TCP_NODELAY` is to be set on the new one.
    pub fn new_destination(&mut self) {
        self.nodelay = false;
    }

    /// Returns the buffer, and the pipe if it is empty, to the pool.
    pub fn release(self) {
        give_buffer(self.buffer);
        if let Some(p) = self.pipe
            && self.in_pipe == 0
        {
            give_pipe(p);
        }
    }
}

/// One socket of a proxied connection and what epoll last said of it (edge-triggered:
/// a flag stays set until a system call finds the socket would block).
pub(crate) struct Side {
    pub socket: Socket,
    pub readable: bool,
    pub writable: bool,
    /// A hang-up, an error or TCP urgent data has been reported: read until the socket
    /// says it would block, even after a short read (a read also stops short at the
    /// urgent mark, with more queued behind it).
    pub closing: bool,
    /// The peer's FIN has been reported: once a read comes back short, everything the
    /// peer sent has been read and the next read would only say so.
    pub peer_shut: bool,
    /// The source has nothing more to give.
    ended: bool,
}

impl Side {
    /// A socket not yet reported on, tried before waiting where `read_first` and
    /// `write_first` say (speculative I/O: a client's request is usually there by the
    /// time it is accepted, an endpoint's answer is not; a loopback connect has usually
    /// completed by the time `connect` returns, one over a network has not).
    pub fn new(socket: Socket, read_first: bool, write_first: bool) -> Side {
        Side {
            socket,
            readable: read_first,
            writable: write_first,
            closing: false,
            peer_shut: false,
            ended: false,
        }
    }
}

/// Why [`step`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Waiting for the source to be readable or the destination writable.
    Blocked,
    /// The source has ended and everything it sent has been passed on.
    Ended,
    /// `budget` reads done and more may be ready: come back after the other connections.
    Budget,
}

/// Which socket failed in a [`step`].
#[derive(Debug)]
pub(crate) enum StepError {
    /// Reading from the source.
    Read(io::Error),
    /// Writing to the destination.
    Write(io::Error),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Read(e) => write!(f, "reading: {e}"),
            StepError::Write(e) => write!(f, "writing: {e}"),
        }
    }
}

/// Moves bytes from `src` to `dst` through `hop` until one of them would block, the source
/// ends, or `budget` reads have been done.
pub(crate) fn step(
    src: &mut Side,
    dst: &mut Side,
    hop: &mut Hop,
    budget: u32,
) -> Result<Flow, StepError> {
    let mut reads = 0;
    loop {
        while hop.pending() > 0 {
            if !dst.writable {
                return Ok(Flow::Blocked);
            }
            match hop.drain(&dst.socket) {
                Ok(true) => {}
                Ok(false) => {
                    // The send buffer is full: the next write would only say so.
                    dst.writable = false;
                    return Ok(Flow::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.writable = false;
                    return Ok(Flow::Blocked);
                }
                Err(e) => return Err(StepError::Write(e)),
            }
        }
        if src.ended {
            return Ok(Flow::Ended);
        }
        if !src.readable {
            return Ok(Flow::Blocked);
        }
        if reads == budget {
            return Ok(Flow::Budget);
        }
        reads += 1;
        match hop.fill(&src.socket) {
            Ok((0, _)) => {
                src.ended = true;
                return Ok(Flow::Ended);
            }
            Ok((n, drained)) => {
                hop.total += n as u64;
                // A short read empties the socket's queue: wait for the next edge
                // instead of reading again only to be told to wait, or, once the FIN
                // was in before the read, to be told it ended.
                if drained && src.peer_shut && !src.closing {
                    src.ended = true;
                } else if drained && !src.closing {
                    src.readable = false;
                }
                if hop.bulk && !hop.nodelay {
                    // A bulk transfer goes out in pieces of whatever arrived: without
                    // this, Nagle holds a short last piece until the previous ones are
                    // acknowledged, and a delayed ACK stalls it ~40 ms. Small exchanges
                    // leave Nagle on (each goes out in one write) and skip the call.
                    let _ = dst.socket.set_tcp_nodelay(true);
                    hop.nodelay = true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                src.readable = false;
                return Ok(Flow::Blocked);
            }
            Err(e) => return Err(StepError::Read(e)),
        }
    }
}
