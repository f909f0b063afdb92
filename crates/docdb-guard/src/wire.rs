//! The MongoDB wire protocol, as far as the guard needs it: whole messages off a socket, OP_MSG
//! (sections, document sequences, flags), OP_QUERY and OP_REPLY for the legacy handshake.
//! Parsing and encoding are pure; only [`read_message`] does I/O.

use bson::Document;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::WireError;

pub const OP_REPLY: i32 = 1;
pub const OP_QUERY: i32 = 2004;
pub const OP_COMPRESSED: i32 = 2012;
pub const OP_MSG: i32 = 2013;

/// OP_MSG flag bits.
pub const CHECKSUM_PRESENT: u32 = 1;
pub const MORE_TO_COME: u32 = 1 << 1;

const HEADER_BYTES: usize = 16;
/// Larger than any message a server accepts (48 MB) or sends.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// One whole message: its header fields and every byte of it (header included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub request_id: i32,
    pub response_to: i32,
    pub op_code: i32,
    pub bytes: Vec<u8>,
}

impl Message {
    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_BYTES..]
    }
}

/// Reads one message; `None` when the peer closed the connection between messages.
pub async fn read_message<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Message>, WireError> {
    let mut header = [0u8; HEADER_BYTES];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let length = i32_at(&header, 0);
    let size = usize::try_from(length).ok().filter(|size| (HEADER_BYTES..=MAX_MESSAGE_BYTES).contains(size));
    let size = size.ok_or(WireError::Length(i64::from(length)))?;
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&header);
    bytes.resize(size, 0);
    reader.read_exact(&mut bytes[HEADER_BYTES..]).await?;
    Ok(Some(Message {
        request_id: i32_at(&header, 4),
        response_to: i32_at(&header, 8),
        op_code: i32_at(&header, 12),
        bytes,
    }))
}

/// An OP_MSG: flags, the body (section kind 0) and document sequences (kind 1).
#[derive(Debug, Clone, PartialEq)]
pub struct OpMsg {
    pub flags: u32,
    pub body: Document,
    pub sequences: Vec<(String, Vec<Document>)>,
}

impl OpMsg {
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let flags = u32::from_le_bytes(array4(payload, 0).ok_or_else(|| WireError::malformed("OP_MSG", "no flags"))?);
        let end = payload.len() - if flags & CHECKSUM_PRESENT != 0 { 4 } else { 0 };
        let mut at = 4;
        let mut body = None;
        let mut sequences = Vec::new();
        while at < end {
            let kind = payload[at];
            at += 1;
            match kind {
                0 => {
                    let (document, size) = document_at(payload, at)?;
                    body = Some(document);
                    at += size;
                }
                1 => {
                    let size = usize::try_from(i32_at(payload, at)).unwrap_or(0);
                    let section_end = at + size;
                    if size < 5 || section_end > end {
                        return Err(WireError::malformed("OP_MSG", "document sequence size"));
                    }
                    let (identifier, name_size) = cstring_at(payload, at + 4)?;
                    let mut documents = Vec::new();
                    let mut cursor = at + 4 + name_size;
                    while cursor < section_end {
                        let (document, size) = document_at(payload, cursor)?;
                        documents.push(document);
                        cursor += size;
                    }
                    sequences.push((identifier, documents));
                    at = section_end;
                }
                other => return Err(WireError::malformed("OP_MSG", format!("section kind {other}"))),
            }
        }
        let body = body.ok_or_else(|| WireError::malformed("OP_MSG", "no body section"))?;
        Ok(Self { flags, body, sequences })
    }

    /// The command as the server reads it: the body with each document sequence as an array.
    pub fn command(&self) -> Document {
        let mut command = self.body.clone();
        for (identifier, documents) in &self.sequences {
            command.insert(identifier.clone(), documents.iter().cloned().map(bson::Bson::Document).collect::<Vec<_>>());
        }
        command
    }

    /// A whole message with this body and sequences, without a checksum.
    pub fn encode(&self, request_id: i32, response_to: i32) -> Result<Vec<u8>, WireError> {
        let mut payload = (self.flags & !CHECKSUM_PRESENT).to_le_bytes().to_vec();
        payload.push(0);
        payload.extend(to_bytes(&self.body)?);
        for (identifier, documents) in &self.sequences {
            let mut section = identifier.as_bytes().to_vec();
            section.push(0);
            for document in documents {
                section.extend(to_bytes(document)?);
            }
            payload.push(1);
            payload.extend(len_i32(section.len() + 4)?.to_le_bytes());
            payload.extend(section);
        }
        frame(request_id, response_to, OP_MSG, &payload)
    }
}

