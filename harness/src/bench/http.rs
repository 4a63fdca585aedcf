//! A minimal HTTP/1.1 client for the load generator: one keep-alive
//! connection, one request at a time, the body handed over as it arrives.
//!
//! General-purpose clients buffer, allocate per chunk and wrap every event in
//! layers the bench would then measure as well; the load generator must not
//! be the bottleneck, so it reads the socket itself, de-chunks in place and
//! passes each read's bytes, with the time they arrived, to a [`BodySink`].

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Receives a response body as it arrives.
pub trait BodySink {
    fn data(&mut self, bytes: &[u8], at: Instant);
}

/// What the response head said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// The server will close the connection after this response.
    pub close: bool,
    /// When the head arrived.
    pub at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection {0}")]
    Closed(&'static str),
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl ExchangeError {
    /// A short name for error counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Io(_) => "io",
            Self::Closed(_) => "closed",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// Enough for a response head; the body streams through the same buffer.
const BUFFER: usize = 64 * 1024;
const MAX_HEAD: usize = 32 * 1024;

pub struct Connection {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Connection {
    pub async fn connect(addr: SocketAddr) -> Result<Self, ExchangeError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(ExchangeError::Connect)?;
        stream.set_nodelay(true).map_err(ExchangeError::Connect)?;
        Ok(Self {
            stream,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// Sends `request` (a complete HTTP/1.1 request) and reads the response,
    /// handing the body to `sink`. Returns the head once the body has ended.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        sink: &mut impl BodySink,
    ) -> Result<Head, ExchangeError> {
        self.stream.write_all(request).await?;
        let (head, framing) = self.read_head().await?;
        match framing {
            Framing::Length(mut remaining) => {
                while remaining > 0 {
                    if self.start == self.end && !self.fill().await? {
                        return Err(ExchangeError::Closed("inside a sized body"));
                    }
                    let take = remaining.min(self.end - self.start);
                    sink.data(&self.buf[self.start..self.start + take], Instant::now());
                    self.start += take;
                    remaining -= take;
                }
            }
            Framing::Chunked => {
                let mut dechunker = Dechunker::default();
                loop {
                    if self.start == self.end && !self.fill().await? {
                        return Err(ExchangeError::Closed("inside a chunked body"));
                    }
                    let at = Instant::now();
                    let consumed = dechunker
                        .feed(&self.buf[self.start..self.end], |d| sink.data(d, at))
                        .map_err(ExchangeError::Malformed)?;
                    self.start += consumed;
                    if dechunker.is_done() {
                        break;
                    }
                }
            }
            Framing::UntilClose => {
                loop {
                    if self.start < self.end {
                        sink.data(&self.buf[self.start..self.end], Instant::now());
                        self.start = self.end;
                    }
                    if !self.fill().await? {
                        break;
                    }
                }
                return Ok(Head {
                    close: true,
                    ..head
                });
            }
        }
        Ok(head)
    }

    /// Reads more bytes; `false` at end of stream.
    async fn fill(&mut self) -> Result<bool, ExchangeError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(ExchangeError::Malformed("response head too large".into()));
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    async fn read_head(&mut self) -> Result<(Head, Framing), ExchangeError> {
        loop {
            let available = &self.buf[self.start..self.end];
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(available) {
                Ok(httparse::Status::Complete(len)) => {
                    let parsed = parse_head(&response)?;
                    self.start += len;
                    return Ok(parsed);
                }
                Ok(httparse::Status::Partial) => {
                    if available.len() > MAX_HEAD {
                        return Err(ExchangeError::Malformed("response head too large".into()));
                    }
                    if !self.fill().await? {
                        return Err(ExchangeError::Closed("before the response head"));
                    }
                }
                Err(e) => return Err(ExchangeError::Malformed(format!("response head: {e}"))),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn parse_head(response: &httparse::Response<'_, '_>) -> Result<(Head, Framing), ExchangeError> {
    let status = response
        .code
        .ok_or_else(|| ExchangeError::Malformed("no status code".into()))?;
    let mut framing = Framing::UntilClose;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = value.parse().map_err(|_| {
                ExchangeError::Malformed(format!("content-length `{value}` is not a number"))
            })?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().ends_with("chunked")
        {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok((
        Head {
            status,
            close: close || framing == Framing::UntilClose,
            at: Instant::now(),
        },
        framing,
    ))
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    SizeStart,
    Size {
        value: usize,
        extension: bool,
    },
    Data(usize),
    DataEnd,
    Trailer {
        line_len: usize,
    },
    Done,
}

impl Dechunker {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `input`, passing chunk data to `out`; returns
    /// how many bytes it consumed (all of them, unless the body ended).
    pub fn feed(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> Result<usize, String> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Data(remaining) => {
                    let take = remaining.min(input.len() - i);
                    out(&input[i..i + take]);
                    i += take;
                    self.state = if take == remaining {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(remaining - take)
                    };
                    continue;
                }
                ChunkState::Done => return Ok(i),
                _ => {}
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (ChunkState::SizeStart, b) => match hex(b) {
                    Some(d) => ChunkState::Size {
                        value: d,
                        extension: false,
                    },
                    None => return Err(format!("chunk size starts with byte {b:#04x}")),
                },
                (ChunkState::Size { value: 0, .. }, b'\n') => ChunkState::Trailer { line_len: 0 },
                (ChunkState::Size { value, .. }, b'\n') => ChunkState::Data(value),
                (s @ ChunkState::Size { .. }, b'\r') => s,
                (ChunkState::Size { value, .. }, b';') => ChunkState::Size {
                    value,
                    extension: true,
                },
                (
                    s @ ChunkState::Size {
                        extension: true, ..
                    },
                    _,
                ) => s,
                (ChunkState::Size { value, .. }, b) => match hex(b) {
                    Some(d) if value < usize::MAX >> 4 => ChunkState::Size {
                        value: value << 4 | d,
                        extension: false,
                    },
                    Some(_) => return Err("chunk size overflows".into()),
                    None => return Err(format!("byte {b:#04x} in a chunk size")),
                },
                (ChunkState::DataEnd, b'\r') => ChunkState::DataEnd,
                (ChunkState::DataEnd, b'\n') => ChunkState::SizeStart,
                (ChunkState::DataEnd, b) => {
                    return Err(format!("byte {b:#04x} after chunk data instead of CRLF"));
                }
                (ChunkState::Trailer { line_len: 0 }, b'\n') => ChunkState::Done,
                (ChunkState::Trailer { .. }, b'\n') => ChunkState::Trailer { line_len: 0 },
                (s @ ChunkState::Trailer { .. }, b'\r') => s,
                (ChunkState::Trailer { line_len }, _) => ChunkState::Trailer {
                    line_len: line_len + 1,
                },
                (ChunkState::Data(_) | ChunkState::Done, _) => unreachable!("handled above"),
            };
            if self.state == ChunkState::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<usize> {
    (b as char).to_digit(16).map(|d| d as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunk_in_pieces(wire: &[u8], piece: usize) -> Result<(Vec<u8>, bool), String> {
        let mut d = Dechunker::default();
        let mut out = Vec::new();
        for part in wire.chunks(piece) {
            d.feed(part, |b| out.extend_from_slice(b))?;
        }
        Ok((out, d.is_done()))
    }

    #[test]
    fn dechunks_whatever_the_read_sizes() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (out, done) = dechunk_in_pieces(wire, piece).unwrap();
            assert_eq!(out, b"hello, world0123456789", "piece size {piece}");
            assert!(done, "piece size {piece}");
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut d = Dechunker::default();
        let wire = b"1\r\na\r\n0\r\n\r\nHTTP/1.1 200 OK";
        let consumed = d.feed(wire, |_| {}).unwrap();
        assert_eq!(&wire[consumed..], b"HTTP/1.1 200 OK");
        assert!(d.is_done());
    }

    #[test]
    fn rejects_garbage() {
        assert!(
            dechunk_in_pieces(b"zz\r\n", 4)
                .unwrap_err()
                .contains("chunk size")
        );
        assert!(
            dechunk_in_pieces(b"1\r\nab\r\n", 8)
                .unwrap_err()
                .contains("after chunk data")
        );
        let (_, done) = dechunk_in_pieces(b"3\r\nabc\r\n", 8).unwrap();
        assert!(!done, "no last chunk yet");
    }
}
