//! `--probe PATH`: the binary asks its own HTTP port for `PATH` and exits 0 on `200`, 1 otherwise.
//!
//! The runtime images have no shell and no curl, so an orchestrator whose health checks run a
//! command inside the container (ECS) calls the service binary itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where the probe connects: the listen address, with an unspecified IP replaced by loopback.
pub fn target(listen_addr: SocketAddr) -> SocketAddr {
    let mut addr = listen_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    addr
}

/// GETs `path` from `addr`; `Ok(status line)` when it answered 200, `Err(reason)` otherwise.
pub fn check(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default().to_string();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(status_line),
        Some(_) => Err(format!("{path}: {status_line}: {}", text.split("\r\n\r\n").nth(1).unwrap_or("").trim())),
        None => Err(format!("{path}: no HTTP answer from {addr}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            // Read the whole request first: closing with unread bytes would reset the connection.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            socket.write_all(answer.as_bytes()).expect("answer");
        });
        addr
    }

    #[test]
    fn ok_only_on_200() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        assert!(check(ok, "/health/livez", Duration::from_secs(2)).is_ok());
        let down = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\nkafka: unreachable\n");
        let reason = check(down, "/health/readyz", Duration::from_secs(2)).expect_err("503");
        assert!(reason.contains("503") && reason.contains("kafka: unreachable"), "{reason}");
    }

    #[test]
    fn nothing_listening_is_a_failure_and_unspecified_means_loopback() {
        let addr = target("0.0.0.0:1".parse().expect("addr"));
        assert_eq!(addr, "127.0.0.1:1".parse().expect("addr"));
        assert!(check(addr, "/health/livez", Duration::from_secs(1)).is_err());
    }
}
