//! Evaluating a filter on a document: the values a path leads to (through arrays of documents,
//! `None` where the field is missing), then each test on them.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::compare::{bracket, compare, equal};
use super::{Expr, Test, TypeOf};
use crate::fields::is_index;

impl Expr {
    pub(super) fn matches(&self, doc: &Document) -> bool {
        match self {
            Expr::And(all) => all.iter().all(|e| e.matches(doc)),
            Expr::Or(any) => any.iter().any(|e| e.matches(doc)),
            Expr::Nor(none) => !none.iter().any(|e| e.matches(doc)),
            Expr::Field(path, tests) => {
                let parts: Vec<&str> = path.split('.').collect();
                let mut found = Vec::new();
                values(doc, &parts, &mut found);
                tests.iter().all(|t| t.passes(&found))
            }
        }
    }
}

/// The values `parts` lead to in `doc`; `None` for a document where the field is missing.
fn values<'a>(doc: &'a Document, parts: &[&str], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, rest)) = parts.split_first() else { return };
    match doc.get(*first) {
        None => out.push(None),
        Some(value) => descend(value, rest, out),
    }
}

fn descend<'a>(value: &'a Bson, rest: &[&str], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, tail)) = rest.split_first() else {
        out.push(Some(value));
        return;
    };
    match value {
        Bson::Document(doc) => values(doc, rest, out),
        Bson::Array(items) => {
            let before = out.len();
            if is_index(first) {
                if let Some(item) = first.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    descend(item, tail, out);
                }
            }
            for item in items {
                if let Bson::Document(doc) = item {
                    values(doc, rest, out);
                }
            }
            if out.len() == before {
                out.push(None);
            }
        }
        _ => out.push(None),
    }
}

/// The value, and when it is an array its elements too (what most operators look at).
fn each(value: &Bson) -> impl Iterator<Item = &Bson> {
    let items: &[Bson] = match value {
        Bson::Array(items) => items,
        _ => &[],
    };
    std::iter::once(value).chain(items.iter())
}

impl Test {
    fn passes(&self, found: &[Option<&Bson>]) -> bool {
        match self {
            Test::Eq(v) => eq(found, v),
            Test::Ne(v) => !eq(found, v),
            Test::In(vs) => vs.iter().any(|v| eq(found, v)),
            Test::Nin(vs) => !vs.iter().any(|v| eq(found, v)),
            Test::Gt(v) => ordered(found, v, |o| o == Ordering::Greater),
            Test::Gte(v) => ordered(found, v, |o| o != Ordering::Less),
            Test::Lt(v) => ordered(found, v, |o| o == Ordering::Less),
            Test::Lte(v) => ordered(found, v, |o| o != Ordering::Greater),
            Test::Exists(wanted) => found.iter().any(Option::is_some) == *wanted,
            Test::Type(types) => found.iter().flatten().any(|x| each(x).any(|v| types.iter().any(|t| is_type(v, *t)))),
            Test::Size(n) => found.iter().flatten().any(|x| matches!(x, Bson::Array(items) if items.len() == *n)),
            Test::Not(tests) => !tests.iter().all(|t| t.passes(found)),
        }
    }
}

/// `$eq`: a value (or an element of an array value) equal to `v`; `null` also matches missing.
fn eq(found: &[Option<&Bson>], v: &Bson) -> bool {
    let null = bracket(v) == bracket(&Bson::Null);
    found.iter().any(|x| match x {
        None => null,
        Some(x) => each(x).any(|item| equal(item, v)),
    })
}

/// `$gt` and co.: within `v`'s type bracket only; `$gte`/`$lte` of null also match missing.
fn ordered(found: &[Option<&Bson>], v: &Bson, holds: impl Fn(Ordering) -> bool) -> bool {
    let null = bracket(v) == bracket(&Bson::Null);
    found.iter().any(|x| match x {
        None => null && holds(Ordering::Equal),
        Some(x) => each(x).any(|item| bracket(item) == bracket(v) && holds(compare(item, v))),
    })
}

