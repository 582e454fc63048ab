//! Guest stdout/stderr as wasi output streams writing the container log file
//! ([`wk_api::logfile`], the format every runtime shares).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
pub use wk_api::logfile::ContainerLog;
use wk_api::logfile::Lines;

/// A guest output stream of `log`, tagged `name`.
pub fn stream(log: &ContainerLog, name: &'static str) -> LogStream {
    LogStream {
        lines: Arc::new(Mutex::new(log.lines(name))),
    }
}

/// A guest output stream that splits into lines.
#[derive(Clone)]
pub struct LogStream {
    lines: Arc<Mutex<Lines>>,
}

impl LogStream {
    fn write_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.lines.lock().expect("lines lock").write(bytes)
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        // The last clone flushes an unterminated final line.
        if Arc::strong_count(&self.lines) == 1 {
            self.lines.lock().expect("lines lock").finish();
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