/// An OP_QUERY: only the legacy handshake uses it against a 6.0 server.
#[derive(Debug, Clone, PartialEq)]
pub struct OpQuery {
    pub collection: String,
    pub query: Document,
}

impl OpQuery {
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let (collection, size) = cstring_at(payload, 4)?;
        let (query, _) = document_at(payload, 4 + size + 8)?;
        Ok(Self { collection, query })
    }

    /// The command's name, also inside a `$query` wrapper.
    pub fn command_name(&self) -> Option<&str> {
        let query = self.query.get_document("$query").unwrap_or(&self.query);
        query.keys().next().map(String::as_str)
    }
}

/// An OP_REPLY: flags, cursor, and its documents.
#[derive(Debug, Clone, PartialEq)]
pub struct OpReply {
    pub flags: i32,
    pub cursor_id: i64,
    pub starting_from: i32,
    pub documents: Vec<Document>,
}

impl OpReply {
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let bad = || WireError::malformed("OP_REPLY", "too short");
        let cursor = payload.get(4..12).and_then(|b| <[u8; 8]>::try_from(b).ok()).ok_or_else(bad)?;
        let mut documents = Vec::new();
        let mut at = 20;
        while at < payload.len() {
            let (document, size) = document_at(payload, at)?;
            documents.push(document);
            at += size;
        }
        Ok(Self {
            flags: i32_at(payload, 0),
            cursor_id: i64::from_le_bytes(cursor),
            starting_from: i32_at(payload, 12),
            documents,
        })
    }

    pub fn encode(&self, request_id: i32, response_to: i32) -> Result<Vec<u8>, WireError> {
        let mut payload = self.flags.to_le_bytes().to_vec();
        payload.extend(self.cursor_id.to_le_bytes());
        payload.extend(self.starting_from.to_le_bytes());
        payload.extend(len_i32(self.documents.len())?.to_le_bytes());
        for document in &self.documents {
            payload.extend(to_bytes(document)?);
        }
        frame(request_id, response_to, OP_REPLY, &payload)
    }
}

fn frame(request_id: i32, response_to: i32, op_code: i32, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut bytes = len_i32(HEADER_BYTES + payload.len())?.to_le_bytes().to_vec();
    for field in [request_id, response_to, op_code] {
        bytes.extend(field.to_le_bytes());
    }
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

fn to_bytes(document: &Document) -> Result<Vec<u8>, WireError> {
    bson::to_vec(document).map_err(|e| WireError::malformed("document", e))
}

fn len_i32(len: usize) -> Result<i32, WireError> {
    i32::try_from(len).map_err(|_| WireError::Length(i64::try_from(len).unwrap_or(i64::MAX)))
}

fn array4(bytes: &[u8], at: usize) -> Option<[u8; 4]> {
    bytes.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok())
}

/// A little-endian i32 (0 past the end: the caller's bounds checks reject it).
fn i32_at(bytes: &[u8], at: usize) -> i32 {
    array4(bytes, at).map_or(0, i32::from_le_bytes)
}

/// The BSON document at `at` and its size in bytes.
fn document_at(bytes: &[u8], at: usize) -> Result<(Document, usize), WireError> {
    let size = usize::try_from(i32_at(bytes, at)).unwrap_or(0);
    let slice = bytes.get(at..at + size).filter(|_| size >= 5);
    let slice = slice.ok_or_else(|| WireError::malformed("document", format!("size {size} at {at}")))?;
    let document = Document::from_reader(&mut &slice[..]).map_err(|e| WireError::malformed("document", e))?;
    Ok((document, size))
}

