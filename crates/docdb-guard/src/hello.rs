//! The one reply the guard changes: `hello` / `isMaster`. A replica-set member names itself
//! and its peers there (`hosts`, `me`, `primary`); a driver that connects with
//! `replicaSet=<name>` then talks to those addresses, past the guard. The guard puts its own
//! address where the upstream's is, so clients keep the connection string they would give
//! DocumentDB (which answers with its own instance endpoints the same way), and it removes the
//! negotiated `compression` so clients never compress (the guard reads every message).

use bson::{Bson, Document};

use crate::error::WireError;
use crate::wire::{Message, OpMsg, OpReply, OP_MSG, OP_REPLY};

/// Whether a request is a handshake or monitoring `hello` (any spelling).
pub fn is_hello(command_name: &str) -> bool {
    matches!(command_name, "hello" | "isMaster" | "ismaster")
}

/// Host names to swap in `hello` replies.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// How the upstream names itself (its replica-set member host).
    pub upstream: String,
    /// The guard's address, as clients should reach it.
    pub advertised: String,
}

/// The reply with the guard's address for the upstream's and without `compression`; other
/// messages unchanged.
pub fn rewrite(reply: &Message, addresses: &Addresses) -> Result<Vec<u8>, WireError> {
    match reply.op_code {
        OP_MSG => {
            let mut msg = OpMsg::parse(reply.payload())?;
            rewrite_document(&mut msg.body, addresses);
            msg.encode(reply.request_id, reply.response_to)
        }
        OP_REPLY => {
            let mut op = OpReply::parse(reply.payload())?;
            op.documents.iter_mut().for_each(|document| rewrite_document(document, addresses));
            op.encode(reply.request_id, reply.response_to)
        }
        _ => Ok(reply.bytes.clone()),
    }
}

fn rewrite_document(hello: &mut Document, addresses: &Addresses) {
    hello.remove("compression");
    let swap = |value: &mut Bson| {
        if value.as_str() == Some(addresses.upstream.as_str()) {
            *value = Bson::String(addresses.advertised.clone());
        }
    };
    for key in ["me", "primary"] {
        if let Some(value) = hello.get_mut(key) {
            swap(value);
        }
    }
    for key in ["hosts", "passives", "arbiters"] {
        if let Some(Bson::Array(hosts)) = hello.get_mut(key) {
            hosts.iter_mut().for_each(swap);
        }
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn addresses() -> Addresses {
        Addresses { upstream: "127.0.0.1:27117".into(), advertised: "127.0.0.1:27118".into() }
    }

    fn as_message(bytes: Vec<u8>) -> Message {
        let field = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Message { request_id: field(4), response_to: field(8), op_code: field(12), bytes }
    }

    #[test]
    fn hello_replies_name_the_guard_and_negotiate_no_compression() {
        let body = doc! {"isWritablePrimary": true, "setName": "source", "hosts": ["127.0.0.1:27117", "other:1"],
        "me": "127.0.0.1:27117", "primary": "127.0.0.1:27117", "compression": ["zstd"], "ok": 1.0};
        let reply = OpMsg { flags: 2, body, sequences: vec![] }.encode(41, 40).expect("encode");
        let rewritten = as_message(rewrite(&as_message(reply), &addresses()).expect("rewrite"));
        assert_eq!((rewritten.request_id, rewritten.response_to), (41, 40));
        let msg = OpMsg::parse(rewritten.payload()).expect("parse");
        assert_eq!(msg.flags, 2, "moreToCome stays: exhaust streams keep streaming");
        assert_eq!(
            msg.body,
            doc! {"isWritablePrimary": true, "setName": "source", "hosts": ["127.0.0.1:27118", "other:1"],
            "me": "127.0.0.1:27118", "primary": "127.0.0.1:27118", "ok": 1.0}
        );
    }

    #[test]
    fn legacy_op_reply_handshakes_are_rewritten_too() {
        let reply =
            OpReply { flags: 8, cursor_id: 0, starting_from: 0, documents: vec![doc! {"me": "127.0.0.1:27117"}] };
        let rewritten =
            as_message(rewrite(&as_message(reply.encode(5, 4).expect("encode")), &addresses()).expect("rw"));
        assert_eq!(OpReply::parse(rewritten.payload()).expect("parse").documents, vec![doc! {"me": "127.0.0.1:27118"}]);
        assert!(is_hello("ismaster") && is_hello("hello") && !is_hello("ping"));
    }
}
