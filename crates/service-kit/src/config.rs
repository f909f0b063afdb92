//! Layered configuration: defaults → optional TOML file → `PREFIX__SECTION__KEY` environment.
//!
//! Every problem is reported at once where that is possible: all unknown keys (found by walking
//! the input against the serialized defaults), then the first type error serde finds, then every
//! cross-field rule the service's [`Validate`] implementation breaks. Secrets are [`Secret`]s:
//! they deserialize like strings and never print.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration value that must never be printed: logs, `--print-config`, errors and
/// `/health` bodies only ever show `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for handing to a client library and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A connection string that may embed credentials: printed with them redacted
/// ([`redact_uri`]), handed to the driver whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUri(String);

impl SecretUri {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn redacted(&self) -> String {
        redact_uri(&self.0)
    }
}

impl fmt::Debug for SecretUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for SecretUri {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUri {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretUri)
    }
}

/// Reads a pass-through option map whose values may arrive as numbers or booleans (from the
/// environment, or unquoted in TOML): every value becomes its text.
pub fn deserialize_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let raw = std::collections::BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => Ok((key, text)),
            serde_json::Value::Number(n) => Ok((key, n.to_string())),
            serde_json::Value::Bool(b) => Ok((key, b.to_string())),
            other => Err(serde::de::Error::custom(format!("option `{key}` must be a single value, not {other}"))),
        })
        .collect()
}

/// Reads a list given as a sequence (TOML) or as comma-separated text (the environment).
pub fn deserialize_string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Items(Vec<String>),
        Text(String),
    }
    Ok(match List::deserialize(deserializer)? {
        List::Items(items) => items,
        List::Text(text) => text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
    })
}

/// Serializes a pass-through option map with the values of credential-like keys as `***`.
pub fn serialize_redacted_map<S: Serializer>(
    map: &std::collections::BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut out = serializer.serialize_map(Some(map.len()))?;
    for (key, value) in map {
        if is_secret_option(key.replace(['.', '_'], "").as_str()) {
            out.serialize_entry(key, "***")?;
        } else {
            out.serialize_entry(key, value)?;
        }
    }
    out.end()
}

/// Replaces the password of a `scheme://user:password@host/…` URI, and the values of query
/// options that carry credentials, with `***`, so a URI can be logged.
pub fn redact_uri(uri: &str) -> String {
    let mut out = uri.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_option(key) => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "authmechanismproperties", "tlscertificatekeyfilepassword"]
        .iter()
        .any(|word| key.contains(word))
}

