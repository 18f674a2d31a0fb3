//! The shim's tiny HTTP/1.1 client over a unix socket: one `POST` per connection (`Connection: close`),
//! the reply read until its framing says it is whole (`Content-Length`, `Transfer-Encoding: chunked` as
//! Go servers send large bodies) or, for a body that runs to the close, to EOF, and parsed here. std only:
//! no async runtime, no HTTP library.

use std::{
    fmt,
    io::{self, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, SockAddr, Socket, Type};

/// The largest reply the shim reads (a CNI result is a few KiB; this only bounds a runaway peer).
pub const MAX_RESPONSE: usize = 16 << 20;

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why bytes read from the peer are not a complete HTTP/1.1 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The peer closed before the reply was complete (what was missing).
    Truncated(&'static str),
    /// Not HTTP/1.x, or a framing error.
    Malformed(String),
    /// More than [`MAX_RESPONSE`] bytes.
    TooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated(what) => write!(f, "reply truncated: {what} missing"),
            ParseError::Malformed(why) => write!(f, "malformed HTTP reply: {why}"),
            ParseError::TooLarge => write!(f, "reply larger than {MAX_RESPONSE} bytes"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Why a call got no reply.
#[derive(Debug)]
pub enum CallError {
    /// No connection: nothing at the path (`NotFound`), nobody listening (`ConnectionRefused`), the
    /// connect did not complete in time (`TimedOut`), or another connect error.
    Connect(io::Error),
    /// Connected, but no complete reply came back: writing or reading failed, the peer closed early, or
    /// what it sent is not an HTTP reply.
    Exchange(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connect: {e}"),
            CallError::Exchange(e) => f.write_str(e),
        }
    }
}

/// The time limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the connect.
    pub connect: Duration,
    /// For each write of the request.
    pub write: Duration,
    /// For each read of the reply; `None` waits as long as the peer takes.
    pub read: Option<Duration>,
}

/// How long a connect to a full backlog waits before trying again.
const BACKLOG_RETRY: Duration = Duration::from_millis(5);

/// Connect to the unix socket at `path`, giving up after `timeout`.
///
/// A unix connect either completes at once or, when the listener's backlog is full (a daemon that stopped
/// accepting, or a storm), would block. The connect is non-blocking: a full backlog answers `EAGAIN` at once
/// (nothing started; unlike TCP there is no connect in progress to poll for) and the connect is tried again
/// every few milliseconds until `timeout`. No thread, so the usual call costs one `connect`.
pub fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let addr = SockAddr::unix(path)?;
    let deadline = Instant::now() + timeout;
    loop {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        match socket.connect(&addr) {
            Ok(()) => {
                socket.set_nonblocking(false)?;
                return Ok(socket.into());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "connect did not complete in {timeout:?} (the listener's backlog is full)"
                        ),
                    ));
                }
                thread::sleep(BACKLOG_RETRY.min(deadline - now));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The bytes of a `POST` of a JSON `body` to `uri`.
pub fn post_request(uri: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST {uri} HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

/// How much one read of the reply asks for (a CNI result usually fits in one).
const READ_CHUNK: usize = 16 << 10;

/// `POST` a JSON `body` to `uri` on the unix socket at `path` and read the reply ([`read_reply`]).
///
/// The write side is left open after the request: Go's `net/http` server takes a half-close for a client
/// that went away and cancels the request.
pub fn post(path: &Path, uri: &str, body: &[u8], t: Timeouts) -> Result<Response, CallError> {
    let mut stream = connect(path, t.connect).map_err(CallError::Connect)?;
    let exchange = |what: &str, e: io::Error| CallError::Exchange(format!("{what}: {e}"));
    stream
        .set_write_timeout(Some(t.write))
        .and_then(|()| stream.set_read_timeout(t.read))
        .map_err(|e| exchange("socket setup", e))?;
    stream
        .write_all(&post_request(uri, body))
        .and_then(|()| stream.flush())
        .map_err(|e| exchange("sending the request", e))?;
    let buf = read_reply(&mut stream).map_err(|e| exchange("reading the reply", e))?;
    if buf.is_empty() {
        return Err(CallError::Exchange(
            "the connection was closed without a reply".into(),
        ));
    }
    parse_response(&buf).map_err(|e| CallError::Exchange(e.to_string()))
}

/// Read a reply from `r` until it is [`whole`], the peer closes, or it passes [`MAX_RESPONSE`] bytes
/// (which [`parse_response`] then refuses).
///
/// Not waiting for the close once the reply is whole saves the shim a wake-up: a server closes after its
/// write, often on a later turn of its event loop (hundreds of microseconds on a busy node, all of it on
/// the runtime's clock).
pub fn read_reply(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let read = loop {
            match r.read(&mut buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let n = read.inspect_err(|_| buf.truncate(start))?;
        buf.truncate(start + n);
        if n == 0 || buf.len() > MAX_RESPONSE || whole(&buf) {
            return Ok(buf);
        }
    }
}

/// Whether more bytes from the peer could not change what [`parse_response`] makes of `buf`: the reply is
/// complete by its framing (`Content-Length`, chunked, or a status without a body), or it is already
/// malformed. A reply cut short, or one whose body runs to the close, is not whole before EOF.
///
/// Called after every read, so it copies nothing: the head is parsed again, the body only measured.
pub fn whole(buf: &[u8]) -> bool {
    let ended = head(buf).and_then(|(response, rest)| match framing(&response)? {
        Framing::Empty => Ok(true),
        Framing::Length(n) => Ok(rest.len() >= n),
        Framing::Chunked => chunks(rest, |_| {}).map(|()| true),
        Framing::ToClose => Ok(false),
    });
    match ended {
        Ok(ended) => ended,
        Err(ParseError::Truncated(_)) => false,
        Err(ParseError::Malformed(_) | ParseError::TooLarge) => true,
    }
}

/// Split off the next line (without its `\r\n` or `\n`); `None` when there is no line end.
fn next_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, &buf[nl + 1..]))
}