fn is_type(value: &Bson, t: TypeOf) -> bool {
    match t {
        TypeOf::Number => bracket(value) == bracket(&Bson::Int32(0)),
        TypeOf::Code(code) => value.element_type() as u8 == code,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Filter;
    use bson::doc;

    fn passes(filter: &str, doc: bson::Document) -> bool {
        Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e:?}")).matches(&doc)
    }

    #[test]
    fn equality_nulls_and_arrays_as_mongodb() {
        assert!(passes(r#"{"a": 1}"#, doc! {"a": 1.0}));
        assert!(passes(r#"{"a": 1}"#, doc! {"a": [3, 1]}), "an element matches");
        assert!(passes(r#"{"a": [3, 1]}"#, doc! {"a": [3, 1]}), "the array as a whole");
        assert!(passes(r#"{"a": null}"#, doc! {"b": 1}), "null matches missing");
        assert!(!passes(r#"{"a": {"$ne": null}}"#, doc! {"b": 1}));
        assert!(passes(r#"{"a.b": "x"}"#, doc! {"a": [{"b": "y"}, {"b": "x"}]}));
        assert!(passes(r#"{"a.b": null}"#, doc! {"a": [{"b": 1}, {"c": 2}]}), "an element without the field");
        assert!(passes(r#"{"a.1.b": 2}"#, doc! {"a": [{"b": 1}, {"b": 2}]}), "a position");
        assert!(passes(r#"{"a": {"x": 1, "y": 2}}"#, doc! {"a": {"x": 1, "y": 2}}));
        assert!(!passes(r#"{"a": {"x": 1, "y": 2}}"#, doc! {"a": {"y": 2, "x": 1}}), "field order counts");
        assert!(passes(r#"{"a": {"$in": [5, null]}}"#, doc! {}));
        assert!(!passes(r#"{"a": {"$nin": [5, 6]}}"#, doc! {"a": [1, 6]}));
    }

    #[test]
    fn comparisons_stay_within_their_type_bracket() {
        assert!(passes(r#"{"age": {"$gte": 18}}"#, doc! {"age": 18_i64}));
        assert!(!passes(r#"{"age": {"$gte": 18}}"#, doc! {"age": "20"}), "a string is no number");
        assert!(passes(r#"{"age": {"$gt": 18, "$lt": 30}}"#, doc! {"age": 20.5}));
        assert!(passes(r#"{"scores": {"$gt": 90}}"#, doc! {"scores": [10, 95]}));
        assert!(!passes(r#"{"age": {"$gt": 18}}"#, doc! {}), "missing never compares");
        assert!(passes(r#"{"age": {"$lte": null}}"#, doc! {}), "but null's equality does");
        assert!(passes(
            r#"{"d": {"$lt": {"$date": "2024-01-01T00:00:00Z"}}}"#,
            doc! {"d": bson::DateTime::from_millis(0)}
        ));
    }

    #[test]
    fn logic_exists_type_size_and_not() {
        let f = r#"{"$or": [{"status": "active"}, {"vip": true}], "$nor": [{"banned": true}]}"#;
        assert!(passes(f, doc! {"status": "active"}));
        assert!(passes(f, doc! {"status": "gone", "vip": true}));
        assert!(!passes(f, doc! {"status": "active", "banned": true}));
        assert!(passes(r#"{"$and": [{"a": {"$exists": true}}, {"b": {"$exists": false}}]}"#, doc! {"a": null}));
        assert!(passes(r#"{"a": {"$type": "string"}}"#, doc! {"a": ["x", 1]}));
        assert!(passes(r#"{"a": {"$type": ["number", "null"]}}"#, doc! {"a": 1_i64}));
        assert!(passes(r#"{"a": {"$type": "array"}}"#, doc! {"a": []}));
        assert!(passes(r#"{"tags": {"$size": 2}}"#, doc! {"tags": ["a", "b"]}));
        assert!(passes(r#"{"age": {"$not": {"$gte": 18}}}"#, doc! {}), "$not matches missing");
        assert!(!passes(r#"{"age": {"$not": {"$gte": 18}}}"#, doc! {"age": 40}));
    }
}
