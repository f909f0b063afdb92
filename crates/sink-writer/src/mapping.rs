//! Source namespace → target namespace. Pure.

use envelope::Namespace;
use regex::Regex;

use crate::config::MappingRule;

#[derive(Debug, Clone, Default)]
pub struct Mapper {
    rules: Vec<(Regex, String)>,
}

impl Mapper {
    pub fn new(rules: &[MappingRule]) -> Result<Self, regex::Error> {
        let rules = rules
            .iter()
            .map(|rule| Ok((Regex::new(&format!("^(?:{})$", rule.source))?, rule.target.clone())))
            .collect::<Result<_, regex::Error>>()?;
        Ok(Self { rules })
    }

    /// The first matching rule's target (with `$1`… expanded), or the source namespace.
    pub fn map(&self, ns: &Namespace) -> Namespace {
        let name = ns.to_string();
        for (pattern, target) in &self.rules {
            if let Some(captures) = pattern.captures(&name) {
                let mut out = String::new();
                captures.expand(target, &mut out);
                if let Some((db, coll)) = out.split_once('.') {
                    return Namespace::new(db, coll);
                }
            }
        }
        ns.clone()
    }

    /// The target database of a source database (for `dropDatabase`): where its collections map.
    pub fn map_database(&self, db: &str) -> String {
        self.map(&Namespace::new(db, "_")).db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_by_default_and_first_rule_wins() {
        let mapper = Mapper::new(&[
            MappingRule { source: r"shop\.orders".into(), target: "archive.orders_copy".into() },
            MappingRule { source: r"shop\.(.*)".into(), target: "shop_eu.$1".into() },
        ])
        .expect("valid");
        assert_eq!(mapper.map(&Namespace::new("shop", "orders")), Namespace::new("archive", "orders_copy"));
        assert_eq!(mapper.map(&Namespace::new("shop", "carts")), Namespace::new("shop_eu", "carts"));
        assert_eq!(mapper.map(&Namespace::new("other", "x")), Namespace::new("other", "x"));
        assert_eq!(mapper.map_database("shop"), "shop_eu");
    }
}
