//! What can stop cdc-source.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings or an unusable environment: fix the configuration and restart.
    #[error("{0}")]
    Fatal(String),
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
}
