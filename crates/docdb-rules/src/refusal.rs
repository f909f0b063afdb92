//! A refusal: the error reply Amazon DocumentDB would give, with its code and message.
//!
//! Codes and messages come from AWS's documentation where it prints them, otherwise from
//! DocumentDB replies quoted in public issue threads (named in `rules.rs`), otherwise they are
//! an assumption said as such in `rules.rs`. DocumentDB does not document `codeName`s; the
//! names here are descriptive.

use bson::{doc, Document};

/// Why a command is refused, as the client will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i32,
    pub code_name: &'static str,
    pub errmsg: String,
}

impl Refusal {
    /// `{ok: 0, errmsg, code, codeName}`: the body of the error reply.
    pub fn to_document(&self) -> Document {
        doc! {"ok": 0.0, "errmsg": self.errmsg.clone(), "code": self.code, "codeName": self.code_name}
    }

    /// A command DocumentDB does not have (59, as MongoDB answers an unknown command).
    pub fn no_such_command(name: &str) -> Self {
        Self { code: 59, code_name: "CommandNotFound", errmsg: format!("no such command: '{name}'") }
    }

    /// A feature DocumentDB does not have: 303 "Feature not supported: '…'" (documented for
    /// causal consistency in transactions.html).
    pub fn feature(what: &str) -> Self {
        Self { code: 303, code_name: "FeatureNotSupported", errmsg: format!("Feature not supported: '{what}'") }
    }

    /// A command option DocumentDB does not have: 303 "option … is currently not supported."
    /// (observed for `collation`).
    pub fn option(name: &str) -> Self {
        Self {
            code: 303,
            code_name: "FeatureNotSupported",
            errmsg: format!("option {name} is currently not supported."),
        }
    }

    /// An aggregation stage: 304 "Aggregation stage not supported: '…'" (observed).
    pub fn stage(name: &str) -> Self {
        Self {
            code: 304,
            code_name: "AggregationStageNotSupported",
            errmsg: format!("Aggregation stage not supported: '{name}'"),
        }
    }

    /// An aggregation expression operator: "Aggregation project operator not supported: '…'"
    /// (observed; the code is assumed to be the stage's 304).
    pub fn expression(name: &str) -> Self {
        Self {
            code: 304,
            code_name: "AggregationStageNotSupported",
            errmsg: format!("Aggregation project operator not supported: '{name}'"),
        }
    }

    /// A field DocumentDB does not recognise: 9 "Unrecognized field: '…'" (documented for
    /// `txnNumber`, i.e. retryable writes, in functional-differences.html).
    pub fn unrecognized_field(name: &str) -> Self {
        Self { code: 9, code_name: "FailedToParse", errmsg: format!("Unrecognized field: '{name}'") }
    }

    /// A request DocumentDB cannot parse (9), with its own message.
    pub fn failed_to_parse(errmsg: &str) -> Self {
        Self { code: 9, code_name: "FailedToParse", errmsg: errmsg.to_string() }
    }

    /// A value DocumentDB cannot store or accept (2, as MongoDB answers a bad value).
    pub fn bad_value(message: String) -> Self {
        Self { code: 2, code_name: "BadValue", errmsg: message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_body_is_ok_0_errmsg_code_and_code_name() {
        assert_eq!(
            Refusal::stage("$facet").to_document(),
            doc! {"ok": 0.0, "errmsg": "Aggregation stage not supported: '$facet'", "code": 304,
            "codeName": "AggregationStageNotSupported"}
        );
    }
}