fn text(bytes: &[u8], what: &str) -> Result<String, ParseError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| ParseError::Malformed(format!("{what} is not text")))
}

/// Parse a complete reply: everything the peer sent up to its close.
///
/// Interim `1xx` replies are skipped. The body is framed by `Transfer-Encoding: chunked` (trailers
/// ignored), else by `Content-Length` (bytes after it are ignored), else it runs to the end; `204` and
/// `304` have none. A body shorter than its framing promises is [`ParseError::Truncated`].
pub fn parse_response(buf: &[u8]) -> Result<Response, ParseError> {
    let (mut response, rest) = head(buf)?;
    match framing(&response)? {
        Framing::Empty => {}
        Framing::Chunked => chunks(rest, |data| response.body.extend_from_slice(data))?,
        Framing::Length(n) if rest.len() < n => {
            return Err(ParseError::Truncated("part of the body"));
        }
        Framing::Length(n) => response.body = rest[..n].to_vec(),
        Framing::ToClose => response.body = rest.to_vec(),
    }
    Ok(response)
}

/// How a reply's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`204`, `304`).
    Empty,
    /// `Transfer-Encoding: chunked`: the zero-size chunk.
    Chunked,
    /// `Content-Length`.
    Length(usize),
    /// At the close (no framing, or another transfer coding last).
    ToClose,
}

/// The longest head (status lines and headers, interim replies included) taken: a peer that sends more
/// without ending it is not answering HTTP, and [`whole`] need not parse an ever longer head after each read.
pub const MAX_HEAD: usize = 64 << 10;

/// The final reply's status line and headers (interim `1xx` replies skipped), and the bytes after them.
fn head(buf: &[u8]) -> Result<(Response, &[u8]), ParseError> {
    match head_of(buf) {
        Err(ParseError::Truncated(_)) if buf.len() > MAX_HEAD => Err(ParseError::Malformed(
            format!("no end of the head in the first {MAX_HEAD} bytes"),
        )),
        other => other,
    }
}

fn head_of(buf: &[u8]) -> Result<(Response, &[u8]), ParseError> {
    if buf.len() > MAX_RESPONSE {
        return Err(ParseError::TooLarge);
    }
    let mut rest = buf;
    loop {
        let (status_line, after) = next_line(rest).ok_or(ParseError::Truncated("status line"))?;
        let (status, reason) = parse_status_line(&text(status_line, "the status line")?)?;
        rest = after;
        let mut headers = Vec::new();
        loop {
            let (line, after) = next_line(rest).ok_or(ParseError::Truncated("end of headers"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            headers.push(parse_header(&text(line, "a header")?)?);
        }
        let response = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) {
            continue;
        }
        return Ok((response, rest));
    }
}

fn parse_status_line(line: &str) -> Result<(u16, String), ParseError> {
    let bad = || ParseError::Malformed(format!("status line {:?}", bounded(line, 80)));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(bad());
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&status) {
        return Err(bad());
    }
    Ok((status, parts.next().unwrap_or_default().trim().to_owned()))
}

fn parse_header(line: &str) -> Result<(String, String), ParseError> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| ParseError::Malformed(format!("header {:?}", bounded(line, 80))))?;
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(ParseError::Malformed(format!(
            "header name {:?}",
            bounded(name, 80)
        )));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

