//! Just enough HTTP/1.x for one endpoint: the request head is parsed from a bounded buffer
//! into a [`Route`], and a response is one `Connection: close` message.

/// The largest request head accepted, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;

/// The path served.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The head is not complete yet: read more.
    Incomplete,
    /// `GET /metrics` (`head`: a `HEAD` request, headers only).
    Metrics {
        /// Whether only the headers are wanted.
        head: bool,
    },
    /// A well-formed request for another path.
    NotFound,
    /// A well-formed request with another method.
    MethodNotAllowed,
    /// Not an HTTP/1.x request head.
    BadRequest,
    /// The head is larger than [`MAX_REQUEST`].
    TooLarge,
}

/// The end of the request head (the empty line), if it has arrived: the offset just past it.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i.saturating_add(4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i.saturating_add(2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `s` is an HTTP token (a method name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Routes the bytes received so far.
#[must_use]
pub fn route(buf: &[u8]) -> Route {
    let Some(end) = head_end(buf) else {
        if buf.len() >= MAX_REQUEST {
            return Route::TooLarge;
        }
        // A first line that is already wrong need not wait for the rest.
        if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            if parse_request_line(buf.get(..nl).unwrap_or_default()).is_none() {
                return Route::BadRequest;
            }
        }
        return Route::Incomplete;
    };
    if end > MAX_REQUEST {
        return Route::TooLarge;
    }
    let head = buf.get(..end).unwrap_or_default();
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let Some((method, target)) = lines.next().and_then(|l| parse_request_line(l.as_bytes())) else {
        return Route::BadRequest;
    };
    // Header lines: `name: value`, no control characters.
    for line in lines.filter(|l| !l.is_empty()) {
        let well_formed = line.split_once(':').is_some_and(|(name, _)| is_token(name))
            && !line.bytes().any(|b| b.is_ascii_control() && b != b'\t');
        if !well_formed {
            return Route::BadRequest;
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match (method, path == METRICS_PATH) {
        ("GET", true) => Route::Metrics { head: false },
        ("HEAD", true) => Route::Metrics { head: true },
        (_, true) => Route::MethodNotAllowed,
        (_, false) => Route::NotFound,
    }
}

/// `METHOD SP TARGET SP HTTP/1.x`: the method and the target (an origin-form path).
fn parse_request_line(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !is_token(method) {
        return None;
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return None;
    }
    Some((method, target))
}

/// The status line and body of a route that is not served.
#[must_use]
pub fn status_of(route: Route) -> (u16, &'static str) {
    match route {
        Route::Metrics { .. } => (200, "OK"),
        Route::NotFound => (404, "Not Found"),
        Route::MethodNotAllowed => (405, "Method Not Allowed"),
        Route::BadRequest | Route::Incomplete => (400, "Bad Request"),
        Route::TooLarge => (431, "Request Header Fields Too Large"),
    }
}

/// A complete response with `Connection: close`; `head`: headers only (the length is still
/// the body's).
#[must_use]
pub fn response(code: u16, reason: &str, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(body);
    }
    out.into_bytes()
}

/// The response to a route that is not [`Route::Metrics`].
#[must_use]
pub fn error_response(route: Route) -> Vec<u8> {
    let (code, reason) = status_of(route);
    response(
        code,
        reason,
        "text/plain; charset=utf-8",
        &format!("{code} {reason}\n"),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_table() {
        let big_header = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        let long_no_end = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST));
        let cases: &[(&[u8], Route)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: node:9100\r\nUser-Agent: Prometheus/2.45\r\nAccept: text/plain\r\n\r\n",
                Route::Metrics { head: false },
            ),
            (b"GET /metrics HTTP/1.0\r\n\r\n", Route::Metrics { head: false }),
            (b"GET /metrics?x=1 HTTP/1.1\n\n", Route::Metrics { head: false }),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", Route::Metrics { head: true }),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metrics/ HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /../etc/passwd HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Route::MethodNotAllowed),
            (b"DELETE /x HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metrics HTTP/1.1\r\n", Route::Incomplete),
            (b"GET /met", Route::Incomplete),
            (b"", Route::Incomplete),
            (b"GET /metrics HTTP/2.0\r\n\r\n", Route::BadRequest),
            (b"GET /metrics\r\n\r\n", Route::BadRequest),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"GET http://x/metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", Route::BadRequest),
            (b"hello\r\n", Route::BadRequest),
            (b"G\xffT /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", Route::BadRequest),
            (b"GET /metrics HTTP/1.1\r\nX: a\x00b\r\n\r\n", Route::BadRequest),
            (big_header.as_bytes(), Route::TooLarge),
            (long_no_end.as_bytes(), Route::TooLarge),
        ];
        for (req, want) in cases {
            assert_eq!(route(req), *want, "{:?}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn responses() {
        let r = response(200, "OK", CONTENT_TYPE, "a 1\n", false);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let r = String::from_utf8(response(200, "OK", CONTENT_TYPE, "a 1\n", true)).unwrap();
        assert!(r.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let r = String::from_utf8(error_response(Route::NotFound)).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.ends_with("\r\n\r\n404 Not Found\n")
        );
        let r = String::from_utf8(error_response(Route::MethodNotAllowed)).unwrap();
        assert!(r.contains("\r\nAllow: GET, HEAD\r\n"));
        let r = String::from_utf8(error_response(Route::TooLarge)).unwrap();
        assert!(r.starts_with("HTTP/1.1 431 "));
        let r = String::from_utf8(error_response(Route::BadRequest)).unwrap();
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
}
