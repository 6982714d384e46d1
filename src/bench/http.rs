//! The few HTTP/1.1 requests the benchmarks make (to the console and to
//! chromedriver), each on a connection of its own that the server closes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `method path` with an optional JSON body: the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let body = json.unwrap_or("");
        let content = match json {
            Some(_) => format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ),
            None => String::new(),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{content}\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        // Some servers (chromedriver) keep the connection open after the
        // answer despite `Connection: close`: stop at the body's end.
        let mut response = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..read]);
            if complete(&response) {
                break;
            }
        }
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 60 s")
        })??;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let body = &response[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        return Ok((
            status,
            unchunk(body).ok_or_else(|| invalid("bad chunked body"))?,
        ));
    }
    Ok((status, body.to_vec()))
}

/// Whether `response` holds the whole answer, as its headers describe it.
fn complete(response: &[u8]) -> bool {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let body = &response[split + 4..];
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= length;
    }
    head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n")
}

/// The body of a chunked response.
fn unchunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_joined() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        assert_eq!(unchunk(body).as_deref(), Some(&b"hello, world"[..]));
        assert_eq!(unchunk(b"5\r\nhel"), None);
    }

    #[test]
    fn an_answer_is_complete_at_its_content_length() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length:5\r\n\r\nhel"));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nContent-Length:5\r\n\r\nhello"
        ));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        ));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n"));
    }
}
