//! Both services through the broker's SASL_SSL listener (SCRAM-SHA-512 over TLS, as on Amazon
//! MSK): the data arrives; a wrong password is a clear blocker and never printed.

use std::time::Duration;

use bson::doc;
use e2e::binary;
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
    let mut env: Vec<(String, String)> = secure_options(wrong)
        .into_iter()
        .map(|(k, v)| (format!("SINK_WRITER__KAFKA__OPTIONS__{}", k.replace('.', "_").to_uppercase()), v))
        .collect();
    env.push(("SINK_WRITER__KAFKA__BOOTSTRAP_SERVERS".into(), servers.kafka_sasl_ssl.bootstrap.clone()));
    env.push(("SINK_WRITER__MONGO__URI".into(), servers.mongo_target_uri.clone()));
    let out = tokio::process::Command::new(binary("sink-writer"))
        .arg("doctor")
        .env_clear()
        .envs(env)
        .output()
        .await
        .expect("doctor runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("FAIL  kafka"), "{report}");
    assert!(report.to_lowercase().contains("authentication"), "the reason names authentication: {report}");
    assert!(!report.contains(wrong), "the password leaked: {report}");
}
