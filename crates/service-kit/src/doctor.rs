//! `<service> doctor`: checks a configuration against the real deployment and prints a report,
//! one line per check; the process exits 1 when any check is a blocker. The checks both
//! services share live here (MongoDB, Kafka, topics); each service adds its own.

use std::fmt;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use bson::{doc, Document};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

use crate::connect::{Compat, KafkaConnection, MongoConnection};
use crate::msk_region::{self, RegionSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works now but needs attention.
    Warn,
    /// The service cannot work like this.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

/// The checks, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn add(&mut self, name: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.checks.push(Check { name: name.into(), status, detail: detail.into() });
    }

    pub fn ok(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Ok, detail);
    }

    pub fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Warn, detail);
    }

    pub fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Fail, detail);
    }

    pub fn blockers(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Fail).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            writeln!(f, "{mark}  {:<width$}  {}", c.name, c.detail)?;
        }
        let warnings = self.checks.iter().filter(|c| c.status == Status::Warn).count();
        match self.blockers() {
            0 => writeln!(f, "\nno blockers ({warnings} warning(s))"),
            n => writeln!(f, "\n{n} blocker(s), {warnings} warning(s): the service cannot run like this"),
        }
    }
}

/// Connects, authenticates and reads the server's identity. Returns the client when usable: one
/// that asks only what `compat` allows, as the service's own does (on DocumentDB, no retryable
/// writes, also when the endpoint's name does not say DocumentDB).
pub async fn mongo(
    report: &mut Report,
    name: &str,
    connection: &MongoConnection,
    compat: Compat,
) -> Option<mongodb::Client> {
    let uri = connection.uri.redacted();
    let aws = connection.uses_aws_auth();
    if aws {
        match crate::aws_identity::credentials().await {
            Ok(credentials) => report.ok(
                format!("{name} auth"),
                format!("MONGODB-AWS: credentials from {}", crate::aws_identity::describe(&credentials)),
            ),
            Err(reason) => {
                report.fail(format!("{name} auth"), format!("MONGODB-AWS: {reason}"));
                return None;
            }
        }
    }
    let client = match connection.client_for("doctor", compat).await {
        Ok(client) => client,
        Err(e) => {
            report.fail(name, format!("{uri}: {}", e.kind));
            return None;
        }
    };
    let admin = client.database("admin");
    match admin.run_command(doc! {"hello": 1}).await {
        Ok(hello) => {
            let version = admin
                .run_command(doc! {"buildInfo": 1})
                .await
                .ok()
                .and_then(|b| b.get_str("version").ok().map(String::from))
                .unwrap_or_else(|| "unknown version".into());
            let topology = match (hello.get_str("setName"), hello.get_str("msg")) {
                (Ok(set), _) => format!("replica set '{set}'"),
                (_, Ok("isdbgrid")) => "sharded cluster (mongos)".to_string(),
                _ => "standalone (no change streams, no majority write concern)".to_string(),
            };
            report.ok(name, format!("{uri}: {version}, {topology}"));
            Some(client)
        }
        Err(e) if aws => {
            report.fail(name, format!("{uri}: {}", explain_mongo_aws(&e)));
            None
        }
        Err(e) => {
            report.fail(name, format!("{uri}: {}", explain_mongo(&e)));
            None
        }
    }
}

/// A refused MONGODB-AWS authentication in words an operator acts on; the driver's errors
/// never carry the keys.
pub fn explain_mongo_aws(e: &mongodb::error::Error) -> String {
    let text = e.kind.to_string();
    let refused = ["Authentication failed", "AuthenticationFailed", "MONGODB-AWS", "mechanism"];
    if refused.iter().any(|word| text.contains(word)) {
        format!(
            "{text} (MONGODB-AWS refused: the deployment must accept MONGODB-AWS and know the IAM role or user of \
             these credentials: on MongoDB Atlas a database user for the role ARN, on Amazon DocumentDB IAM \
             authentication with a user for the role ARN in $external)"
        )
    } else {
        explain_mongo(e)
    }
}

/// A MongoDB error in words an operator acts on.
pub fn explain_mongo(e: &mongodb::error::Error) -> String {
    let text = e.kind.to_string();
    let hint = if text.contains("Authentication failed") || text.contains("AuthenticationFailed") {
        " (check the user, password and authSource in the URI)"
    } else if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
        " (check tls=true and tlsCAFile, e.g. DocumentDB's global-bundle.pem)"
    } else if text.contains("Server selection timeout") {
        " (host, port, network path, security groups)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// Keeps the first error librdkafka reports (authentication and TLS failures arrive this way,
/// while the request itself only times out).
#[derive(Clone, Default)]
struct FirstError(Arc<Mutex<Option<String>>>, Option<crate::kafka_auth::TokenSource>);

impl ClientContext for FirstError {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::kafka_auth::AuthContext::generate(&self.1)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| format!("{error}: {reason}"));
    }
}

impl ConsumerContext for FirstError {}