/// The C string at `at` and its size with the terminating zero.
fn cstring_at(bytes: &[u8], at: usize) -> Result<(String, usize), WireError> {
    let rest = bytes.get(at..).unwrap_or_default();
    let end = rest.iter().position(|b| *b == 0).ok_or_else(|| WireError::malformed("cstring", "no terminator"))?;
    let text = std::str::from_utf8(&rest[..end]).map_err(|e| WireError::malformed("cstring", e))?;
    Ok((text.to_string(), end + 1))
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn message(bytes: Vec<u8>) -> Message {
        Message { request_id: i32_at(&bytes, 4), response_to: i32_at(&bytes, 8), op_code: i32_at(&bytes, 12), bytes }
    }

    #[test]
    fn op_msg_round_trips_with_document_sequences_folded_into_the_command() {
        let msg = OpMsg {
            flags: 0,
            body: doc! {"insert": "c", "$db": "app"},
            sequences: vec![("documents".into(), vec![doc! {"_id": 1}, doc! {"_id": 2}])],
        };
        let bytes = msg.encode(7, 0).expect("encode");
        let read = message(bytes);
        assert_eq!((read.request_id, read.op_code), (7, OP_MSG));
        let parsed = OpMsg::parse(read.payload()).expect("parse");
        assert_eq!(parsed, msg);
        assert_eq!(parsed.command(), doc! {"insert": "c", "$db": "app", "documents": [{"_id": 1}, {"_id": 2}]});
    }

    #[test]
    fn a_checksum_is_skipped_and_not_written_back() {
        let msg = OpMsg { flags: 0, body: doc! {"ping": 1}, sequences: vec![] };
        let mut bytes = msg.encode(1, 0).expect("encode");
        bytes[16] |= CHECKSUM_PRESENT as u8;
        bytes.extend([1, 2, 3, 4]);
        let length = i32::try_from(bytes.len()).expect("len").to_le_bytes();
        bytes[..4].copy_from_slice(&length);
        let parsed = OpMsg::parse(message(bytes).payload()).expect("parse");
        assert_eq!(parsed.body, doc! {"ping": 1});
        assert_eq!(OpMsg::parse(&parsed.encode(1, 0).expect("encode")[16..]).expect("again").flags, 0);
    }

    #[test]
    fn op_query_and_op_reply_parse_the_legacy_handshake() {
        let mut payload = 0_i32.to_le_bytes().to_vec();
        payload.extend(b"admin.$cmd\0");
        payload.extend(0_i32.to_le_bytes());
        payload.extend((-1_i32).to_le_bytes());
        payload.extend(bson::to_vec(&doc! {"$query": {"isMaster": 1}}).expect("bson"));
        let query = OpQuery::parse(&payload).expect("parse");
        assert_eq!((query.collection.as_str(), query.command_name()), ("admin.$cmd", Some("isMaster")));
        let reply = OpReply { flags: 8, cursor_id: 0, starting_from: 0, documents: vec![doc! {"ok": 1.0}] };
        let bytes = reply.encode(3, 9).expect("encode");
        assert_eq!(OpReply::parse(&bytes[16..]).expect("parse"), reply);
    }

    #[tokio::test]
    async fn read_message_takes_whole_messages_and_rejects_impossible_lengths() {
        let one = OpMsg { flags: 0, body: doc! {"ping": 1}, sequences: vec![] }.encode(1, 0).expect("encode");
        let mut stream = [one.clone(), one.clone()].concat();
        let mut reader = &stream[..];
        assert_eq!(read_message(&mut reader).await.expect("read").expect("one").bytes, one);
        assert!(read_message(&mut reader).await.expect("read").is_some());
        assert!(read_message(&mut reader).await.expect("eof").is_none());
        stream[..4].copy_from_slice(&8_i32.to_le_bytes());
        assert!(matches!(read_message(&mut &stream[..]).await, Err(WireError::Length(8))));
    }

    #[test]
    fn malformed_sections_are_errors_not_panics() {
        assert!(OpMsg::parse(&[0, 0, 0, 0, 0, 200, 0, 0, 0]).is_err());
        assert!(OpMsg::parse(&[0, 0]).is_err());
        assert!(OpMsg::parse(&[0, 0, 0, 0, 1, 255, 255, 255, 127]).is_err());
        assert!(OpReply::parse(&[0; 3]).is_err());
    }
}
