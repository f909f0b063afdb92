//! transform: per-namespace rules applied in the source region, before anything is written to
//! Kafka, so that what they hide never reaches the brokers. Pure (no I/O but reading the rules
//! file and the key file at start): cdc-source applies the rules to every event, and
//! `sink-writer verify` to the source documents it compares with the target.
//!
//! ```text
//!  [transforms] ──Rules::load──► Rules ──for_namespace("db.coll")──► Rule
//!                  (every problem                                    ├─ change(event)  → event | nothing   (cdc-source: stream)
//!                   at once)                                         ├─ read(document) → document | nothing (snapshot, verify)
//!                                                                    ├─ indexes / options → what the target gets, what is left out
//!                                                                    └─ describe → doctor
//! ```
//!
//! A rule: `exclude` field paths, `rename` one, `mask` or `hash` (HMAC-SHA-256) values, and a
//! `filter` on the whole source document. The filter decides first, on the document as the
//! source has it; the field rules then make the document the target gets. Every path of an
//! event goes through the same rules: snapshot reads, inserts, replaces, updates (the looked-up
//! document and the `updateDescription`, path by path: `update.rs`), deletes and pre-images, so
//! the target equals the source passed through the rules.
//!
//! Errors: configuration problems come back all at once from [`Rules::load`] (the services exit
//! with status 2); a document that cannot be read is a [`TransformError`] (cdc-source stops on
//! it, naming the namespace, as it does for a document it cannot encode).
//!
//! | file | owns |
//! |---|---|
//! | `config.rs` | the `[transforms]` section, the rules file, the hash key (never printed) |
//! | `rules.rs` | compiling and checking the rules, which rule a namespace gets, descriptions |
//! | `fields.rs` | the field rules as a tree; whole documents; where one dotted path stands |
//! | `update.rs` | an `updateDescription` through the field rules; what an update touches |
//! | `event.rs` | one change event (filter decisions, op rewrites) or one document read whole |
//! | `values.rs` | mask values, HMAC-SHA-256 |
//! | `filter/` | the query subset: parsing (`mod.rs`), evaluation (`eval.rs`), BSON order (`compare.rs`) |
//! | `schema.rs` | indexes and collection options under a rule |

mod config;
mod event;
mod fields;
pub mod filter;
mod rules;
mod schema;
mod update;
mod values;

pub use config::{HashKey, HashOutput, RuleConfig, TransformConfig};
pub use event::TransformError;
pub use rules::{Rule, Rules, MIN_KEY_BYTES};
pub use values::MASKED_TEXT;
