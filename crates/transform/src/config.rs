//! The `[transforms]` section both services read: the rules (inline or from a shared file) and
//! where the hash key comes from. Serde shapes only; `rules.rs` compiles and checks them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `[transforms]` of cdc-source (applied before anything is written to Kafka) and of sink-writer
/// (`verify` compares the source passed through the same rules with the target).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    /// The rules, `[[transforms.rules]]`; for each namespace the first rule whose `namespaces`
    /// matches applies, and only that one.
    pub rules: Vec<RuleConfig>,
    /// A TOML file of `[[rules]]` tables (the same shape), used instead of `rules`: point both
    /// services at one file so cdc-source and `sink-writer verify` apply the same rules.
    pub rules_file: String,
    /// The HMAC-SHA-256 key of `hash` rules: its bytes as given (at least 16). Best from the
    /// environment (`CDC_SOURCE__TRANSFORMS__HASH_KEY`, `SINK_WRITER__TRANSFORMS__HASH_KEY`);
    /// never printed or logged.
    pub hash_key: HashKey,
    /// A file holding the HMAC key instead (its bytes, less a trailing newline), e.g. a mounted
    /// Kubernetes secret.
    pub hash_key_file: String,
}

/// A `[[rules]]` file: what `rules_file` names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesFile {
    pub rules: Vec<RuleConfig>,
}

/// One rule: which namespaces, and what happens to their documents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Anchored regular expression over `db.collection`, as `capture.include`.
    pub namespaces: String,
    /// Field paths removed (dotted; a path through an array of documents applies to every
    /// element: `addresses.phone`).
    pub exclude: Vec<String>,
    /// Field paths renamed: `"path" = "newName"`, the new name of the last part (the field stays
    /// where it is). A field already named like that beside it is dropped.
    pub rename: BTreeMap<String, String>,
    /// Field paths whose values become a fixed value of the same BSON type (`"****"`, 0, false,
    /// epoch, empty document, …); arrays element by element.
    pub mask: Vec<String>,
    /// Field paths whose values become their HMAC-SHA-256 (keyed by `hash_key`); arrays element
    /// by element. Equal values give equal hashes in every document and collection.
    pub hash: Vec<String>,
    /// How hashes are written: `string` (64 lowercase hex digits) or `binary` (32 bytes, subtype 0).
    pub hash_output: HashOutput,
    /// Only documents matching this query (extended JSON, a subset of MongoDB's query language:
    /// see docs/configuration.md) are replicated; empty = all.
    pub filter: String,
}

/// How a hash is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOutput {
    /// 64 lowercase hexadecimal digits.
    #[default]
    String,
    /// BinData subtype 0 of 32 bytes.
    Binary,
}

/// The HMAC key: read like text (numbers too, as the environment may give them), printed and
/// logged as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HashKey(String);

impl HashKey {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The key itself, for the HMAC and nowhere else.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for HashKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(HashKey(text)),
            serde_json::Value::Number(n) => Ok(HashKey(n.to_string())),
            other => Err(serde::de::Error::custom(format!("hash_key must be text, not {other}"))),
        }
    }
}

impl TransformConfig {
    /// The rules in force: `rules`, or those of `rules_file`.
    pub fn load_rules(&self) -> Result<Vec<RuleConfig>, String> {
        if self.rules_file.is_empty() {
            return Ok(self.rules.clone());
        }
        let file: RulesFile = config::Config::builder()
            .add_source(config::File::new(&self.rules_file, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| format!("transforms.rules_file {}: {e}", self.rules_file))?;
        Ok(file.rules)
    }

    /// The HMAC key, from `hash_key` or `hash_key_file`; `None` when neither is set.
    pub(crate) fn load_key(&self) -> Result<Option<Vec<u8>>, String> {
        match (self.hash_key.is_empty(), self.hash_key_file.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Err("set one of transforms.hash_key and transforms.hash_key_file, not both".into()),
            (false, true) => Ok(Some(self.hash_key.expose().as_bytes().to_vec())),
            (true, false) => {
                let mut bytes = std::fs::read(&self.hash_key_file)
                    .map_err(|e| format!("transforms.hash_key_file {} cannot be read: {e}", self.hash_key_file))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Ok(Some(bytes))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_prints() {
        let config = TransformConfig { hash_key: HashKey::new("s3cret-key-material"), ..Default::default() };
        let printed = format!("{config:?} {}", serde_json::to_string(&config).expect("json"));
        assert!(!printed.contains("s3cret"), "{printed}");
        let read: HashKey = serde_json::from_str("12345678901234567").expect("a number reads as text");
        assert_eq!(read.expose(), "12345678901234567");
    }

    #[test]
    fn a_rules_file_holds_rules_and_a_key_file_its_bytes() {
        let dir = std::env::temp_dir().join(format!("transform-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let rules = dir.join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\nnamespaces = 'crm\\.people'\nexclude = ['ssn']\nrename = { \"home.zipCode\" = \"postCode\" }\n",
        )
        .expect("write");
        let key = dir.join("key");
        std::fs::write(&key, "0123456789abcdef\n").expect("write");
        let config = TransformConfig {
            rules_file: rules.display().to_string(),
            hash_key_file: key.display().to_string(),
            ..Default::default()
        };
        let loaded = config.load_rules().expect("rules");
        assert_eq!(loaded[0].exclude, vec!["ssn".to_string()]);
        assert_eq!(
            loaded[0].rename.get("home.zipCode").map(String::as_str),
            Some("postCode"),
            "keys keep case and dots"
        );
        assert_eq!(config.load_key().expect("key"), Some(b"0123456789abcdef".to_vec()));
        let both = TransformConfig { hash_key: HashKey::new("x"), ..config };
        assert!(both.load_key().is_err());
    }
}
