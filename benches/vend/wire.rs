//! The raw protocol ends of the open-loop client: the HTTP token request and response head,
//! one keep-alive connection (`Wire`), and RESP for the raw Redis floor.

use super::*;

/// What one response's head says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Bytes of the status line and headers, including the blank line.
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) content_length: usize,
    pub(crate) close: bool,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while incomplete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("unsupported transfer-encoding {value}"));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(Head {
        len: end + 4,
        status,
        content_length: content_length.ok_or("response without content-length")?,
        close,
    }))
}

/// A request as sent on the wire.
pub(crate) fn token_request(
    host: &str,
    key: &str,
    org: &str,
    user: &str,
    connector: &str,
) -> Vec<u8> {
    let body = json!({"org": org, "user": {"id": user}, "connector": connector}).to_string();
    format!(
        "POST /internal/v1/token HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection.
pub(crate) struct Wire {
    addr: String,
    /// Speaks RESP (Redis) instead of HTTP/1.1.
    resp: bool,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Kernel receive time (ns, `CLOCK_REALTIME`) of the last exchange's final read.
    pub(crate) arrived: Option<u64>,
}

/// What one exchange gave.
pub(crate) enum Outcome {
    /// A 200 with a token in it.
    Ok,
    /// Any other complete response.
    Status(u16),
    /// No complete response (I/O or protocol error); the connection is replaced.
    Failed(String),
}

impl Wire {
    pub(crate) fn new(addr: &str, resp: bool) -> Self {
        Self {
            addr: addr.to_string(),
            resp,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            arrived: None,
        }
    }

    pub(crate) async fn connect(&mut self) -> std::io::Result<()> {
        let s = TcpStream::connect(&self.addr).await?;
        s.set_nodelay(true)?;
        stamped::enable_rx_timestamps(&s)?;
        self.stream = Some(s);
        self.buf.clear();
        Ok(())
    }

    pub(crate) async fn exchange(&mut self, request: &[u8]) -> Outcome {
        if self.stream.is_none()
            && let Err(e) = self.connect().await
        {
            return Outcome::Failed(format!("connect: {e}"));
        }
        match self.exchange_inner(request).await {
            Ok((head, token)) => {
                if head.close {
                    self.stream = None;
                }
                match (head.status, token) {
                    (200, true) => Outcome::Ok,
                    (200, false) => Outcome::Failed("200 without access_token".into()),
                    (s, _) => Outcome::Status(s),
                }
            }
            Err(e) => {
                self.stream = None;
                Outcome::Failed(e)
            }
        }
    }

    async fn exchange_inner(&mut self, request: &[u8]) -> Result<(Head, bool), String> {
        self.arrived = None;
        let stream = self.stream.as_mut().expect("connected");
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut chunk = [0u8; 8192];
        loop {
            if self.resp {
                if let Some(len) = parse_resp_reply(&self.buf)? {
                    self.buf.drain(..len);
                    let head = Head {
                        len,
                        status: 200,
                        content_length: 0,
                        close: false,
                    };
                    return Ok((head, true));
                }
            } else if let Some(head) = parse_head(&self.buf)? {
                let total = head.len + head.content_length;
                if self.buf.len() >= total {
                    let body = &self.buf[head.len..total];
                    let token = body.windows(15).any(|w| w == b"\"access_token\":");
                    self.buf.drain(..total);
                    return Ok((head, token));
                }
            }
            let (n, at) = stamped::recv(stream, &mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if at.is_some() {
                self.arrived = at;
            }
            if n == 0 {
                return Err("connection closed by the broker".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Wire {
    /// Selects a Redis logical database (RESP connections only).
    pub(crate) async fn select(&mut self, db: u32) -> Result<(), String> {
        match self
            .exchange(&resp_command(&["SELECT", &db.to_string()]))
            .await
        {
            Outcome::Ok => Ok(()),
            _ => Err(format!("SELECT {db} failed")),
        }
    }
}

/// A Redis command as sent on the wire.
pub(crate) fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// The length of one complete simple-string or bulk reply at the start of `buf`: `Ok(None)`
/// while incomplete, an error for an error reply, a missing key or anything else.
pub(crate) fn parse_resp_reply(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..eol]).map_err(|_| "RESP reply is not UTF-8")?;
    match buf[0] {
        b'+' => Ok(Some(eol + 2)),
        b'$' => {
            let n: i64 = line
                .parse()
                .map_err(|_| format!("bad bulk length {line:?}"))?;
            if n < 0 {
                return Err("the key does not exist".into());
            }
            let total = eol + 2 + n as usize + 2;
            Ok((buf.len() >= total).then_some(total))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}
