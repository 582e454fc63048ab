//! hello-http: a `wasi:http/proxy` component.
//!
//! - `GET /healthz` → `ok`
//! - `GET /busy?ms=N` → spins the CPU for N milliseconds, then answers (for limit tests
//!   and CPU-bound load)
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
        if path == "/healthz" || path.starts_with("/healthz?") {
            return respond(out, 200, b"ok\n");
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
        let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "<unset>".into());
        let content = std::fs::read_to_string("/content/greeting.txt")
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|e| format!("<unreadable: {e}>"));
        let body = format!("hello from {pod}\ngreeting: {greeting}\ncontent: {content}\n");
        respond(out, 200, body.as_bytes());
    }
}
