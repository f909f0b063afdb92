//! Continuing an `_id`-ordered read after a given `_id` with the operators Amazon DocumentDB has
//! (no `min()`): `$gt` compares within one BSON type bracket only, so the rest of the last
//! `_id`'s bracket is one read and every later bracket, by `$type`, another. Pure.
//!
//! NaN (a double or a decimal) sorts before every other number, but no comparison matches it
//! but equality: `$gt: NaN` matches no number at all, and `$gte: NaN` only NaN. After a NaN the
//! rest of the numbers is `$gte: -Infinity` (every number but NaN).

use bson::{doc, Bson, Document};

/// BSON type brackets in the server's comparison order, as `$type` numbers. `_id` is never an
/// array, a regular expression or undefined, but they keep their places.
const BRACKETS: [&[i32]; 15] = [
    &[-1],            // MinKey
    &[10, 6],         // null, undefined
    &[1, 16, 18, 19], // double, int, long, decimal
    &[2, 14],         // string, symbol
    &[3],             // document
    &[4],             // array
    &[5],             // binary
    &[7],             // ObjectId
    &[8],             // bool
    &[9],             // date
    &[17],            // timestamp
    &[11],            // regular expression
    &[12],            // DBPointer
    &[13, 15],        // JavaScript, JavaScript with scope
    &[127],           // MaxKey
];

/// How many brackets there are.
pub const BRACKET_COUNT: usize = BRACKETS.len();

/// The `$type` numbers of bracket `index` (as [`bracket`] numbers them).
pub fn bracket_types(index: usize) -> Vec<Bson> {
    BRACKETS.get(index).map(|types| types.iter().map(|t| Bson::Int32(*t)).collect()).unwrap_or_default()
}

/// The place of `id`'s type bracket in the server's comparison order.
pub fn bracket(id: &Bson) -> usize {
    let code = match id {
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
        other => other.element_type() as i32,
    };
    BRACKETS.iter().position(|types| types.contains(&code)).unwrap_or(BRACKETS.len() - 1)
}

/// Whether `a` and `b` are compared by value by `$gt`/`$lt` (same type bracket).
pub fn same_bracket(a: &Bson, b: &Bson) -> bool {
    bracket(a) == bracket(b)
}

/// The filters that, read one after the other each sorted by `_id`, return exactly the
/// documents whose `_id` sorts after `last`.
pub fn after(last: &Bson) -> Vec<Document> {
    let index = bracket(last);
    let mut filters = Vec::new();
    if is_nan(last) {
        filters.push(doc! {"_id": {"$gte": f64::NEG_INFINITY}});
    } else if !matches!(last, Bson::MinKey | Bson::MaxKey | Bson::Null | Bson::Undefined) {
        // MinKey, null and MaxKey brackets hold one value each: nothing after it within them.
        filters.push(doc! {"_id": {"$gt": last.clone()}});
    }
    let later: Vec<Bson> =
        BRACKETS[index + 1..].iter().flat_map(|types| types.iter().map(|t| Bson::Int32(*t))).collect();
    if !later.is_empty() {
        filters.push(doc! {"_id": {"$type": later}});
    }
    filters
}

/// Whether `value` is a NaN, double or decimal (a decimal NaN's combination field is 11111).
pub fn is_nan(value: &Bson) -> bool {
    match value {
        Bson::Double(x) => x.is_nan(),
        Bson::Decimal128(d) => d.bytes()[15] & 0x7c == 0x7c,
        _ => false,
    }
}

/// Whether two `_id`s are the same key, as the server's `_id` index sees it for values of one
/// type: like `==`, but every NaN is the same as every other (`NaN != NaN` for `f64`).
pub fn same_key(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|((kx, vx), (ky, vy))| kx == ky && same_key(vx, vy))
        }
        (Bson::Array(x), Bson::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_key(x, y)),
        (x, y) if is_nan(x) && is_nan(y) => true,
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;

    fn types(filter: &Document) -> Vec<i32> {
        let spec = filter.get_document("_id").expect("an _id condition");
        spec.get_array("$type").map(|a| a.iter().filter_map(Bson::as_i32).collect()).unwrap_or_default()
    }

    #[test]
    fn a_number_continues_in_its_bracket_then_every_later_one() {
        let filters = after(&Bson::Int32(41));
        assert_eq!(filters[0], doc! {"_id": {"$gt": 41}});
        assert_eq!(types(&filters[1]), [2, 14, 3, 4, 5, 7, 8, 9, 17, 11, 12, 13, 15, 127]);
        assert_eq!(types(&after(&Bson::Double(0.5))[1]), types(&filters[1]), "one bracket for every number");
    }

    #[test]
    fn single_value_brackets_and_the_last_bracket() {
        let after_null = after(&Bson::Null);
        assert_eq!(after_null.len(), 1, "nothing else sorts equal to null");
        assert_eq!(types(&after_null[0])[..4], [1, 16, 18, 19]);
        assert_eq!(types(&after(&Bson::MinKey)[0])[..2], [10, 6]);
        assert!(after(&Bson::MaxKey).is_empty());
        let after_oid = after(&Bson::ObjectId(ObjectId::new()));
        assert_eq!(types(&after_oid[1]), [8, 9, 17, 11, 12, 13, 15, 127]);
        let after_ts = after(&Bson::Timestamp(bson::Timestamp { time: 1, increment: 1 }));
        assert_eq!(types(&after_ts[1]), [11, 12, 13, 15, 127]);
    }

    #[test]
    fn after_a_nan_come_all_other_numbers() {
        let decimal_nan = Bson::Decimal128("NaN".parse().expect("decimal NaN"));
        for nan in [Bson::Double(f64::NAN), decimal_nan.clone()] {
            let filters = after(&nan);
            assert_eq!(filters[0], doc! {"_id": {"$gte": f64::NEG_INFINITY}}, "never $gt: NaN, which matches nothing");
            assert_eq!(types(&filters[1]), types(&after(&Bson::Int32(0))[1]));
        }
        assert!(!is_nan(&Bson::Decimal128("Infinity".parse().expect("decimal"))));
        assert!(!is_nan(&Bson::Decimal128("-7.5".parse().expect("decimal"))));
        assert!(same_key(&Bson::Double(f64::NAN), &Bson::Double(-f64::NAN)));
        assert!(same_key(&doc! {"a": f64::NAN}.into(), &doc! {"a": f64::NAN}.into()));
        assert!(!same_key(&doc! {"a": f64::NAN}.into(), &doc! {"b": f64::NAN}.into()));
        assert!(!same_key(&Bson::Double(f64::NAN), &Bson::Double(1.0)));
        assert!(same_key(&decimal_nan, &decimal_nan));
    }
}
