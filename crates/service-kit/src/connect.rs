//! Connection settings for MongoDB and Kafka (`kafka_connection`), shared by both services, and
//! the cheap checks that tell readiness whether each answers.

use std::time::Duration;

use mongodb::options::{AuthMechanism, ClientOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

use crate::config::SecretUri;
use crate::kafka_auth::AuthContext;
pub use crate::kafka_connection::KafkaConnection;

/// What the services may ask of the MongoDB deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    /// `documentdb` for Amazon DocumentDB endpoints (`*.docdb.amazonaws.com`), else `mongodb`.
    #[default]
    Auto,
    /// MongoDB 6.0 and later.
    Mongodb,
    /// Amazon DocumentDB: no pre-images, no `startAfter`, no retryable writes, a reduced
    /// change-stream pipeline and query surface.
    Documentdb,
}

impl Compat {
    /// Resolves `auto` from the connection string's hosts.
    pub fn resolve(self, uri: &str) -> Compat {
        match self {
            Compat::Auto => {
                let hosts = uri.split("://").nth(1).unwrap_or("").split(['/', '?']).next().unwrap_or("");
                let hosts = hosts.rsplit('@').next().unwrap_or(hosts).to_ascii_lowercase();
                if hosts.contains(".docdb.amazonaws.com") || hosts.contains(".docdb-elastic.amazonaws.com") {
                    Compat::Documentdb
                } else {
                    Compat::Mongodb
                }
            }
            other => other,
        }
    }
}

/// How the services authenticate to MongoDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MongoAuth {
    /// Whatever `uri` says: SCRAM user and password, X.509, or none.
    #[default]
    Uri,
    /// MONGODB-AWS with the process's AWS credentials (`aws_identity`, the SDK's chain): an
    /// IAM role as a MongoDB Atlas database user, or Amazon DocumentDB's IAM authentication.
    /// No user or password in `uri`.
    Aws,
}

/// A MongoDB deployment (replica set, Amazon DocumentDB cluster).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoConnection {
    /// Connection string, e.g. `mongodb://user:pass@host:27017/?replicaSet=rs0&tls=true`.
    /// Credentials are redacted wherever it is printed.
    pub uri: SecretUri,
    /// `uri` (default: what the connection string says) or `aws` (MONGODB-AWS).
    pub auth: MongoAuth,
    /// How long an operation waits for a suitable server before it fails, in milliseconds.
    pub server_selection_timeout_ms: u64,
}

impl Default for MongoConnection {
    fn default() -> Self {
        Self {
            uri: SecretUri::new("mongodb://127.0.0.1:27017/"),
            auth: MongoAuth::Uri,
            server_selection_timeout_ms: 10_000,
        }
    }
}

impl MongoConnection {
    /// A client for this deployment, named `app_name` in the server's logs and `currentOp`.
    pub async fn client(&self, app_name: &str) -> Result<mongodb::Client, mongodb::error::Error> {
        self.client_for(app_name, Compat::Auto).await
    }

    /// A client that asks only what `compat` allows: on DocumentDB, no retryable writes (it has
    /// none before 8.0.2; the services' writes are idempotent, so their own retries are safe).
    pub async fn client_for(&self, app_name: &str, compat: Compat) -> Result<mongodb::Client, mongodb::error::Error> {
        let mut options = ClientOptions::parse(self.uri.expose()).await?;
        if compat.resolve(self.uri.expose()) == Compat::Documentdb {
            options.retry_writes = Some(false);
        }
        options.app_name = Some(app_name.to_string());
        options.server_selection_timeout = Some(Duration::from_millis(self.server_selection_timeout_ms));
        self.apply_auth(&mut options);
        mongodb::Client::with_options(options)
    }

    /// With `auth = "aws"`, or `authMechanism=MONGODB-AWS` in the URI: MONGODB-AWS with the
    /// process's credential chain and cache (the driver would otherwise load the chain again,
    /// uncached, for every connection it authenticates).
    fn apply_auth(&self, options: &mut ClientOptions) {
        if self.auth == MongoAuth::Aws {
            let credential = options.credential.get_or_insert_with(Default::default);
            credential.mechanism = Some(AuthMechanism::MongoDbAws);
            credential.source = Some("$external".to_string());
        }
        if let Some(credential) = options.credential.as_mut() {
            if credential.mechanism == Some(AuthMechanism::MongoDbAws) && credential.username.is_none() {
                credential.aws_credential_provider = Some(crate::aws_identity::provider());
            }
        }
    }

    /// Whether MONGODB-AWS authenticates this connection (doctor names the credentials then).
    pub fn uses_aws_auth(&self) -> bool {
        self.auth == MongoAuth::Aws || uri_option(self.uri.expose(), "authMechanism").as_deref() == Some("MONGODB-AWS")
    }

