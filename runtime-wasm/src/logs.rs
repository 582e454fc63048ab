//! Container logs: each line of stdout/stderr is written to the container's log file as
//! `<RFC 3339 timestamp> <stream> <line>`, readable while it is written, and rotated to
//! `<file>.1` when it passes its size cap.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

struct LogFile {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    max_bytes: u64,
}

impl LogFile {
    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.written = f.metadata()?.len();
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    fn write_line(&mut self, stream: &str, line: &[u8]) -> std::io::Result<()> {
        if self.written >= self.max_bytes {
            self.file = None;
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        let ts = jiff::Timestamp::now();
        let mut buf = Vec::with_capacity(line.len() + 48);
        write!(buf, "{ts:.9} {stream} ")?;
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let f = self.open()?;
        f.write_all(&buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }
}

/// One container's log, shared by its stdout and stderr streams.
#[derive(Clone)]
pub struct ContainerLog {
    inner: Arc<Mutex<LogFile>>,
}

impl ContainerLog {
    pub fn new(path: PathBuf, max_bytes: u64) -> ContainerLog {
        ContainerLog {
            inner: Arc::new(Mutex::new(LogFile {
                path,
                file: None,
                written: 0,
                max_bytes: max_bytes.max(1024),
            })),
        }
    }

    /// A stream writing lines tagged `stdout` or `stderr`.
    pub fn stream(&self, name: &'static str) -> LogStream {
        LogStream {
            log: self.clone(),
            name,
            partial: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Writes a line from the runtime itself (tagged `stderr`), e.g. why it stopped.
    pub fn note(&self, text: &str) {
        let _ = self
            .inner
            .lock()
            .expect("log lock")
            .write_line("stderr", text.as_bytes());
    }
}

/// A guest output stream that splits into lines.
#[derive(Clone)]
pub struct LogStream {
    log: ContainerLog,
    name: &'static str,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    fn write_bytes(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        let mut partial = self.partial.lock().expect("partial lock");
        let mut log = self.log.inner.lock().expect("log lock");
        while let Some(i) = bytes.iter().position(|b| *b == b'\n') {
            partial.extend_from_slice(&bytes[..i]);
            log.write_line(self.name, &partial)?;
            partial.clear();
            bytes = &bytes[i + 1..];
        }
        partial.extend_from_slice(bytes);
        // Very long lines are flushed in pieces.
        if partial.len() > 16 * 1024 {
            log.write_line(self.name, &partial)?;
            partial.clear();
        }
        Ok(())
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        // The last clone flushes an unterminated final line.
        if Arc::strong_count(&self.partial) == 1 {
            let partial = std::mem::take(&mut *self.partial.lock().expect("partial lock"));
            if !partial.is_empty() {
                let _ = self
                    .log
                    .inner
                    .lock()
                    .expect("log lock")
                    .write_line(self.name, &partial);
            }
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::format_err!(e)))
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.write_bytes(buf).map(|_| buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_timestamped_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let log = ContainerLog::new(path.clone(), 1024);
        let out = log.stream("stdout");
        out.write_bytes(b"hello\nwor").unwrap();
        out.write_bytes(b"ld\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let (ts, rest) = lines[1].split_once(' ').unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert_eq!(rest, "stdout world");
        for _ in 0..100 {
            out.write_bytes(b"0123456789012345678901234567890123456789\n")
                .unwrap();
        }
        assert!(path.with_extension("log.1").exists(), "rotated");
        assert!(std::fs::metadata(&path).unwrap().len() < 2048);
    }
}
