//! docdb-rules: what Amazon DocumentDB 5.0 supports, in one table, and the pure checks that read
//! it. Two users: `docdb-guard`, the wire proxy the tests run the services through, refuses what
//! the checks refuse; the services' `doctor` asks [`carried`] what a DocumentDB target will not
//! hold of a source collection. `docs/operations.md`'s DocumentDB section is generated from the
//! table too ([`summary`]; a test fails when the two disagree).
//!
//! ```text
//!   rules.rs (THE table, with its sources) ──► check/ (one command: allowed, or DocumentDB's refusal)
//!                                                 │                        │
//!                            docdb-guard (proxy) ◄┘                        └► carried.rs (a collection's
//!                                                                              options, indexes, documents
//!                                                                              → what is not carried) ──► doctor
//!   summary.rs (the table as the runbook's Markdown) ──► docs/operations.md
//! ```
//!
//! Pure: no I/O, no errors but the refusals themselves ([`Refusal`]).
//!
//! Layout:
//!
//! | file          | what it owns                                                           |
//! |---------------|------------------------------------------------------------------------|
//! | `rules.rs`    | THE rule table: DocumentDB 5.0's supported APIs, with its sources      |
//! | `check/`      | checks of one command against the table (see `check/mod.rs`)           |
//! | `refusal.rs`  | the refusal: code, codeName, errmsg, and the reply body                |
//! | `carried.rs`  | what a DocumentDB target will not carry of a collection, and why       |
//! | `summary.rs`  | the table's collection, index and field-name rules as Markdown         |

pub mod carried;
pub mod check;
pub mod refusal;
pub mod rules;
pub mod summary;

pub use check::check;
pub use refusal::Refusal;
