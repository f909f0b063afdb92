//! BSON values ordered and compared the way MongoDB's query operators do: a type bracket first
//! (numbers of every type together, strings with symbols, null with undefined), then the value.

use std::cmp::Ordering;

use bson::{Bson, Document};

/// MongoDB's canonical type order.
pub fn bracket(value: &Bson) -> u8 {
    match value {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 127,
    }
}

enum Number {
    Int(i64),
    Float(f64),
}

fn number(value: &Bson) -> Option<Number> {
    match value {
        Bson::Int32(n) => Some(Number::Int(i64::from(*n))),
        Bson::Int64(n) => Some(Number::Int(*n)),
        Bson::Double(n) => Some(Number::Float(*n)),
        Bson::Decimal128(d) => d.to_string().parse::<f64>().ok().map(Number::Float),
        _ => None,
    }
}

fn float(n: &Number) -> f64 {
    match n {
        Number::Int(i) => *i as f64,
        Number::Float(f) => *f,
    }
}

/// NaN below every other number, as MongoDB sorts it.
fn compare_floats(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The order of two values, brackets first.
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let (ba, bb) = (bracket(a), bracket(b));
    if ba != bb {
        return ba.cmp(&bb);
    }
    match (a, b) {
        _ if ba == 10 => match (number(a), number(b)) {
            (Some(Number::Int(x)), Some(Number::Int(y))) => x.cmp(&y),
            (Some(x), Some(y)) => compare_floats(float(&x), float(&y)),
            _ => Ordering::Equal,
        },
        _ if ba == 15 => text(a).cmp(text(b)),
        (Bson::Document(x), Bson::Document(y)) => compare_documents(x, y),
        (Bson::Array(x), Bson::Array(y)) => {
            for (u, v) in x.iter().zip(y) {
                let order = compare(u, v);
                if order != Ordering::Equal {
                    return order;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then(u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then(x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => {
            (&x.pattern, &x.options).cmp(&(&y.pattern, &y.options))
        }
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn text(value: &Bson) -> &str {
    match value {
        Bson::String(s) | Bson::Symbol(s) => s,
        _ => "",
    }
}

/// Element by element: the value's bracket, then the name, then the value.
fn compare_documents(x: &Document, y: &Document) -> Ordering {
    for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
        let order = bracket(va).cmp(&bracket(vb)).then_with(|| ka.cmp(kb)).then_with(|| compare(va, vb));
        if order != Ordering::Equal {
            return order;
        }
    }
    x.len().cmp(&y.len())
}

/// Equal as a query's `$eq` sees it (1, 1.0 and 1L are equal; field order counts).
pub fn equal(a: &Bson, b: &Bson) -> bool {
    bracket(a) == bracket(b) && compare(a, b) == Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc};

    #[test]
    fn numbers_compare_across_types_and_brackets_order_types() {
        assert!(equal(&Bson::Int32(1), &Bson::Double(1.0)));
        assert!(equal(&Bson::Int64(7), &Bson::Decimal128("7".parse().expect("decimal"))));
        assert_eq!(compare(&Bson::Int64(i64::MAX), &Bson::Int64(i64::MAX - 1)), Ordering::Greater);
        assert_eq!(compare(&Bson::Double(f64::NAN), &Bson::Int32(-5)), Ordering::Less);
        assert_eq!(compare(&Bson::Int32(100), &Bson::String("1".into())), Ordering::Less, "numbers before strings");
        assert!(equal(&Bson::Null, &Bson::Undefined));
        assert!(!equal(&bson!({"a": 1, "b": 2}), &bson!({"b": 2, "a": 1})), "field order counts");
        assert!(equal(&Bson::Document(doc! {"a": 1}), &Bson::Document(doc! {"a": 1.0})));
        assert_eq!(compare(&bson!([1, 2]), &bson!([1, 3])), Ordering::Less);
    }
}
