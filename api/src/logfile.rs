//! Container log files, the same for every runtime: each line of stdout/stderr is written
//! as `<RFC 3339 timestamp> <stream> <line>`, readable while it is written, and the file is
//! rotated to `<file>.1` when it passes its size cap.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

    /// Writes one whole line tagged with `stream`.
    pub fn write_line(&self, stream: &str, line: &[u8]) -> std::io::Result<()> {
        self.inner
            .lock()
            .expect("log lock")
            .write_line(stream, line)
    }

    /// Writes a line from the runtime itself (tagged `stderr`), e.g. why it stopped.
    pub fn note(&self, text: &str) {
        let _ = self.write_line("stderr", text.as_bytes());
    }

    /// A writer of `stream` that splits what it is given into lines.
    pub fn lines(&self, stream: &'static str) -> Lines {
        Lines {
            log: self.clone(),
            stream,
            partial: Vec::new(),
        }
    }
}

/// Splits a byte stream into log lines; [`Lines::finish`] writes an unterminated last one.
pub struct Lines {
    log: ContainerLog,
    stream: &'static str,
    partial: Vec<u8>,
}

/// Lines longer than this are written in pieces.
const MAX_LINE: usize = 16 * 1024;

impl Lines {
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while let Some(i) = bytes.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&bytes[..i]);
            self.log.write_line(self.stream, &self.partial)?;
            self.partial.clear();
            bytes = &bytes[i + 1..];
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() > MAX_LINE {
            self.log.write_line(self.stream, &self.partial)?;
            self.partial.clear();
        }
        Ok(())
    }

    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let _ = self.log.write_line(self.stream, &self.partial);
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_timestamped_and_rotated() {
        let dir = std::env::temp_dir().join(format!("wk-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("c.log");
        let log = ContainerLog::new(path.clone(), 1024);
        let mut out = log.lines("stdout");
        out.write(b"hello\nwor").unwrap();
        out.write(b"ld\n").unwrap();
        out.write(b"tail").unwrap();
        out.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let (ts, rest) = lines[1].split_once(' ').unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert_eq!(rest, "stdout world");
        assert!(lines[2].ends_with("stdout tail"));
        for _ in 0..100 {
            out.write(b"0123456789012345678901234567890123456789\n")
                .unwrap();
        }
        assert!(path.with_extension("log.1").exists(), "rotated");
        assert!(std::fs::metadata(&path).unwrap().len() < 2048);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