    pub fn validate(&self, section: &str, problems: &mut Vec<String>) {
        let uri = self.uri.expose();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            problems.push(format!(
                "{section}.uri must start with mongodb:// or mongodb+srv:// (got '{}')",
                self.uri.redacted()
            ));
        }
        if self.server_selection_timeout_ms == 0 {
            problems.push(format!("{section}.server_selection_timeout_ms must be at least 1"));
        }
        if self.auth == MongoAuth::Aws {
            let authority = uri.split("://").nth(1).unwrap_or("").split(['/', '?']).next().unwrap_or("");
            if authority.contains('@') {
                problems.push(format!(
                    "{section}.auth = aws takes the AWS credentials of the process: remove the user and password from {section}.uri"
                ));
            }
            if let Some(mechanism) = uri_option(uri, "authMechanism").filter(|m| m != "MONGODB-AWS") {
                problems.push(format!(
                    "{section}.auth = aws uses MONGODB-AWS: remove authMechanism={mechanism} from {section}.uri"
                ));
            }
            if uri_option(uri, "authSource").is_some_and(|s| s != "$external") {
                problems.push(format!(
                    "{section}.auth = aws authenticates against $external: remove authSource from {section}.uri"
                ));
            }
        }
    }
}

/// The value of a connection string option (names are case-insensitive), percent-decoded.
fn uri_option(uri: &str, name: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    let value = query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| k.eq_ignore_ascii_case(name))?.1;
    Some(value.replace("%24", "$").replace("%2D", "-"))
}

/// Whether database `db` has a collection (or view) named `name` now.
pub async fn collection_exists(db: &mongodb::Database, name: &str) -> Result<bool, crate::error::Error> {
    let names = db
        .list_collection_names()
        .filter(mongodb::bson::doc! {"name": name})
        .await
        .map_err(|e| crate::error::Error::mongo("list collections", e))?;
    Ok(!names.is_empty())
}

/// Answers whether the deployment responds to `ping`; the error says why not (no secrets).
pub async fn ping_mongo(client: &mongodb::Client) -> Result<(), String> {
    client.database("admin").run_command(bson::doc! {"ping": 1}).await.map(|_| ()).map_err(|e| e.kind.to_string())
}

/// A Kafka client used only to ask for cluster metadata.
pub struct KafkaProbe {
    consumer: std::sync::Arc<BaseConsumer<AuthContext>>,
}

impl KafkaProbe {
    /// The client, and a thread serving its main queue while it lives: token renewals, errors
    /// and logs arrive there, and a probe asked every few seconds would serve them too late.
    pub fn new(connection: &KafkaConnection) -> Result<Self, String> {
        let consumer: BaseConsumer<AuthContext> =
            connection.client_config().create_with_context(connection.context()).map_err(|e| e.to_string())?;
        let consumer = std::sync::Arc::new(consumer);
        let weak = std::sync::Arc::downgrade(&consumer);
        std::thread::Builder::new()
            .name("kafka-probe-events".into())
            .spawn(move || {
                while let Some(consumer) = weak.upgrade() {
                    let _ = consumer.poll(Duration::from_millis(200));
                }
            })
            .map_err(|e| format!("probe thread: {e}"))?;
        Ok(Self { consumer })
    }

