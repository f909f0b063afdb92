//! `cdc-source doctor`: the source deployment, change streams on the configured scope (opened
//! where a restart would open them), the history window against the checkpoint's age, what an
//! Amazon DocumentDB target would not carry of the captured collections, Kafka and the topics
//! already there, and the transform rules each captured namespace gets.

use std::path::PathBuf;

use envelope::Namespace;
use service_kit::doctor::{self, Report};
use service_kit::documentdb_fit;

use crate::capture::large_events::Support;
use crate::capture::routing::NamespaceFilter;
use crate::capture::watch::{self, How, Start};
use crate::config::{CheckpointStore, Compat, Config, Scope};
use crate::delivery::checkpoint::{plan, Checkpoint, Plan};
use crate::delivery::store::Store;
use crate::history;

/// Runs every check; the report says what blocks the service.
pub async fn run(mut config: Config) -> Report {
    let mut report = Report::default();
    config.capture.compat = config.capture.compat.resolve(config.mongo.uri.expose());
    let client = doctor::mongo(&mut report, "source mongodb", &config.mongo, config.capture.compat).await;
    let topics = doctor::kafka(&mut report, &config.kafka).await;

    let checkpoint = if topics.is_some() || config.delivery.checkpoint_store == CheckpointStore::File {
        load_checkpoint(&mut report, &config).await
    } else {
        None
    };
    if let Some(client) = &client {
        change_streams(&mut report, client, &config, checkpoint.as_ref()).await;
        history_window(&mut report, client, &config, checkpoint.as_ref()).await;
        documentdb_target(&mut report, client, &config).await;
        transforms(&mut report, client, &config).await;
    }
    if let Some(topics) = topics {
        let prefix = format!("{}.", config.topics.prefix);
        let ours: Vec<&(String, usize)> = topics
            .iter()
            .filter(|(name, _)| {
                let single = &config.topics.single_topic;
                if single.is_empty() {
                    name.starts_with(&prefix)
                } else {
                    name == single
                }
            })
            .collect();
        if ours.is_empty() {
            report.ok("topics", format!("none yet; created on first use with {} partitions", config.topics.partitions));
        } else {
            let listed: Vec<String> = ours.iter().map(|(name, partitions)| format!("{name} ({partitions})")).collect();
            report.ok("topics", format!("{} present: {}", ours.len(), listed.join(", ")));
            let names: Vec<&str> = ours.iter().map(|(name, _)| name.as_str()).collect();
            record_limits(&mut report, &config, &names).await;
        }
    }
    report
}

/// Topics made elsewhere may take smaller records than this service may send (MSK's default is
/// 1 MB): an event between the two limits would stop the service. The limit itself is the
/// contract with sink-writer, whose `consume.max_record_bytes` must be at least as large.
async fn record_limits(report: &mut Report, config: &Config, topics: &[&str]) {
    let limit = config.delivery.max_message_bytes;
    let limits = match doctor::topic_record_limits(&config.kafka, topics).await {
        Ok(limits) => limits,
        Err(e) => return report.warn("record size", format!("cannot read topic configurations: {e}")),
    };
    let small: Vec<String> =
        limits.iter().filter(|(_, bytes)| *bytes < limit).map(|(name, bytes)| format!("{name} ({bytes})")).collect();
    if small.is_empty() {
        report.ok(
            "record size",
            format!(
                "records up to delivery.max_message_bytes ({limit}), and every topic takes them; sink-writer's \
                 consume.max_record_bytes must be at least {limit}"
            ),
        );
    } else {
        report.warn(
            "record size",
            format!(
                "{} take smaller records than delivery.max_message_bytes ({limit}): an event between the two \
                 stops the service; raise their max.message.bytes",
                small.join(", ")
            ),
        );
    }
}

