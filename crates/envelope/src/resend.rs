//! Re-send requests and their replies: how an operator (`sink-writer verify --repair`,
//! `sink-writer dead-letters retry`) asks cdc-source to send documents' current state again,
//! ordered with the stream, and how cdc-source answers. Both travel on cdc-source's request topic
//! (`__cdc_source.<capture.name>.requests`, one partition), keyed by the request id, as JSON:
//!
//! ```text
//! request: {"type": "resend", "id": "<id>", "ns": "db.coll", "ids": [<_id as extended JSON>, …],
//!           "reason": "…", "at_ms": …}
//! reply:   {"type": "resent", "id": "<id>", "ns": "db.coll", "resent": n, "deleted": n,
//!           "superseded": n, "closed_at": {"t", "i"} | null, "error": "…" | null, "at_ms": …}
//! ```
//!
//! `ids` are strict extended JSON values (`{"$numberLong": "5"}` stays an Int64). The reply is
//! written in the transaction that made the re-sent records durable: every watermark at or after
//! `closed_at` follows them on their partitions, so once a sink's consistency point passes
//! `closed_at` they are applied. Pure: no I/O.

use bson::Bson;
use serde::{Deserialize, Serialize};

use crate::event::ClusterTime;
use crate::extjson::{value_from_json, value_to_string, Style};

/// A request to send some documents' current state again.
#[derive(Debug, Clone, PartialEq)]
pub struct ResendRequest {
    /// Unique per request: the re-sent records carry it in `cdc.resend`, the reply names it.
    pub id: String,
    /// The source namespace.
    pub ns: String,
    /// The documents' `_id`s.
    pub ids: Vec<Bson>,
    /// Why (for logs).
    pub reason: String,
    pub at_ms: i64,
}

/// What cdc-source did with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResendReply {
    pub id: String,
    pub ns: String,
    /// Documents sent again as read (`op: r`).
    pub resent: u64,
    /// `_id`s the source no longer has, sent as deletes.
    pub deleted: u64,
    /// Documents whose own change came through the stream while they were read: that change
    /// carries the newer state (and the request id), so no copy was sent.
    pub superseded: u64,
    /// The stream position the copies were sent at: a consistency point at or past it has them.
    pub closed_at: Option<ClusterTime>,
    /// Why nothing was sent (a namespace this source does not capture, an unreadable request).
    pub error: Option<String>,
    pub at_ms: i64,
}

/// A record of the request topic.
#[derive(Debug, Clone, PartialEq)]
pub enum ResendMessage {
    Request(ResendRequest),
    Reply(ResendReply),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum Wire {
    #[serde(rename = "resend")]
    Request { id: String, ns: String, ids: Vec<serde_json::Value>, reason: String, at_ms: i64 },
    #[serde(rename = "resent")]
    Reply(ResendReply),
}

/// The value of a request record.
pub fn encode_request(request: &ResendRequest) -> Vec<u8> {
    let ids = request
        .ids
        .iter()
        .map(|id| serde_json::from_str(&value_to_string(id, Style::Strict)).unwrap_or(serde_json::Value::Null))
        .collect();
    let wire = Wire::Request {
        id: request.id.clone(),
        ns: request.ns.clone(),
        ids,
        reason: request.reason.clone(),
        at_ms: request.at_ms,
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// The value of a reply record.
pub fn encode_reply(reply: &ResendReply) -> Vec<u8> {
    serde_json::to_vec(&Wire::Reply(reply.clone())).unwrap_or_default()
}

/// A record of the request topic, or why it is not one.
pub fn decode_message(value: &[u8]) -> Result<ResendMessage, String> {
    match serde_json::from_slice::<Wire>(value).map_err(|e| e.to_string())? {
        Wire::Request { id, ns, ids, reason, at_ms } => {
            let ids = ids.into_iter().map(value_from_json).collect::<Result<Vec<Bson>, _>>().map_err(|e| e.0)?;
            if id.is_empty() || !ns.contains('.') {
                return Err(format!("a request needs an id and a db.collection namespace (id '{id}', ns '{ns}')"));
            }
            Ok(ResendMessage::Request(ResendRequest { id, ns, ids, reason, at_ms }))
        }
        Wire::Reply(reply) => Ok(ResendMessage::Reply(reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_every_id_type_exactly() {
        let request = ResendRequest {
            id: "r1".into(),
            ns: "shop.items".into(),
            ids: vec![
                Bson::Int32(5),
                Bson::Int64(5),
                Bson::Double(2.0),
                Bson::String("a\"b".into()),
                Bson::ObjectId(bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").expect("oid")),
                Bson::Document(bson::doc! {"tenant": 4, "n": 77_i64}),
            ],
            reason: "verify --repair".into(),
            at_ms: 7,
        };
        let bytes = encode_request(&request);
        assert_eq!(decode_message(&bytes), Ok(ResendMessage::Request(request)));
    }

    #[test]
    fn replies_read_back_and_garbage_is_refused() {
        let reply = ResendReply {
            id: "r1".into(),
            ns: "shop.items".into(),
            resent: 2,
            deleted: 1,
            superseded: 1,
            closed_at: Some(ClusterTime { t: 9, i: 3 }),
            error: None,
            at_ms: 8,
        };
        assert_eq!(decode_message(&encode_reply(&reply)), Ok(ResendMessage::Reply(reply)));
        assert!(decode_message(b"{}").is_err());
        assert!(decode_message(br#"{"type":"resend","id":"","ns":"x","ids":[],"reason":"","at_ms":0}"#).is_err());
    }
}