    /// Answers whether a broker returns metadata within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<usize, String> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(None, timeout).map(|m| m.brokers().len()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Keeps the readiness of `mongo_component` and `kafka_component` current by checking both
/// every `every`, until `shutdown`. Logs only changes of state.
pub async fn watch(
    health: crate::health::Health,
    mongo_component: &'static str,
    mongo: mongodb::Client,
    kafka_component: &'static str,
    kafka: KafkaProbe,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    health.declare(mongo_component);
    health.declare(kafka_component);
    let beat = health.register_loop("connectivity", every * 3 + Duration::from_secs(30));
    let mut last: (Option<bool>, Option<bool>) = (None, None);
    loop {
        beat.beat();
        let (mongo_state, kafka_state) = tokio::join!(
            tokio::time::timeout(every, ping_mongo(&mongo)),
            tokio::time::timeout(every, kafka.check(every))
        );
        let mongo_state = mongo_state.unwrap_or_else(|_| Err("no answer".to_string()));
        let kafka_state = kafka_state.unwrap_or_else(|_| Err("no answer".to_string())).map(|_| ());
        for (component, state, previous) in
            [(mongo_component, mongo_state, &mut last.0), (kafka_component, kafka_state, &mut last.1)]
        {
            let ok = state.is_ok();
            if *previous != Some(ok) {
                match &state {
                    Ok(()) => tracing::info!(component, "reachable"),
                    Err(reason) => tracing::warn!(component, %reason, "unreachable"),
                }
                *previous = Some(ok);
            }
            health.set(component, state.map_err(|reason| format!("unreachable: {reason}")));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Why a topic could not be created.
#[derive(Debug)]
pub enum CreateTopicError {
    /// The request did not reach the cluster or got no answer.
    Client(rdkafka::error::KafkaError),
    /// The broker refused (authorization, invalid settings, …).
    Refused(rdkafka::types::RDKafkaErrorCode),
}

impl std::fmt::Display for CreateTopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateTopicError::Client(e) => write!(f, "{e}"),
            CreateTopicError::Refused(code) => write!(f, "refused: {code}"),
        }
    }
}

/// Creates `topic` unless it exists; `Ok(true)` when this call created it.
pub async fn create_topic<C: rdkafka::ClientContext>(
    admin: &rdkafka::admin::AdminClient<C>,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) -> Result<bool, CreateTopicError> {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication_factor));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new_topic], &options).await.map_err(CreateTopicError::Client)?;
    let mut created = false;
    for result in results {
        match result {
            Ok(_) => created = true,
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(CreateTopicError::Refused(code)),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod mongo_auth_tests {
    use super::*;

    fn connection(uri: &str, auth: MongoAuth) -> MongoConnection {
        MongoConnection { uri: SecretUri::new(uri), auth, ..MongoConnection::default() }
    }

    fn problems(connection: &MongoConnection) -> Vec<String> {
        let mut problems = Vec::new();
        connection.validate("mongo", &mut problems);
        problems
    }

    #[tokio::test]
    async fn aws_auth_is_mongodb_aws_on_external_with_the_process_credential_chain() {
        let docdb = "mongodb://inventory.cluster-abc.us-west-2.docdb.amazonaws.com:27017/?tls=true&replicaSet=rs0";
        let aws = connection(docdb, MongoAuth::Aws);
        assert!(problems(&aws).is_empty(), "{:?}", problems(&aws));
        assert!(aws.uses_aws_auth());
        let mut options = ClientOptions::parse(docdb).await.expect("parses");
        aws.apply_auth(&mut options);
        let credential = options.credential.expect("a credential");
        assert_eq!(credential.mechanism, Some(AuthMechanism::MongoDbAws));
        assert_eq!(credential.source.as_deref(), Some("$external"));
        assert!(credential.aws_credential_provider.is_some(), "the shared chain, not the driver's own");

        // The same mechanism named in the URI gets the shared chain too.
        let in_uri = "mongodb://cluster0.abcde.mongodb.net/?authSource=%24external&authMechanism=MONGODB-AWS";
        let named = connection(in_uri, MongoAuth::Uri);
        assert!(named.uses_aws_auth());
        let mut options = ClientOptions::parse(in_uri).await.expect("parses");
        named.apply_auth(&mut options);
        assert!(options.credential.expect("credential").aws_credential_provider.is_some());

        // SCRAM stays SCRAM.
        let scram = connection("mongodb://u:p@db.example:27017/", MongoAuth::Uri);
        assert!(!scram.uses_aws_auth());
        let mut options = ClientOptions::parse(scram.uri.expose()).await.expect("parses");
        scram.apply_auth(&mut options);
        assert!(options.credential.expect("credential").aws_credential_provider.is_none());
    }

    #[test]
    fn aws_auth_refuses_a_password_or_another_mechanism_in_the_uri() {
        let with_password = connection("mongodb://u:secret@db.example:27017/", MongoAuth::Aws);
        let found = problems(&with_password);
        assert!(found.len() == 1 && found[0].contains("remove the user and password"), "{found:?}");
        assert!(!found[0].contains("secret"));
        let scram = connection("mongodb://db.example/?authMechanism=SCRAM-SHA-256&authSource=admin", MongoAuth::Aws);
        let found = problems(&scram);
        assert!(found.iter().any(|p| p.contains("authMechanism=SCRAM-SHA-256")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("authSource")), "{found:?}");
    }
}

#[cfg(test)]
mod compat_tests {
    use super::Compat;

    #[test]
    fn auto_recognises_documentdb_endpoints() {
        let docdb = "mongodb://u:p@inventory.cluster-abc.us-west-2.docdb.amazonaws.com:27017/?tls=true";
        assert_eq!(Compat::Auto.resolve(docdb), Compat::Documentdb);
        assert_eq!(Compat::Auto.resolve("mongodb://127.0.0.1:27017/?replicaSet=rs0"), Compat::Mongodb);
        // A password that looks like a host does not count.
        assert_eq!(Compat::Auto.resolve("mongodb://u:x.docdb.amazonaws.com@db.example:27017/"), Compat::Mongodb);
        assert_eq!(Compat::Mongodb.resolve(docdb), Compat::Mongodb, "explicit wins");
    }
}
