//! The proxy: one upstream connection per client connection, whole messages both ways.
//! Requests are checked ([`decide`], pure) and forwarded byte for byte or answered with the
//! refusal; replies are forwarded byte for byte except `hello`s ([`crate::hello`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::check::check;
use crate::error::WireError;
use crate::hello::{self, Addresses};
use crate::refusal::Refusal;
use crate::wire::{self, Message, OpMsg, OpQuery, MORE_TO_COME, OP_COMPRESSED, OP_MSG, OP_QUERY};

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Send it upstream; `hello`: its reply is a handshake to rewrite.
    Forward { hello: bool },
    /// Answer it with `reply` (none when the client asked for no reply: `moreToCome`).
    Refuse { refusal: Refusal, command: String, reply: Option<Vec<u8>> },
}

/// Decides on one request from a client; `reply_id` numbers a refusal's reply.
pub fn decide(request: &Message, reply_id: i32) -> Result<Decision, WireError> {
    match request.op_code {
        OP_MSG => {
            let msg = OpMsg::parse(request.payload())?;
            let command = msg.command();
            let name = command.keys().next().cloned().unwrap_or_default();
            match check(&command) {
                Ok(()) => Ok(Decision::Forward { hello: hello::is_hello(&name) }),
                Err(refusal) => {
                    let reply = (msg.flags & MORE_TO_COME == 0)
                        .then(|| {
                            let body = OpMsg { flags: 0, body: refusal.to_document(), sequences: vec![] };
                            body.encode(reply_id, request.request_id)
                        })
                        .transpose()?;
                    let mut shown = command.to_string();
                    shown.truncate(shown.char_indices().nth(400).map_or(shown.len(), |(at, _)| at));
                    Ok(Decision::Refuse { refusal, command: shown, reply })
                }
            }
        }
        OP_QUERY => {
            let query = OpQuery::parse(request.payload())?;
            Ok(Decision::Forward { hello: query.command_name().is_some_and(hello::is_hello) })
        }
        OP_COMPRESSED => Err(WireError::Compressed),
        _ => Ok(Decision::Forward { hello: false }),
    }
}

/// Accepts clients until `shutdown` completes; each connection is a task of its own.
pub async fn serve(listener: TcpListener, addresses: Addresses, shutdown: impl Future<Output = ()>) {
    let addresses = Arc::new(addresses);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let addresses = Arc::clone(&addresses);
                    connections.spawn(async move {
                        if let Err(e) = connection(client, &addresses).await {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            // Observe ended connections so the set stays small.
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::error!(error = %e, "connection task failed");
                }
            }
        }
    }
    connections.shutdown().await;
}

/// Ids of `hello` requests (and of streamed `hello` replies) whose replies are yet to come.
type HelloIds = Arc<Mutex<HashSet<i32>>>;

async fn connection(client: TcpStream, addresses: &Addresses) -> Result<(), WireError> {
    let upstream = TcpStream::connect(&addresses.upstream).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // Replies and refusals both write to the client: one message at a time.
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let hellos: HelloIds = Arc::default();
    tokio::select! {
        ended = requests(client_read, upstream_write, Arc::clone(&client_write), Arc::clone(&hellos)) => ended,
        ended = replies(upstream_read, client_write, hellos, addresses) => ended,
    }
}

async fn requests(
    mut client: OwnedReadHalf,
    mut upstream: OwnedWriteHalf,
    client_write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    hellos: HelloIds,
) -> Result<(), WireError> {
    static REPLY_IDS: AtomicI32 = AtomicI32::new(1 << 30);
    while let Some(request) = wire::read_message(&mut client).await? {
        match decide(&request, REPLY_IDS.fetch_add(1, Ordering::Relaxed))? {
            Decision::Forward { hello } => {
                if hello {
                    hellos.lock().unwrap_or_else(PoisonError::into_inner).insert(request.request_id);
                }
                upstream.write_all(&request.bytes).await?;
            }
            Decision::Refuse { refusal, command, reply } => {
                tracing::warn!(code = refusal.code, errmsg = %refusal.errmsg, %command, "refused");
                if let Some(reply) = reply {
                    client_write.lock().await.write_all(&reply).await?;
                }
            }
        }
    }
    Ok(())
}

async fn replies(
    mut upstream: OwnedReadHalf,
    client_write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    hellos: HelloIds,
    addresses: &Addresses,
) -> Result<(), WireError> {
    while let Some(reply) = wire::read_message(&mut upstream).await? {
        let is_hello = hellos.lock().unwrap_or_else(PoisonError::into_inner).remove(&reply.response_to);
        let bytes = if is_hello {
            if reply.op_code == OP_MSG && more_to_come(&reply) {
                // An exhaust stream: the next reply answers this one.
                hellos.lock().unwrap_or_else(PoisonError::into_inner).insert(reply.request_id);
            }
            hello::rewrite(&reply, addresses)?
        } else {
            reply.bytes
        };
        client_write.lock().await.write_all(&bytes).await?;
    }
    Ok(())
}

fn more_to_come(reply: &Message) -> bool {
    reply
        .payload()
        .get(..4)
        .and_then(|flags| <[u8; 4]>::try_from(flags).ok())
        .is_some_and(|flags| u32::from_le_bytes(flags) & MORE_TO_COME != 0)
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn request(body: bson::Document, flags: u32) -> Message {
        let bytes = OpMsg { flags, body, sequences: vec![] }.encode(12, 0).expect("encode");
        Message { request_id: 12, response_to: 0, op_code: OP_MSG, bytes }
    }

    #[test]
    fn allowed_requests_are_forwarded_and_hellos_marked() {
        let ping = request(doc! {"ping": 1, "$db": "admin"}, 0);
        assert_eq!(decide(&ping, 1).expect("decide"), Decision::Forward { hello: false });
        let hello = request(doc! {"hello": 1, "$db": "admin"}, 1 << 16);
        assert_eq!(decide(&hello, 1).expect("decide"), Decision::Forward { hello: true });
    }

    #[test]
    fn refusals_answer_in_the_request_framing() {
        let facet = request(doc! {"aggregate": "c", "pipeline": [{"$facet": {}}], "cursor": {}, "$db": "app"}, 0);
        let Decision::Refuse { refusal, reply: Some(reply), .. } = decide(&facet, 99).expect("decide") else {
            panic!("expected a refusal with a reply");
        };
        let reply = Message { request_id: 99, response_to: 12, op_code: OP_MSG, bytes: reply };
        assert_eq!(i32::from_le_bytes(reply.bytes[8..12].try_into().expect("4")), 12, "responseTo = requestID");
        assert_eq!(OpMsg::parse(reply.payload()).expect("parse").body, refusal.to_document());
    }

    #[test]
    fn unacknowledged_requests_are_refused_without_a_reply() {
        let insert = request(doc! {"insert": "c", "documents": [{"a.b": 1}], "$db": "app"}, MORE_TO_COME);
        assert!(matches!(decide(&insert, 1).expect("decide"), Decision::Refuse { reply: None, .. }));
    }

    #[test]
    fn compressed_messages_end_the_connection() {
        let compressed = Message { request_id: 1, response_to: 0, op_code: OP_COMPRESSED, bytes: vec![0; 16] };
        assert!(matches!(decide(&compressed, 1), Err(WireError::Compressed)));
    }
}
