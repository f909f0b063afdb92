//! Capture: what changes on the source, read as change streams and turned into records.
//!
//! ```text
//!  watch (position, options, pipeline) ──► change_stream ──► convert (+ transaction block)
//!       large_events: > 16 MiB split or re-read      │          transforms: the rules first
//!       schema_events: expanded events → DDL          ▼          routing: which topic
//!       schema_check: comparison where none       records ──► the queue (delivery/)
//! ```
//!
//! | file | owns |
//! |---|---|
//! | `watch.rs` | opening a change stream: position, options, pipeline for the scope; cluster-time arithmetic |
//! | `change_stream.rs` | the change stream loop: convert every event and hand it to the queue |
//! | `prefetch.rs` | the stream read ahead by a task of its own while the loop converts |
//! | `large_events.rs` | events over 16 MiB: split or the document read again |
//! | `schema.rs` | a collection's options and indexes read from the source |
//! | `schema_events.rs` | expanded change events → schema DDL |
//! | `schema_check.rs` | the periodic schema comparison where the stream reports no schema changes |
//! | `convert.rs` (`convert/`) | change events and snapshot documents → envelope records (pure) |
//! | `transaction.rs` | Debezium's `transaction` block for multi-document transactions |
//! | `transforms.rs` | the `[transforms]` rules every document, update and schema event goes through first |
//! | `routing.rs` | which namespaces are captured, which topic each goes to (pure) |

pub(crate) mod change_stream;
pub(crate) mod convert;
pub(crate) mod large_events;
pub(crate) mod prefetch;
pub(crate) mod routing;
pub(crate) mod schema;
pub(crate) mod schema_check;
pub(crate) mod schema_events;
pub(crate) mod transaction;
pub(crate) mod transforms;
pub(crate) mod watch;
