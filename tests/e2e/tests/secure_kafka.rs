//! Both services through the broker's SASL_SSL listener (SCRAM-SHA-512 over TLS, as on Amazon
//! MSK): the data arrives; a wrong password is a clear blocker and never printed.

use std::time::Duration;

use bson::doc;
use e2e::doctor;
use e2e::pipeline::Pipeline;
use test_support::services;

fn secure_options(password: &str) -> Vec<(String, String)> {
    let s = services().kafka_sasl_ssl;
    vec![
        ("security.protocol".into(), "SASL_SSL".into()),
        ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
        ("sasl.username".into(), s.user),
        ("sasl.password".into(), password.to_string()),
        ("ssl.ca.location".into(), s.ca_file),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_over_sasl_ssl_with_scram_sha_512() {
    let secure = services().kafka_sasl_ssl;
    let mut p = Pipeline::new("sasl", 2).await;
    for config in [&mut p.source_config.kafka, &mut p.sink_config.kafka] {
        config.bootstrap_servers = secure.bootstrap.clone();
        config.options.extend(secure_options(&secure.password));
    }
    let coll = p.source_db().collection::<bson::Document>("orders");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "v": i})).await.expect("insert");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    coll.update_many(doc! {}, doc! {"$inc": {"v": 1}}).await.expect("update");
    coll.delete_many(doc! {"v": {"$gt": 90}}).await.expect("delete");
    p.converged(Duration::from_secs(60)).await;
    sink.stop().await;
    source.stop().await;
}

#[tokio::test]
async fn a_wrong_scram_password_is_a_clear_blocker_that_never_shows_the_password() {
    let servers = services();
    let wrong = "Not-the-scram-password-42";
    let options: Vec<(String, String)> = secure_options(wrong)
        .into_iter()
        .map(|(k, v)| (format!("KAFKA__OPTIONS__{}", k.replace('.', "_").to_uppercase()), v))
        .collect();
    let mut env: Vec<(&str, String)> = options.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    env.push(("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_sasl_ssl.bootstrap.clone()));
    env.push(("MONGO__URI", servers.service_target_uri.clone()));
    if let Some((_, compat)) = e2e::profile_compat("sink-writer") {
        env.push(("APPLY__COMPAT", compat));
    }
    let (ok, report) = doctor("sink-writer", &env).await;
    assert!(!ok, "{report}");
    assert!(report.contains("FAIL  kafka"), "{report}");
    assert!(report.to_lowercase().contains("authentication"), "the reason names authentication: {report}");
    assert!(!report.contains(wrong), "the password leaked: {report}");
}