/// The region MSK IAM tokens are signed for and why; a warning when `kafka.aws_region`
/// overrides the region the cluster's host names, or when the process's own region differs.
pub fn kafka_region(report: &mut Report, connection: &KafkaConnection) -> bool {
    const CHECK: &str = "kafka region";
    let signing = match connection.signing_region() {
        Ok(signing) => signing,
        Err(e) => {
            report.fail(CHECK, e.to_string());
            return false;
        }
    };
    report.ok(CHECK, format!("{signing}; MSK IAM tokens are signed for it"));
    if signing.source == RegionSource::Configured {
        if let Ok(Some(named)) = msk_region::region_of_hosts(&connection.aws_region_host, &connection.bootstrap_servers)
        {
            if named.region != signing.region {
                report.warn(
                    CHECK,
                    format!(
                        "kafka.aws_region {} overrides {named}: MSK refuses tokens signed for another region than \
                         the cluster's; remove kafka.aws_region",
                        signing.region
                    ),
                );
            }
        }
    }
    let from_env = matches!(signing.source, RegionSource::Environment(_));
    if let Some((var, region)) = msk_region::environment_region(msk_region::process_env) {
        if !from_env && region != signing.region {
            report.warn(
                CHECK,
                format!(
                    "{var} is {region}, the region this process runs in (STS and other AWS calls stay there); \
                     MSK IAM tokens are signed for {} instead, as a cluster in another region needs",
                    signing.region
                ),
            );
        }
    }
    true
}

/// Asks a broker for metadata. Returns the topics and their partition counts when usable.
pub async fn kafka(report: &mut Report, connection: &KafkaConnection) -> Option<Vec<(String, usize)>> {
    let token_source = connection.token_source();
    if token_source.is_some() && !kafka_region(report, connection) {
        return None;
    }
    if let Some(source) = &token_source {
        let signed = match crate::aws_identity::credentials().await {
            Ok(credentials) => source.token().map(|_| crate::aws_identity::describe(&credentials)),
            Err(reason) => Err(reason),
        };
        match signed {
            Ok(described) => report.ok(
                "kafka auth",
                format!(
                    "MSK IAM for {}: credentials from {described}; token signed (valid {} s)",
                    source.region,
                    source.lifetime.as_secs()
                ),
            ),
            Err(reason) => {
                report.fail("kafka auth", format!("MSK IAM for {}: {reason}", source.region));
                return None;
            }
        }
    }
    let first_error = FirstError(Arc::default(), token_source);
    let consumer: BaseConsumer<FirstError> = match connection.client_config().create_with_context(first_error.clone()) {
        Ok(c) => c,
        Err(e) => {
            report.fail("kafka", format!("{}: bad client settings: {e}", connection.bootstrap_servers));
            return None;
        }
    };
    let bootstrap = connection.bootstrap_servers.clone();
    let result = tokio::task::spawn_blocking(move || {
        crate::kafka_auth::serve_events(&consumer);
        let answer = consumer.fetch_metadata(None, Duration::from_secs(10)).map(|m| {
            let topics: Vec<(String, usize)> = m
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect();
            (m.brokers().len(), topics)
        });
        if answer.is_err() {
            // Error events (authentication, TLS) reach the context only when the queue is served.
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        }
        answer
    })
    .await;
    match result {
        Ok(Ok((brokers, topics))) => {
            report.ok("kafka", format!("{bootstrap}: {brokers} broker(s), {} topic(s) visible", topics.len()));
            Some(topics)
        }
        Ok(Err(e)) => {
            let cause = first_error.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let cause = cause.map(|c| format!(" ({c})")).unwrap_or_default();
            report.fail(
                "kafka",
                format!("{bootstrap}: {e}{cause}; check brokers, security.protocol, SASL credentials, ssl.ca.location"),
            );
            None
        }
        Err(e) => {
            report.fail("kafka", format!("metadata task: {e}"));
            None
        }
    }
}

/// Writes and removes one document in `db.collection`: proves write permission.
pub async fn can_write(client: &mongodb::Client, db: &str, collection: &str) -> Result<(), String> {
    let coll = client.database(db).collection::<Document>(collection);
    let id = format!("doctor-{}", std::process::id());
    coll.insert_one(doc! {"_id": &id, "at": bson::DateTime::now()}).await.map_err(|e| explain_mongo(&e))?;
    coll.delete_one(doc! {"_id": &id}).await.map(|_| ()).map_err(|e| explain_mongo(&e))
}

/// The `max.message.bytes` of each of `topics` (the largest record batch each takes).
pub async fn topic_record_limits(
    connection: &KafkaConnection,
    topics: &[&str],
) -> Result<Vec<(String, usize)>, String> {
    use rdkafka::admin::{AdminOptions, OwnedResourceSpecifier, ResourceSpecifier};
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin = connection.admin().map_err(|e| e.to_string())?;
    let specifiers: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(10)));
    let described = admin.describe_configs(specifiers.iter(), &options).await.map_err(|e| e.to_string())?;
    Ok(described
        .into_iter()
        .flatten()
        .filter_map(|resource| {
            let bytes = resource.get("max.message.bytes")?.value.as_deref()?.parse::<usize>().ok()?;
            match &resource.specifier {
                OwnedResourceSpecifier::Topic(name) => Some((name.clone(), bytes)),
                _ => None,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_blockers_and_renders_each_check() {
        let mut report = Report::default();
        report.ok("mongodb", "replica set 'rs0'");
        report.warn("history", "checkpoint is 2 h old of a 3 h window");
        report.fail("change streams", "not a replica set");
        assert_eq!(report.blockers(), 1);
        let text = report.to_string();
        assert!(text.contains("FAIL  change streams  not a replica set"), "{text}");
        assert!(text.contains("1 blocker(s), 1 warning(s)"), "{text}");
    }
}
