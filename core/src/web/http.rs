//! A strict HTTP/1.1 request-head parser and response writer, enough for the web face: a
//! request line, header fields, `Content-Length` bodies. No chunked request bodies, no
//! obsolete line folding, no HTTP/1.0 keep-alive games: anything else is a clear 4xx/5xx.

use std::fmt;

/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The path of the request target (before `?`).
    pub path: String,
    /// The query (after `?`, without it), empty if none.
    pub query: String,
    /// Header fields in order; names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` holds `token` in its comma-separated list (case-insensitive), as
    /// `Connection: keep-alive, Upgrade` does.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The value of cookie `name` from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// The body length announced by `Content-Length` (0 without one).
    pub fn content_length(&self) -> Result<usize, HttpError> {
        let mut found: Option<usize> = None;
        for (n, v) in &self.headers {
            if n != "content-length" {
                continue;
            }
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 12 {
                return Err(HttpError::BadRequest("invalid Content-Length"));
            }
            let len: usize = v
                .parse()
                .map_err(|_| HttpError::BadRequest("invalid Content-Length"))?;
            if found.is_some_and(|f| f != len) {
                return Err(HttpError::BadRequest("conflicting Content-Length"));
            }
            found = Some(len);
        }
        Ok(found.unwrap_or(0))
    }
}

/// Why a request was refused; each maps to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400: malformed.
    BadRequest(&'static str),
    /// 404: no such path.
    NotFound,
    /// 405: the path exists, not with this method.
    MethodNotAllowed,
    /// 408: the request did not arrive in time.
    Timeout,
    /// 411: a body without a length.
    LengthRequired,
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 431: head over the limit (or too many fields).
    HeaderTooLarge,
    /// 501: something this server does not implement (chunked bodies, other versions).
    NotImplemented(&'static str),
    /// 503: the server is shutting down.
    Unavailable,
}

impl HttpError {
    /// Status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HttpError::BadRequest(_) => (400, "Bad Request"),
            HttpError::NotFound => (404, "Not Found"),
            HttpError::MethodNotAllowed => (405, "Method Not Allowed"),
            HttpError::Timeout => (408, "Request Timeout"),
            HttpError::LengthRequired => (411, "Length Required"),
            HttpError::PayloadTooLarge => (413, "Content Too Large"),
            HttpError::HeaderTooLarge => (431, "Request Header Fields Too Large"),
            HttpError::NotImplemented(_) => (501, "Not Implemented"),
            HttpError::Unavailable => (503, "Service Unavailable"),
        }
    }

    /// The response for this error (plain text, connection closed afterwards).
    pub fn response(self) -> Vec<u8> {
        let (code, reason) = self.status();
        let body = match self {
            HttpError::BadRequest(why) | HttpError::NotImplemented(why) => {
                format!("{code} {reason}: {why}\n")
            }
            _ => format!("{code} {reason}\n"),
        };
        response(
            code,
            reason,
            &[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Connection", "close"),
            ],
            body.as_bytes(),
        )
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, reason) = self.status();
        match self {
            HttpError::BadRequest(why) | HttpError::NotImplemented(why) => {
                write!(f, "{code} {reason}: {why}")
            }
            _ => write!(f, "{code} {reason}"),
        }
    }
}

impl std::error::Error for HttpError {}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete (read more, unless
/// `buf` already holds `max_head` bytes: then it is [`HttpError::HeaderTooLarge`]).
/// `Ok(Some((head, n)))`: the head took `n` bytes; the body (if any) follows.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let window = &buf[..buf.len().min(max_head)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= max_head {
            return Err(HttpError::HeaderTooLarge);
        }
        // A bare LF line ending is refused early rather than waited on forever.
        if window.contains(&b'\n') && !window.windows(2).any(|w| w == b"\r\n") {
            return Err(HttpError::BadRequest("lines must end with CRLF"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| HttpError::BadRequest("the head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(HttpError::BadRequest("malformed method"));
    }
    match version {
        "HTTP/1.1" => {}
        "HTTP/1.0" => return Err(HttpError::NotImplemented("HTTP/1.1 only")),
        _ => return Err(HttpError::BadRequest("malformed HTTP version")),
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::BadRequest(
            "the target must be an origin-form path",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(HttpError::BadRequest("obsolete line folding"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::BadRequest("malformed header field"));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(HttpError::BadRequest("malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(HttpError::BadRequest("control character in a header value"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::HeaderTooLarge);
        }
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    let head = RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    };
    if head.header("transfer-encoding").is_some() {
        return Err(HttpError::NotImplemented("Transfer-Encoding in requests"));
    }
    if head.header("host").is_none() {
        return Err(HttpError::BadRequest("no Host header"));
    }
    head.content_length()?;
    Ok(Some((head, end + 4)))
}

/// A response with `Content-Length` (none on 1xx and 204, which have no body: RFC 9110 §8.6).
pub fn response(code: u16, reason: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {code} {reason}\r\n");
    for (n, v) in headers {
        out.push_str(n);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    if code >= 200 && code != 204 {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    #[test]
    fn a_request_head_parses_with_its_length() {
        let req = b"GET /rpc?x=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nCookie: a=1; switchboard_session=\"abc\"\r\n\r\nBODY";
        let (head, n) = parse_head(req, MAX).expect("ok").expect("complete");
        assert_eq!(n, req.len() - 4);
        assert_eq!((head.method.as_str(), head.path.as_str()), ("GET", "/rpc"));
        assert_eq!(head.query, "x=1");
        assert!(head.has_token("connection", "upgrade"));
        assert_eq!(head.cookie("switchboard_session"), Some("abc"));
        assert_eq!(head.content_length(), Ok(0));
    }

    #[test]
    fn incomplete_heads_wait_and_oversized_ones_fail() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: h\r\n", MAX), Ok(None));
        let big = vec![b'a'; MAX];
        assert_eq!(parse_head(&big, MAX), Err(HttpError::HeaderTooLarge));
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many, MAX), Err(HttpError::HeaderTooLarge));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            &b"GET /\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1 x\r\nHost: h\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\nHost: h\n\n",
        ] {
            assert!(
                matches!(parse_head(bad, MAX), Err(HttpError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_head(
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                MAX
            ),
            Err(HttpError::NotImplemented(_))
        ));
    }

    #[test]
    fn responses_carry_their_length() {
        let r = response(200, "OK", &[("Content-Type", "text/plain")], b"hi");
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        let e = HttpError::PayloadTooLarge.response();
        assert!(e.starts_with(b"HTTP/1.1 413 "));
    }
}