fn framing(response: &Response) -> Result<Framing, ParseError> {
    if matches!(response.status, 204 | 304) {
        return Ok(Framing::Empty);
    }
    let chunked = response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .rfind(|c| !c.is_empty())
        .map(|c| c.eq_ignore_ascii_case("chunked"));
    Ok(match chunked {
        Some(true) => Framing::Chunked,
        // Another coding last: the body runs to the close (RFC 9112 §6.3).
        Some(false) => Framing::ToClose,
        None => match content_length(&response.headers)? {
            Some(n) => Framing::Length(n),
            None => Framing::ToClose,
        },
    })
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for v in value.split(',').map(str::trim) {
            let n: usize = v
                .parse()
                .ok()
                .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    ParseError::Malformed(format!("Content-Length {:?}", bounded(v, 40)))
                })?;
            if found.is_some_and(|f| f != n) {
                return Err(ParseError::Malformed(
                    "conflicting Content-Length values".into(),
                ));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Walk a chunked body, `<hex size>[;ext]\r\n<data>\r\n` ... `0\r\n[trailers]\r\n`, handing each chunk's
/// data to `data`.
fn chunks(mut rest: &[u8], mut data: impl FnMut(&[u8])) -> Result<(), ParseError> {
    loop {
        let (line, after) = next_line(rest).ok_or(ParseError::Truncated("a chunk size"))?;
        let line = text(line, "a chunk size")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = (!size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| usize::from_str_radix(size_text, 16).ok())
            .flatten()
            .ok_or_else(|| ParseError::Malformed(format!("chunk size {:?}", bounded(&line, 40))))?;
        rest = after;
        if size == 0 {
            // Trailers up to an empty line; a peer that closes right after `0\r\n` is tolerated.
            while let Some((line, after)) = next_line(rest) {
                rest = after;
                if line.is_empty() {
                    break;
                }
            }
            return Ok(());
        }
        if rest.len() < size {
            return Err(ParseError::Truncated("part of a chunk"));
        }
        data(&rest[..size]);
        rest = &rest[size..];
        rest = if let Some(r) = rest.strip_prefix(b"\r\n") {
            r
        } else if let Some(r) = rest.strip_prefix(b"\n") {
            r
        } else if rest.is_empty() || rest == b"\r" {
            return Err(ParseError::Truncated("the end of a chunk"));
        } else {
            return Err(ParseError::Malformed(
                "chunk data longer than its size".into(),
            ));
        };
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Response, ParseError> {
        parse_response(s.as_bytes())
    }

    #[test]
    fn request_has_the_method_path_headers_and_body() {
        let r = String::from_utf8(post_request("/cni", b"{}")).unwrap();
        assert_eq!(
            r,
            "POST /cni HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn content_length_body_is_cut_to_its_length() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello, trailing junk").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn short_content_length_body_is_truncated() {
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
            Err(ParseError::Truncated("part of the body"))
        );
    }

    #[test]
    fn chunked_body_is_decoded_with_extensions_and_trailers() {
        let r = parse(
            "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"co\r\nB\r\nde\":11}    \r\n0\r\nX-Trailer: y\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.reason, "Bad Request");
        assert_eq!(r.body, b"{\"code\":11}    ");
    }

    #[test]
    fn chunked_wins_over_content_length_and_is_case_insensitive() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\ntransfer-encoding: gzip, Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn chunked_body_cut_short_or_oversized_is_an_error() {
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            Err(ParseError::Truncated("part of a chunk"))
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"),
            Err(ParseError::Truncated("a chunk size"))
        );
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
        // A size too large for usize is malformed, not a panic or an allocation.
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn chunked_end_without_final_empty_line_is_tolerated() {
        let r =
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n").unwrap();
        assert_eq!(r.body, b"ab");
    }

    #[test]
    fn body_without_framing_runs_to_the_close() {
        let r = parse("HTTP/1.0 500 Internal Server Error\r\n\r\nboom\n").unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.body, b"boom\n");
    }

    /// A peer that sends `parts` one per read and then would only block: reading past them panics.
    struct Pieces(std::collections::VecDeque<&'static [u8]>, bool);

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                Some(p) => {
                    out[..p.len()].copy_from_slice(p);
                    Ok(p.len())
                }
                // The peer's close, when it sends one.
                None if self.1 => Ok(0),
                None => {
                    panic!("read again after the whole reply: the shim would wait for the close")
                }
            }
        }
    }

    fn read_pieces(parts: &[&'static [u8]], closes: bool) -> io::Result<Vec<u8>> {
        read_reply(&mut Pieces(parts.iter().copied().collect(), closes))
    }

    #[test]
    fn a_framed_reply_is_read_without_waiting_for_the_close() {
        // Content-Length, in pieces that split the head and the body.
        let got = read_pieces(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 5\r\n\r\nhe",
                b"llo",
            ],
            false,
        )
        .unwrap();
        assert_eq!(parse_response(&got).unwrap().body, b"hello");
        // Chunked, ended by its zero-size chunk.
        let got = read_pieces(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                b"0\r\n\r\n",
            ],
            false,
        )
        .unwrap();
        assert_eq!(parse_response(&got).unwrap().body, b"abc");
        // No body by status, after an interim reply.
        let got = read_pieces(
            &[
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ],
            false,
        )
        .unwrap();
        assert_eq!(parse_response(&got).unwrap().status, 204);
        // Already malformed: more bytes would not mend it.
        let got = read_pieces(&[b"SMTP ready\r\n"], false).unwrap();
        assert!(matches!(
            parse_response(&got),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn an_unframed_or_short_reply_is_read_to_the_close() {
        let got = read_pieces(
            &[b"HTTP/1.0 500 Internal Server Error\r\n\r\nbo", b"om"],
            true,
        )
        .unwrap();
        assert_eq!(parse_response(&got).unwrap().body, b"boom");
        let got =
            read_pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf"], true).unwrap();
        assert_eq!(
            parse_response(&got),
            Err(ParseError::Truncated("part of the body"))
        );
        let got = read_pieces(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"],
            true,
        )
        .unwrap();
        assert_eq!(
            parse_response(&got),
            Err(ParseError::Truncated("a chunk size"))
        );
        assert!(read_pieces(&[], true).unwrap().is_empty());
    }

    #[test]
    fn a_head_that_never_ends_is_malformed_past_its_limit() {
        let mut endless = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        endless.resize(MAX_HEAD, b'a');
        assert!(!whole(&endless), "still within the limit: more may come");
        endless.push(b'a');
        assert!(whole(&endless));
        assert!(
            matches!(parse_response(&endless), Err(ParseError::Malformed(m)) if m.contains("head"))
        );
    }

    #[test]
    fn whole_means_complete_by_framing() {
        for (reply, want) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false),
            ("HTTP/1.1 200 OK\r\n\r\n{}", false),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                true,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", true),
            ("HTTP/1.1 100 Continue\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true),
        ] {
            assert_eq!(whole(reply.as_bytes()), want, "{reply:?}");
        }
    }

    #[test]
    fn a_read_error_is_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
            }
        }
        let e = read_reply(&mut Broken).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn no_content_has_no_body_and_bare_newlines_are_accepted() {
        let r = parse("HTTP/1.1 204 No Content\nServer: x\n\nignored").unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(r.header("server"), Some("x"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn interim_replies_are_skipped() {
        let r =
            parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn status_line_without_reason_parses() {
        let r = parse("HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.reason.as_str()), (503, ""));
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 700 Weird\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed(_))),
                "{bad:?} → {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn replies_cut_in_the_head_are_truncated() {
        assert_eq!(
            parse("HTTP/1.1 200 OK"),
            Err(ParseError::Truncated("status line"))
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"),
            Err(ParseError::Truncated("end of headers"))
        );
        assert_eq!(
            parse("HTTP/1.1 100 Continue\r\n\r\n"),
            Err(ParseError::Truncated("status line"))
        );
    }

    #[test]
    fn oversized_reply_is_refused() {
        let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        big.resize(MAX_RESPONSE + 1, b'x');
        assert_eq!(parse_response(&big), Err(ParseError::TooLarge));
    }

    #[test]
    fn bounded_cuts_on_a_char_boundary() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcd", 3), "abc…");
        assert_eq!(bounded("aé", 2), "a…");
    }

    #[test]
    fn connect_to_a_full_backlog_times_out_then_succeeds_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A listener that never accepts, with the smallest backlog: connects queue until it is full.
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        listener.listen(0).unwrap();
        let mut queued = Vec::new();
        let e = loop {
            match connect(&path, Duration::from_millis(50)) {
                Ok(s) => queued.push(s),
                Err(e) => break e,
            }
            assert!(queued.len() < 64, "the backlog never filled");
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("backlog is full"), "{e}");
        // Accepting one makes room: a waiting connect gets through before its deadline.
        let waiting = thread::spawn({
            let path = path.clone();
            move || connect(&path, Duration::from_secs(5))
        });
        thread::sleep(Duration::from_millis(30));
        let _accepted = listener.accept().unwrap();
        let mut s = waiting
            .join()
            .unwrap()
            .expect("connected once the backlog had room");
        // A blocking stream again, as the caller expects.
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut b = [0u8; 1];
        let e = s.read(&mut b).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
    }

    #[test]
    fn connect_with_nobody_listening_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = connect(&path, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn connect_to_a_missing_socket_is_not_found() {
        let e = connect(
            Path::new("/nonexistent/plexus-test.sock"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