async fn load_checkpoint(report: &mut Report, config: &Config) -> Option<Checkpoint> {
    let store = match config.delivery.checkpoint_store {
        CheckpointStore::Kafka => Store::Kafka {
            topic: config.checkpoint_topic(),
            key: config.capture.name.clone(),
            kafka: config.kafka.clone(),
        },
        CheckpointStore::File => Store::File { path: PathBuf::from(&config.delivery.checkpoint_file) },
    };
    match store.load().await {
        Ok(Some(checkpoint)) => {
            let position = match &checkpoint.cluster_time {
                Some(t) => format!("cluster time {}.{}", t.t, t.i),
                None => "a resume token".to_string(),
            };
            report.ok("checkpoint", format!("'{}' at {position}", config.capture.name));
            Some(checkpoint)
        }
        Ok(None) => {
            report.ok(
                "checkpoint",
                format!("none for '{}': starts with snapshot mode {:?}", config.capture.name, config.snapshot.mode),
            );
            None
        }
        Err(e) => {
            report.fail("checkpoint", e.to_string());
            None
        }
    }
}

/// Opens the change stream where the service would, and reads one batch.
async fn change_streams(
    report: &mut Report,
    client: &mongodb::Client,
    config: &Config,
    checkpoint: Option<&Checkpoint>,
) {
    let start = match plan(checkpoint, config.snapshot.mode) {
        Plan::ResumeAfter(token, _) => Start::ResumeAfter(token),
        Plan::StartAfter(time) => Start::After(time),
        _ => Start::Now,
    };
    let scope = match config.capture.scope {
        Scope::Deployment => "the deployment".to_string(),
        Scope::Database => format!("database '{}'", config.capture.database),
        Scope::Collections => format!("collections {}", config.capture.collections.join(", ")),
    };
    let (support, expanded) = match crate::server::version(client).await {
        Ok((version, parts)) => {
            let support = Support::for_version(config.capture.compat, &parts);
            report.ok("large events", format!("server {version}: events over 16 MiB are {}", support.describe()));
            (support, watch::expanded_events(config.capture.compat, &parts))
        }
        Err(e) => {
            report.warn("large events", format!("cannot read the server's version: {e}"));
            (Support::Reread, false)
        }
    };
    let how = How::normal(&config.capture, support == Support::Split, expanded);
    let result = match watch::open(client, &config.capture, &start, &how).await {
        Ok(mut stream) => stream.next_if_any().await.map(|_| ()).map_err(|e| doctor::explain_mongo(&e)),
        Err(e) => Err(doctor::explain_mongo(&e)),
    };
    match result {
        Ok(()) => {
            let at = match start {
                Start::ResumeAfter(_) => "after the checkpoint's resume token".to_string(),
                Start::After(t) => format!("after cluster time {}.{}", t.t, t.i),
                Start::Now => "from now".to_string(),
            };
            report.ok("change streams", format!("open on {scope}, {at}"))
        }
        Err(e)
            if ["ChangeStreamHistoryLost", "CappedPositionLost", "resume point may no longer be in the oplog"]
                .iter()
                .any(|lost| e.contains(lost)) =>
        {
            report.fail("change streams", format!("the checkpoint's position is gone from the source's history: {e}"))
        }
        Err(e) => {
            let hint = if config.capture.compat == Compat::Documentdb {
                " (on DocumentDB enable them: db.adminCommand({modifyChangeStreams: 1, database: \"<db>\", collection: \"\", enable: true}))"
            } else if e.contains("replica set") || e.contains("40573") {
                " (change streams need a replica set or sharded cluster)"
            } else {
                ""
            };
            report.fail("change streams", format!("not usable on {scope}: {e}{hint}"));
        }
    }
}

