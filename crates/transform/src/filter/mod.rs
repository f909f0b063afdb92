//! `filter`: which documents are replicated, as a query in a subset of MongoDB's language, read
//! from extended JSON and evaluated on the whole source document.
//!
//! Supported: `{path: value}` (equality; a document value must equal as a whole, field order
//! counting), and on a path `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$in`, `$nin`,
//! `$exists`, `$type`, `$size` and `$not`; at any level `$and`, `$or`, `$nor`. Paths go through
//! arrays of documents as MongoDB's do (an array matches when the array or one element does),
//! numbers compare across types, comparisons stay within a type bracket, and `null` matches a
//! missing field. Anything else (`$regex` and regular expression values, `$elemMatch`, `$all`,
//! `$expr`, `$where`, `$text`, geo) is refused when the configuration is read.

mod compare;
mod eval;

use bson::{Bson, Document};

pub use compare::{compare, equal};

/// A parsed filter.
#[derive(Debug, Clone)]
pub struct Filter {
    expr: Expr,
    paths: Vec<String>,
    text: String,
}

#[derive(Debug, Clone)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Nor(Vec<Expr>),
    /// Every test on the values the path leads to.
    Field(String, Vec<Test>),
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Bson),
    Ne(Bson),
    Gt(Bson),
    Gte(Bson),
    Lt(Bson),
    Lte(Bson),
    In(Vec<Bson>),
    Nin(Vec<Bson>),
    Exists(bool),
    Type(Vec<TypeOf>),
    Size(usize),
    Not(Vec<Test>),
}

/// A `$type` alternative: an element type code, or `"number"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeOf {
    Code(u8),
    Number,
}

const FIELD_OPERATORS: &str = "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $type, $size, $not";

impl Filter {
    /// Parses extended JSON; every problem at once.
    pub fn parse(text: &str) -> Result<Filter, Vec<String>> {
        let doc = envelope::extjson::document_from_str(text)
            .map_err(|e| vec![format!("filter is not an extended JSON document: {e}")])?;
        let mut problems = Vec::new();
        let expr = expression(&doc, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut paths = Vec::new();
        expr.paths(&mut paths);
        paths.sort();
        paths.dedup();
        Ok(Filter { expr, paths, text: text.trim().to_string() })
    }

    /// Whether the document passes.
    pub fn matches(&self, doc: &Document) -> bool {
        self.expr.matches(doc)
    }

    /// The field paths the filter reads.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// As configured.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Expr {
    fn paths(&self, out: &mut Vec<String>) {
        match self {
            Expr::And(all) | Expr::Or(all) | Expr::Nor(all) => all.iter().for_each(|e| e.paths(out)),
            Expr::Field(path, _) => out.push(path.clone()),
        }
    }
}

fn expression(doc: &Document, problems: &mut Vec<String>) -> Expr {
    let mut all = Vec::new();
    for (key, value) in doc {
        match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let parts: Vec<Expr> = match value {
                    Bson::Array(items) if !items.is_empty() => items
                        .iter()
                        .filter_map(|item| match item {
                            Bson::Document(d) => Some(expression(d, problems)),
                            _ => {
                                problems.push(format!("filter: {key} takes documents"));
                                None
                            }
                        })
                        .collect(),
                    _ => {
                        problems.push(format!("filter: {key} takes a non-empty array"));
                        Vec::new()
                    }
                };
                all.push(match key.as_str() {
                    "$and" => Expr::And(parts),
                    "$or" => Expr::Or(parts),
                    _ => Expr::Nor(parts),
                });
            }
            other if other.starts_with('$') => {
                problems.push(format!("filter: unknown operator {other} (supported at the top: $and, $or, $nor)"))
            }
            path => {
                if path.split('.').any(|p| p.is_empty() || p.starts_with('$')) {
                    problems.push(format!("filter: '{path}' is not a field path"));
                }
                all.push(Expr::Field(path.to_string(), tests(path, value, problems)));
            }
        }
    }
    Expr::And(all)
}

