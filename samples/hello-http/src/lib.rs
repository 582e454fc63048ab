//! hello-http: a `wasi:http/proxy` component.
//!
//! - `GET /healthz` → `ok`, or 503 while the file `/content/unhealthy` exists
//! - `GET /readyz` → `ready`, or 503 while the file `/content/not-ready` exists (the files
//!   let probe tests and demos flip the answers from outside, through a volume)
//! - `GET /busy?ms=N` → spins the CPU for N milliseconds, then answers (for limit tests
//!   and CPU-bound load)
//! - `GET /fetch?url=http://host:port/path` → fetches the URL with an outgoing wasi:http
//!   request and answers with its body (502 with the error when outbound is not allowed)
//! - `GET /tcp?addr=host:port` → sends `GET /` over a plain TCP socket (`std::net`, the
//!   host name resolved with wasi:sockets ip-name-lookup) and answers with the raw reply
//! - anything else → its pod name (`POD_NAME`), the `GREETING` env value and the content of
//!   `/content/greeting.txt` (a mounted volume), one per line.

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Hello);

struct Hello;

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"text/plain; charset=utf-8");
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(outgoing) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(mut stream) = outgoing.write() {
        // The blocking writer splits large bodies into permitted chunks.
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        // One access-log line per request, to stdout (the pod's log).
        println!("GET {path}");
        if path == "/healthz" || path.starts_with("/healthz?") {
            if std::fs::metadata("/content/unhealthy").is_ok() {
                return respond(out, 503, b"unhealthy\n");
            }
            return respond(out, 200, b"ok\n");
        }
        if path == "/readyz" || path.starts_with("/readyz?") {
            if std::fs::metadata("/content/not-ready").is_ok() {
                return respond(out, 503, b"not ready\n");
            }
            return respond(out, 200, b"ready\n");
        }
        if let Some(q) = path.strip_prefix("/busy?ms=") {
            let ms: u64 = q.parse().unwrap_or(0);
            let start = wasip2::clocks::monotonic_clock::now();
            let mut x = 0u64;
            while wasip2::clocks::monotonic_clock::now() - start < ms * 1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            return respond(out, 200, format!("busy {ms} ms ({x})\n").as_bytes());
        }
        if let Some(url) = path.strip_prefix("/fetch?url=") {
            return match fetch(url) {
                Ok(body) => respond(out, 200, &body),
                Err(e) => respond(out, 502, format!("outbound request failed: {e}\n").as_bytes()),
            };
        }
        if let Some(addr) = path.strip_prefix("/tcp?addr=") {
            return match tcp_get(addr) {
                Ok(reply) => respond(out, 200, &reply),
                Err(e) => respond(out, 502, format!("tcp request failed: {e}\n").as_bytes()),
            };
        }
        let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "<unset>".into());
        let content = std::fs::read_to_string("/content/greeting.txt")
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|e| format!("<unreadable: {e}>"));
        let body = format!("hello from {pod}\ngreeting: {greeting}\ncontent: {content}\n");
        respond(out, 200, body.as_bytes());
    }
}

/// `GET /` over a TCP connection to `addr` (`host:port`); the whole reply.
fn tcp_get(addr: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: tcp\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("sending: {e}"))?;
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).map_err(|e| format!("reading: {e}"))?;
    Ok(reply)
}

/// GET `url` (`http://authority/path`) with wasi:http's outgoing handler.
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).map_err(|_| "bad scheme")?;
    req.set_authority(Some(authority)).map_err(|_| "bad authority")?;
    req.set_path_with_query(Some(path)).map_err(|_| "bad path")?;
    let future = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let resp = future
        .get()
        .ok_or("no response")?
        .map_err(|_| "response already taken")?
        .map_err(|e| format!("{e:?}"))?;
    let body = resp.consume().map_err(|_| "no body")?;
    let stream = body.stream().map_err(|_| "no body stream")?;
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    Ok(data)
}