/// What an Amazon DocumentDB target would not carry of the captured collections. This service
/// does not know its target: warnings to read when it is DocumentDB (sink-writer's `doctor`,
/// which knows, makes dead-lettered documents a blocker).
async fn documentdb_target(report: &mut Report, client: &mongodb::Client, config: &Config) {
    let filter = match NamespaceFilter::new(&config.capture) {
        Ok(filter) => filter,
        Err(e) => return report.warn("documentdb target", format!("capture.include / exclude: {e}")),
    };
    let wanted = |db: &str, coll: &str| filter.wants(&Namespace::new(db, coll));
    match documentdb_fit::survey(client, |db| filter.wants_database(db), wanted).await {
        Ok(fits) => documentdb_fit::report(report, &fits, "if the target is Amazon DocumentDB: ", false),
        Err(e) => report
            .warn("documentdb target", format!("cannot read the captured collections: {}", doctor::explain_mongo(&e))),
    }
}

/// How long the source keeps history, against the checkpoint's age.
async fn history_window(
    report: &mut Report,
    client: &mongodb::Client,
    config: &Config,
    checkpoint: Option<&Checkpoint>,
) {
    let now_s = crate::server::now_ms() / 1000;
    let (window, source) = match history::window(client, &config.capture, now_s).await {
        Ok(w) => w,
        Err(e) => {
            report.warn("history window", format!("cannot read it: {} (set capture.history_retention_hours)", e.kind));
            return;
        }
    };
    let from = match source {
        history::Source::Oplog => "oplog window",
        history::Source::Configured => "capture.history_retention_hours",
        history::Source::DocumentdbDefault => "DocumentDB's default retention (set capture.history_retention_hours)",
    };
    let age = checkpoint.and_then(|c| c.cluster_time).map(|t| now_s - i64::from(t.t));
    let hours = |s: i64| format!("{:.1} h", s as f64 / 3600.0);
    match age {
        None => report.ok("history window", format!("{} ({from})", hours(window))),
        Some(age) if age > window => report.fail(
            "history window",
            format!("checkpoint is {} old, history keeps {} ({from}): resnapshot needed", hours(age), hours(window)),
        ),
        Some(age) if age * 2 > window => report.warn(
            "history window",
            format!("checkpoint is {} old, over half of the {} kept ({from})", hours(age), hours(window)),
        ),
        Some(age) => {
            report.ok("history window", format!("checkpoint {} old of {} kept ({from})", hours(age), hours(window)))
        }
    }
}

/// The rules each captured namespace gets, with the indexes and options they leave out of the
/// target; rules that match no captured namespace are a warning (a typo in `namespaces`?).
async fn transforms(report: &mut Report, client: &mongodb::Client, config: &Config) {
    let rules = match transform::Rules::load(&config.transforms) {
        Ok(rules) if rules.is_empty() => return,
        Ok(rules) => rules,
        Err(problems) => return report.fail("transforms", problems.join("; ")),
    };
    let listed = match crate::capture::routing::NamespaceFilter::new(&config.capture) {
        Ok(filter) => crate::capture::schema::captured(client, &filter).await,
        Err(e) => return report.fail("transforms", format!("capture patterns: {e}")),
    };
    let listed = match listed {
        Ok(listed) => listed,
        Err(e) => return report.warn("transforms", format!("cannot list the captured namespaces: {e}")),
    };
    let mut used = std::collections::BTreeSet::new();
    for l in listed.iter().filter(|l| !l.view) {
        let Some(rule) = rules.for_namespace(&l.ns.to_string()) else { continue };
        used.insert(rule.namespaces.clone());
        report.ok("transforms", format!("{} (rule '{}'): {}", l.ns, rule.namespaces, rule.describe().join("; ")));
        let indexes = crate::capture::schema::indexes(client, &l.ns).await.unwrap_or_default();
        let (_, mut left_out) = rule.indexes(indexes);
        left_out.extend(rule.options(l.options.clone()).1);
        for what in left_out {
            report.warn("transforms", format!("{}: {what}", l.ns));
        }
    }
    for rule in rules.all().filter(|r| !used.contains(&r.namespaces)) {
        report.warn("transforms", format!("rule '{}' matches no captured collection (yet)", rule.namespaces));
    }
}