fn tests(path: &str, value: &Bson, problems: &mut Vec<String>) -> Vec<Test> {
    let operators = matches!(value, Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')));
    if !operators {
        if let Bson::RegularExpression(_) = value {
            problems.push(format!("filter on '{path}': regular expressions are not supported"));
        }
        return vec![Test::Eq(value.clone())];
    }
    let Bson::Document(ops) = value else { return Vec::new() };
    let mut out = Vec::new();
    for (op, operand) in ops {
        let test = match op.as_str() {
            "$eq" => Test::Eq(operand.clone()),
            "$ne" => Test::Ne(operand.clone()),
            "$gt" => Test::Gt(operand.clone()),
            "$gte" => Test::Gte(operand.clone()),
            "$lt" => Test::Lt(operand.clone()),
            "$lte" => Test::Lte(operand.clone()),
            "$in" | "$nin" => {
                let Bson::Array(items) = operand else {
                    problems.push(format!("filter on '{path}': {op} takes an array"));
                    continue;
                };
                if items.iter().any(|i| matches!(i, Bson::RegularExpression(_))) {
                    problems.push(format!("filter on '{path}': regular expressions are not supported"));
                }
                if op == "$in" {
                    Test::In(items.clone())
                } else {
                    Test::Nin(items.clone())
                }
            }
            "$exists" => match operand {
                Bson::Boolean(b) => Test::Exists(*b),
                Bson::Int32(n) => Test::Exists(*n != 0),
                Bson::Int64(n) => Test::Exists(*n != 0),
                _ => {
                    problems.push(format!("filter on '{path}': $exists takes true or false"));
                    continue;
                }
            },
            "$size" => match operand.as_i64().or_else(|| operand.as_i32().map(i64::from)) {
                Some(n) if n >= 0 => Test::Size(n as usize),
                _ => {
                    problems.push(format!("filter on '{path}': $size takes a whole number"));
                    continue;
                }
            },
            "$type" => {
                let items = match operand {
                    Bson::Array(items) => items.clone(),
                    one => vec![one.clone()],
                };
                let types: Vec<TypeOf> = items.iter().filter_map(|t| type_of(t, path, problems)).collect();
                Test::Type(types)
            }
            "$not" => match operand {
                Bson::Document(_) => Test::Not(tests(path, operand, problems)),
                _ => {
                    problems.push(format!("filter on '{path}': $not takes a document of operators"));
                    continue;
                }
            },
            other if other.starts_with('$') => {
                problems.push(format!("filter on '{path}': unknown operator {other} (supported: {FIELD_OPERATORS})"));
                continue;
            }
            other => {
                problems.push(format!("filter on '{path}': '{other}' mixed with operators"));
                continue;
            }
        };
        out.push(test);
    }
    out
}

fn type_of(value: &Bson, path: &str, problems: &mut Vec<String>) -> Option<TypeOf> {
    let code = match value {
        Bson::String(name) => match name.as_str() {
            "number" => return Some(TypeOf::Number),
            "double" => 1,
            "string" => 2,
            "object" => 3,
            "array" => 4,
            "binData" => 5,
            "undefined" => 6,
            "objectId" => 7,
            "bool" => 8,
            "date" => 9,
            "null" => 10,
            "regex" => 11,
            "javascript" => 13,
            "int" => 16,
            "timestamp" => 17,
            "long" => 18,
            "decimal" => 19,
            "minKey" => 0xFF,
            "maxKey" => 0x7F,
            other => {
                problems.push(format!("filter on '{path}': unknown $type '{other}'"));
                return None;
            }
        },
        number => {
            match number.as_i64().or_else(|| number.as_i32().map(i64::from)).or(number.as_f64().map(|f| f as i64)) {
                Some(-1) => 0xFF,
                Some(n) if (1..=19).contains(&n) || n == 127 => n as u8,
                _ => {
                    problems.push(format!("filter on '{path}': unknown $type {number}"));
                    return None;
                }
            }
        }
    };
    Some(TypeOf::Code(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn filter(text: &str) -> Filter {
        Filter::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn unknown_operators_and_regexes_are_all_refused() {
        let problems = Filter::parse(
            r#"{"$where": "1", "a": {"$regex": "x"}, "b": {"$in": 3}, "c": {"$gt": 1, "d": 2}, "e": {"$regularExpression": {"pattern": "x", "options": ""}}}"#,
        )
        .expect_err("refused");
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("unknown operator $where")), "{problems:#?}");
        assert!(Filter::parse("not json").is_err());
    }

    #[test]
    fn paths_are_collected() {
        let f = filter(r#"{"status": "active", "$or": [{"age": {"$gte": 18}}, {"addresses.country": "FR"}]}"#);
        assert_eq!(f.paths(), ["addresses.country", "age", "status"]);
        assert!(f.matches(&doc! {"status": "active", "age": 20}));
    }
}
