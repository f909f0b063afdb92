//! What can go wrong. A connection's error ends that connection only (the client sees it closed,
//! as after a network fault, and reconnects); a configuration error stops the process.

/// A bad wire message or a failed socket: the connection ends.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("message of {0} bytes: outside 16 bytes .. 64 MiB")]
    Length(i64),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("a compressed message (OP_COMPRESSED): compression is off, clients must not negotiate it")]
    Compressed,
}

impl WireError {
    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Malformed { what, detail: detail.to_string() }
    }
}

/// Why the guard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}