/// Cross-field rules of a service's configuration.
pub trait Validate {
    /// Every problem, each a sentence naming the key and what would fix it; empty when valid.
    fn validate(&self) -> Vec<String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Source(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Loads `T` from its defaults, the optional TOML `file`, and the process environment
/// (`{env_prefix}__SECTION__KEY`, e.g. `SINK_WRITER__KAFKA__BOOTSTRAP_SERVERS`).
pub fn load<T>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    load_with_env(file, env_prefix, std::env::vars().collect())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env<T>(file: Option<&Path>, env_prefix: &str, env: HashMap<String, String>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let defaults = serde_json::to_value(T::default()).map_err(|e| ConfigError::Source(e.to_string()))?;
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::Source(format!("config file {} does not exist", path.display())));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let env: HashMap<String, String> =
        env.into_iter().filter(|(key, _)| key.starts_with(&format!("{env_prefix}__"))).collect();
    builder = builder.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    let layered = builder.build().map_err(|e| ConfigError::Source(e.to_string()))?;
    let mut given: serde_json::Value = layered.try_deserialize().map_err(|e| ConfigError::Source(e.to_string()))?;

    let mut problems = Vec::new();
    strip_unknown_keys(&defaults, &mut given, "", &mut problems);
    let mut merged = defaults;
    merge(&mut merged, given);
    match serde_path_to_error::deserialize::<_, T>(merged) {
        Ok(config) => {
            problems.extend(config.validate());
            if problems.is_empty() {
                Ok(config)
            } else {
                Err(ConfigError::Invalid(problems))
            }
        }
        Err(e) => {
            problems.push(format!("{}: {}", e.path(), e.inner()));
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Removes, and reports, every key of `given` that the defaults do not have, so that the rest
/// can still be checked. An empty object or a null in the defaults is open (a pass-through map
/// or an optional section): anything goes below it.
fn strip_unknown_keys(defaults: &serde_json::Value, given: &mut serde_json::Value, path: &str, out: &mut Vec<String>) {
    let (Some(known), Some(given)) = (defaults.as_object(), given.as_object_mut()) else { return };
    if known.is_empty() {
        return;
    }
    given.retain(|key, value| {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match known.get(key) {
            None => {
                out.push(format!(
                    "unknown key `{full}` (known here: {})",
                    known.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                ));
                false
            }
            Some(default) => {
                strip_unknown_keys(default, value, &full, out);
                true
            }
        }
    });
}

/// Overlays `given` on `base`, object by object.
fn merge(base: &mut serde_json::Value, given: serde_json::Value) {
    match (base, given) {
        (serde_json::Value::Object(base), serde_json::Value::Object(given)) => {
            for (key, value) in given {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        kafka: KafkaSample,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct KafkaSample {
        bootstrap_servers: String,
        batch_max_docs: u32,
        password: Secret,
        #[serde(deserialize_with = "deserialize_string_map")]
        options: BTreeMap<String, String>,
    }

    impl Default for KafkaSample {
        fn default() -> Self {
            Self {
                bootstrap_servers: "localhost:9092".into(),
                batch_max_docs: 10,
                password: Secret::default(),
                options: BTreeMap::new(),
            }
        }
    }

    impl Validate for Sample {
        fn validate(&self) -> Vec<String> {
            let mut problems = Vec::new();
            if self.kafka.batch_max_docs == 0 {
                problems.push("kafka.batch_max_docs must be at least 1".into());
            }
            if self.kafka.bootstrap_servers.is_empty() {
                problems.push("kafka.bootstrap_servers must not be empty".into());
            }
            problems
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_overrides_defaults() {
        let config: Sample = load_with_env(
            None,
            "APP",
            env(&[("APP__KAFKA__BATCH_MAX_DOCS", "500"), ("APP__KAFKA__PASSWORD", "hunter2"), ("OTHER", "x")]),
        )
        .expect("valid");
        assert_eq!(config.kafka.batch_max_docs, 500);
        assert_eq!(config.kafka.bootstrap_servers, "localhost:9092");
        assert_eq!(config.kafka.password.expose(), "hunter2");
        let printed = format!("{config:?} {}", serde_json::to_string(&config).expect("serializes"));
        assert!(!printed.contains("hunter2"), "secret leaked: {printed}");
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("service-kit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[kafka]\nbatch_max_docs = 7\nbootstrap_servers = \"file:1\"\n[kafka.options]\n\"linger.ms\" = \"5\"\n",
        )
        .expect("write");
        let config: Sample =
            load_with_env(Some(&path), "APP", env(&[("APP__KAFKA__BATCH_MAX_DOCS", "9")])).expect("valid");
        assert_eq!(config.kafka.batch_max_docs, 9);
        assert_eq!(config.kafka.bootstrap_servers, "file:1");
        assert_eq!(config.kafka.options.get("linger.ms").map(String::as_str), Some("5"));
        let config: Sample =
            load_with_env(None, "APP", env(&[("APP__KAFKA__OPTIONS__LINGER_MS", "7")])).expect("valid");
        assert_eq!(
            config.kafka.options.get("linger_ms").map(String::as_str),
            Some("7"),
            "numbers from the environment"
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = load_with_env::<Sample>(
            None,
            "APP",
            env(&[
                ("APP__KAFKA__BATCH_MAX_DOCS", "0"),
                ("APP__KAFKA__BOOTSTRAP_SERVERS", ""),
                ("APP__KAFKA__BOOTSTRAP", "typo"),
                ("APP__KAFAK__X", "typo"),
            ]),
        )
        .expect_err("invalid");
        let ConfigError::Invalid(problems) = err else { panic!("wrong error: {err}") };
        let text = problems.join("\n");
        assert!(text.contains("unknown key `kafka.bootstrap`"), "{text}");
        assert!(text.contains("unknown key `kafak`"), "{text}");
        assert!(text.contains("kafka.batch_max_docs must be at least 1"), "{text}");
        assert!(text.contains("kafka.bootstrap_servers must not be empty"), "{text}");
        assert_eq!(problems.len(), 4, "{text}");
    }

    #[test]
    fn validation_problems_are_all_listed() {
        let err = load_with_env::<Sample>(
            None,
            "APP",
            env(&[("APP__KAFKA__BATCH_MAX_DOCS", "0"), ("APP__KAFKA__BOOTSTRAP_SERVERS", "")]),
        )
        .expect_err("invalid");
        let ConfigError::Invalid(problems) = err else { panic!("wrong error: {err}") };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let err =
            load_with_env::<Sample>(None, "APP", env(&[("APP__KAFKA__BATCH_MAX_DOCS", "many")])).expect_err("bad");
        assert!(err.to_string().contains("kafka.batch_max_docs"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = load_with_env::<Sample>(Some(Path::new("/nonexistent/c.toml")), "APP", HashMap::new())
            .expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/c.toml"), "{err}");
    }

    #[test]
    fn redacts_uri_credentials() {
        assert_eq!(
            redact_uri("mongodb://admin:s3cr3t@db1:27017,db2/?replicaSet=rs&tls=true"),
            "mongodb://admin:***@db1:27017,db2/?replicaSet=rs&tls=true"
        );
        assert_eq!(
            redact_uri("mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:abc"),
            "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=***"
        );
        assert_eq!(redact_uri("mongodb://user@db/x"), "mongodb://user@db/x");
        assert_eq!(redact_uri("127.0.0.1:9092"), "127.0.0.1:9092");
    }
}
