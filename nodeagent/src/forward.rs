//! Moving a proxied connection's bytes between its two sockets.
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
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use socket2::Socket;
use tokio::io::unix::AsyncFd;

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
struct Hop {
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    pipe: Option<Pipe>,
    in_pipe: usize,
    splice: Splice,
    /// A read has filled the buffer: this direction carries a bulk transfer.
    bulk: bool,
    /// Bytes that went through the pipe.
    spliced: u64,
}

impl Hop {
    fn new(splice: Splice) -> Hop {
        Hop {
            buffer: take_buffer(),
            start: 0,
            end: 0,
            pipe: None,
            in_pipe: 0,
            splice,
            bulk: false,
            spliced: 0,
        }
    }

    fn pending(&self) -> usize {
        self.end - self.start + self.in_pipe
    }

    /// Reads from `src` into the pipe (once splicing) or the buffer: the byte count, and
    /// whether `src` is known to be drained.
    fn fill(&mut self, src: &Socket) -> io::Result<(usize, bool)> {
        if let Some(pipe) = &self.pipe {
            let n = splice(
                src,
                None,
                &pipe.write,
                None,
                SPLICE_CHUNK,
                SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
            )?;
            self.in_pipe = n;
            // A short splice may only mean the pipe ran out of slots.
            return Ok((n, false));
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

    /// Writes pending bytes to `dst`, buffered ones first.
    fn drain(&mut self, dst: &Socket) -> io::Result<usize> {
        if self.start < self.end {
            let n = (&*dst).write(&self.buffer[self.start..self.end])?;
            self.start += n;
            return Ok(n);
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
        self.in_pipe -= n;
        self.spliced += n as u64;
        Ok(n)
    }

    /// Returns the buffer, and the pipe if it is empty, to the pool.
    fn release(self) {
        give_buffer(self.buffer);
        if let Some(p) = self.pipe
            && self.in_pipe == 0
        {
            give_pipe(p);
        }
    }
}

/// Moves bytes from `src` to `dst` until `src` ends (then shuts `dst` for writing).
/// `eager`: the first read is tried before waiting for readiness (a client's request is
/// usually there by the time the endpoint has accepted).
async fn pump(
    src: &AsyncFd<Socket>,
    dst: &AsyncFd<Socket>,
    hop: &mut Hop,
    mut eager: bool,
) -> io::Result<u64> {
    let mut total = 0u64;
    let mut nodelay = false;
    loop {
        let first = if std::mem::take(&mut eager) {
            match hop.fill(src.get_ref()) {
                Ok((n, _)) => Some(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let n = if let Some(n) = first {
            n
        } else {
            loop {
                let mut ready = src.readable().await?;
                match ready.try_io(|s| hop.fill(s.get_ref())) {
                    Ok(Ok((n, drained))) => {
                        // A short read empties the socket's queue: wait for the next edge
                        // instead of reading again only to be told to wait.
                        if drained && n > 0 {
                            ready.clear_ready();
                        }
                        break n;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
        };
        if n == 0 {
            let _ = dst.get_ref().shutdown(Shutdown::Write);
            return Ok(total);
        }
        total += n as u64;
        if hop.bulk && !nodelay {
            // A bulk transfer goes out in pieces of whatever arrived: without this,
            // Nagle holds a short last piece until the previous ones are acknowledged,
            // and a delayed ACK stalls it ~40 ms. Small exchanges leave Nagle on (each
            // goes out in one write) and skip the system call.
            let _ = dst.get_ref().set_tcp_nodelay(true);
            nodelay = true;
        }
        while hop.pending() > 0 {
            // Straight away first: a socket's send buffer almost always has room, and a
            // just-registered socket has not been reported writable yet.
            match hop.drain(dst.get_ref()) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let mut ready = dst.writable().await?;
            match ready.try_io(|s| hop.drain(s.get_ref())) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// What a forwarded connection moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Bytes from `a` to `b`, and back.
    pub up: u64,
    pub down: u64,
    /// Of those, the bytes that went through a pipe.
    pub spliced: u64,
}

/// Forwards between `a` and `b` in both directions until both have ended or one fails.
pub async fn bidirectional(
    a: &AsyncFd<Socket>,
    b: &AsyncFd<Socket>,
    splice: Splice,
) -> io::Result<Moved> {
    let (mut up, mut down) = (Hop::new(splice), Hop::new(splice));
    let r = tokio::try_join!(pump(a, b, &mut up, true), pump(b, a, &mut down, false));
    let spliced = up.spliced + down.spliced;
    up.release();
    down.release();
    let (up, down) = r?;
    Ok(Moved { up, down, spliced })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client, through `bidirectional`, to an echo server over real loopback sockets:
    /// 8 MiB come back intact, spliced in `Auto` and copied in `Off`.
    #[tokio::test(flavor = "current_thread")]
    async fn bulk_transfers_arrive_intact_spliced_or_copied() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for mode in [Splice::Auto, Splice::Off] {
            let mut client = tokio::net::TcpStream::connect(front_addr).await.unwrap();
            let (inbound, _) = front.accept().unwrap();
            inbound.set_nonblocking(true).unwrap();
            let inbound = crate::proxy::register(Socket::from(inbound)).unwrap();
            let outbound = crate::proxy::connect(echo_addr).await.unwrap();
            let proxy =
                tokio::spawn(
                    async move { bidirectional(&inbound, &outbound, mode).await.unwrap() },
                );
            let (mut r, mut w) = client.split();
            let send = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let recv = r.read_to_end(&mut back);
            let ((), n) = tokio::join!(send, recv);
            n.unwrap();
            assert!(
                back == data,
                "{mode:?}: {} bytes back of {}",
                back.len(),
                data.len()
            );
            let moved = proxy.await.unwrap();
            let n = data.len() as u64;
            assert_eq!((moved.up, moved.down), (n, n));
            match mode {
                Splice::Auto => assert!(moved.spliced > n, "{moved:?}"),
                Splice::Off => assert_eq!(moved.spliced, 0),
            }
        }
    }
}
