//! The ECS task and service definitions in `deploy/ecs/`: the fields ECS (Fargate) requires, the
//! environment the binaries really accept, and the container health check really run against a
//! running service.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use e2e::{binary, free_addr, spawn, terminate};
use serde_json::Value;
use service_kit::msk_region;
use test_support::{eventually, http_get, services};

/// Fargate's CPU units and the memory (MiB) each allows.
fn fargate_memory_ok(cpu: u32, memory: u32) -> bool {
    match cpu {
        256 => [512, 1024, 2048].contains(&memory),
        512 => (1024..=4096).contains(&memory) && memory.is_multiple_of(1024),
        1024 => (2048..=8192).contains(&memory) && memory.is_multiple_of(1024),
        2048 => (4096..=16384).contains(&memory) && memory.is_multiple_of(1024),
        4096 => (8192..=30720).contains(&memory) && memory.is_multiple_of(1024),
        _ => false,
    }
}

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ecs").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("{pointer} must be a string"))
}

/// Every problem ECS would refuse or an operator would regret, for one service's task definition.
fn task_definition_problems(task: &Value, service: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_string());
        }
    };
    need(task["family"] == service, "family is the service name");
    need(task["networkMode"] == "awsvpc", "Fargate needs networkMode awsvpc");
    need(task["requiresCompatibilities"].as_array().is_some_and(|c| c.iter().any(|v| v == "FARGATE")), "FARGATE");
    let cpu: u32 = task["cpu"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    let memory: u32 = task["memory"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    need(fargate_memory_ok(cpu, memory), "cpu/memory form a valid Fargate size (as strings)");
    need(task["executionRoleArn"].as_str().is_some_and(|a| a.starts_with("arn:aws:iam::")), "executionRoleArn");
    let containers = task["containerDefinitions"].as_array().cloned().unwrap_or_default();
    need(containers.len() == 1, "one container");
    for c in &containers {
        need(c["name"] == service && c["image"].as_str().is_some_and(|i| !i.is_empty()), "container name and image");
        need(c["essential"] == true, "essential");
        need(c["user"].as_str().is_some_and(|u| !u.starts_with("0")), "runs as a non-root user");
        let env: HashMap<&str, &str> = c["environment"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .collect();
        let secrets: Vec<&str> =
            c["secrets"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
        need(
            env.keys().all(|k| !(k.contains("PASSWORD") || k.ends_with("MONGO__URI"))),
            "passwords and connection strings only in secrets",
        );
        need(
            c["secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|s| s["valueFrom"].as_str().is_some_and(|v| v.starts_with("arn:aws:secretsmanager:"))),
            "secrets come from Secrets Manager",
        );
        need(secrets.iter().any(|s| s.ends_with("__MONGO__URI")), "the MongoDB URI is a secret");
        if env.iter().any(|(k, v)| k.ends_with("__KAFKA__AUTH") && *v == "aws_msk_iam") {
            // The task role signs the tokens: it must be there, and no SASL secret besides.
            need(
                task["taskRoleArn"].as_str().is_some_and(|a| a.starts_with("arn:aws:iam::")),
                "MSK IAM needs taskRoleArn",
            );
            need(!secrets.iter().any(|s| s.contains("__SASL_")), "MSK IAM takes no SASL secrets");
        }
        let port = env
            .iter()
            .find(|(k, _)| k.ends_with("__HTTP__LISTEN_ADDR"))
            .and_then(|(_, v)| v.rsplit(':').next())
            .and_then(|p| p.parse::<u64>().ok());
        need(port.is_some(), "the HTTP listen address is set");
        need(
            c["portMappings"].as_array().is_some_and(|m| m.iter().any(|p| p["containerPort"].as_u64() == port)),
            "the probe/metrics port is mapped",
        );
        let check: Vec<&str> =
            c["healthCheck"]["command"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        need(check.first() == Some(&"CMD"), "health check is exec form (the image has no shell)");
        need(check.get(1) == Some(&format!("/usr/local/bin/{service}").as_str()), "health check runs the binary");
        need(c["logConfiguration"]["logDriver"] == "awslogs", "awslogs");
        for option in ["awslogs-group", "awslogs-region", "awslogs-stream-prefix"] {
            need(c["logConfiguration"]["options"][option].is_string(), option);
        }
        need(c["stopTimeout"].as_u64().is_some_and(|t| (30..=120).contains(&t)), "stopTimeout leaves room to drain");
    }
    problems
}

#[test]
fn task_definitions_have_what_fargate_requires() {
    for service in ["cdc-source", "sink-writer"] {
        let task = load(&format!("{service}.task-definition.json"));
        assert_eq!(task_definition_problems(&task, service), Vec::<String>::new(), "{service}");
    }
    // The checks bite: a task definition with a password in plain environment is refused.
    let mut broken = load("sink-writer.task-definition.json");
    broken["containerDefinitions"][0]["environment"]
        .as_array_mut()
        .expect("environment")
        .push(serde_json::json!({"name": "SINK_WRITER__KAFKA__OPTIONS__SASL_PASSWORD", "value": "x"}));
    broken["memory"] = "3000".into();
    let problems = task_definition_problems(&broken, "sink-writer");
    assert_eq!(problems.len(), 2, "{problems:?}");
    // MSK IAM without a task role has nothing to sign with.
    let mut roleless = load("sink-writer.task-definition.json");
    roleless.as_object_mut().expect("object").remove("taskRoleArn");
    assert_eq!(task_definition_problems(&roleless, "sink-writer"), vec!["MSK IAM needs taskRoleArn".to_string()]);
}

/// With MSK IAM: why the task would sign its tokens for another region than its cluster's, as
/// the binary decides in the task's own region (ECS sets `AWS_REGION` to it: the awslogs
/// region here); `None` when it signs for the cluster's, or uses no MSK IAM.
fn msk_region_problem(task: &Value, service: &str) -> Option<String> {
    let prefix = if service == "cdc-source" { "CDC_SOURCE" } else { "SINK_WRITER" };
    let c = &task["containerDefinitions"][0];
    let env: HashMap<&str, &str> = c["environment"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    let kafka = |key: &str| env.get(format!("{prefix}__KAFKA__{key}").as_str()).copied().unwrap_or_default();
    if kafka("AUTH") != "aws_msk_iam" {
        return None;
    }
    let task_region = str_at(c, "/logConfiguration/options/awslogs-region").to_string();
    let process_env =
        |var: &str| env.get(var).map(|v| v.to_string()).or_else(|| (var == "AWS_REGION").then(|| task_region.clone()));
    let cluster = match msk_region::region_of_hosts(kafka("AWS_REGION_HOST"), kafka("BOOTSTRAP_SERVERS")) {
        Ok(Some(named)) => named.region,
        other => return Some(format!("the bootstrap hosts name no single region: {other:?}")),
    };
    match msk_region::signing_region(
        kafka("AWS_REGION"),
        kafka("AWS_REGION_HOST"),
        kafka("BOOTSTRAP_SERVERS"),
        process_env,
    ) {
        Ok(signing) if signing.region == cluster => None,
        Ok(signing) => Some(format!("signs for {signing} in a task of {task_region}, the cluster is in {cluster}")),
        Err(e) => Some(e.to_string()),
    }
}

#[test]
fn msk_iam_tasks_sign_for_their_clusters_region_not_their_own() {
    for service in ["cdc-source", "sink-writer"] {
        let task = load(&format!("{service}.task-definition.json"));
        assert_eq!(msk_region_problem(&task, service), None, "{service}");
    }
    // sink-writer runs in the target region and reads the source region's cluster.
    let sink = load("sink-writer.task-definition.json");
    let task_region = str_at(&sink, "/containerDefinitions/0/logConfiguration/options/awslogs-region");
    assert_ne!(task_region, "us-west-2", "the sink's task runs in another region than its cluster");
    // The check bites: kafka.aws_region set to the task's own region signs for the wrong one.
    let mut pinned = sink.clone();
    pinned["containerDefinitions"][0]["environment"]
        .as_array_mut()
        .expect("environment")
        .push(serde_json::json!({"name": "SINK_WRITER__KAFKA__AWS_REGION", "value": task_region}));
    let problem = msk_region_problem(&pinned, "sink-writer").expect("a wrong region");
    assert!(problem.contains(&format!("signs for {task_region}, set by kafka.aws_region")), "{problem}");
}

#[test]
fn service_definitions_match_their_tasks() {
    for service in ["cdc-source", "sink-writer"] {
        let def = load(&format!("{service}.service.json"));
        assert_eq!(def["serviceName"], service);
        assert_eq!(def["taskDefinition"], service, "refers to the task family");
        assert_eq!(def["launchType"], "FARGATE");
        let vpc = &def["networkConfiguration"]["awsvpcConfiguration"];
        assert!(vpc["subnets"].as_array().is_some_and(|s| !s.is_empty()), "{service}: subnets");
        assert!(vpc["securityGroups"].as_array().is_some_and(|s| !s.is_empty()), "{service}: security groups");
        assert!(def["desiredCount"].as_u64().is_some_and(|n| n >= 1));
    }
    // cdc-source: alone, a deployment must stop the old task before starting the new (two would
    // fence each other); with the election, two tasks (active and standby), and a deployment that
    // starts a new one (standing by) before it stops an old one, so a standby is always there.
    let source = load("cdc-source.service.json");
    let task = load("cdc-source.task-definition.json");
    let elected = task["containerDefinitions"][0]["environment"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == "CDC_SOURCE__ELECTION__ENABLED" && e["value"] == "true");
    let deployment = &source["deploymentConfiguration"];
    if elected {
        assert_eq!(source["desiredCount"], 2, "active and standby");
        assert!(deployment["minimumHealthyPercent"].as_u64().is_some_and(|p| p >= 100), "a standby stays up");
    } else {
        assert_eq!(source["desiredCount"], 1);
        assert!(deployment["maximumPercent"].as_u64().is_some_and(|p| p <= 100));
    }
}

/// The container's environment, with each secret replaced by `value_of_secret(name)`.
fn container_env(service: &str, value_of_secret: impl Fn(&str) -> String) -> HashMap<String, String> {
    let task = load(&format!("{service}.task-definition.json"));
    let c = &task["containerDefinitions"][0];
    let mut env: HashMap<String, String> = c["environment"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (str_at(e, "/name").to_string(), str_at(e, "/value").to_string()))
        .collect();
    for secret in c["secrets"].as_array().into_iter().flatten() {
        let name = str_at(secret, "/name");
        env.insert(name.to_string(), value_of_secret(name));
    }
    env
}

#[tokio::test]
async fn the_binaries_accept_the_task_environment_and_redact_its_secrets() {
    for service in ["cdc-source", "sink-writer"] {
        let env = container_env(service, |name| {
            if name.ends_with("MONGO__URI") {
                "mongodb://replicator:s3cret-uri@docdb.example:27017/?tls=true&retryWrites=false".into()
            } else if name.ends_with("USERNAME") {
                "replicator".into() // a user name is not a secret and may show
            } else {
                "s3cret-value".into()
            }
        });
        let out = spawn(service, &["--print-config"], &env).wait_with_output().await.expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{service} rejects its task environment: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("s3cret"), "{service} printed a secret: {stdout}");
        // cdc-source's task uses SCRAM, sink-writer's MSK IAM with the task role.
        let kafka_auth = if service == "cdc-source" { "SCRAM-SHA-512" } else { "aws_msk_iam" };
        assert!(stdout.contains(kafka_auth), "{service}: the Kafka settings were read: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_container_health_check_command_probes_the_running_service() {
    let servers = services();
    for service in ["cdc-source", "sink-writer"] {
        let task = load(&format!("{service}.task-definition.json"));
        let command: Vec<String> = task["containerDefinitions"][0]["healthCheck"]["command"]
            .as_array()
            .expect("command")
            .iter()
            .skip(1) // "CMD"
            .map(|v| v.as_str().expect("string").to_string())
            .collect();
        // Run it as ECS would, with the task's environment but on a free local port and against
        // the local servers, the binary found where this build put it.
        let prefix = if service == "cdc-source" { "CDC_SOURCE" } else { "SINK_WRITER" };
        let addr = free_addr();
        let name = test_support::unique("ecs");
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert(format!("{prefix}__HTTP__LISTEN_ADDR"), addr.to_string());
        let probe = |env: HashMap<String, String>| {
            let args = command[1..].to_vec();
            async move {
                tokio::process::Command::new(binary(service))
                    .args(&args)
                    .env_clear()
                    .envs(&env)
                    .output()
                    .await
                    .expect("probe runs")
            }
        };
        let before = probe(env.clone()).await;
        assert!(!before.status.success(), "{service}: the probe fails while nothing listens");
        env.insert(format!("{prefix}__KAFKA__BOOTSTRAP_SERVERS"), servers.kafka_bootstrap.clone());
        if service == "cdc-source" {
            env.insert(format!("{prefix}__MONGO__URI"), servers.mongo_source_uri.clone());
            env.insert(format!("{prefix}__CAPTURE__NAME"), name.clone());
            env.insert(format!("{prefix}__CAPTURE__SCOPE"), "database".into());
            env.insert(format!("{prefix}__CAPTURE__DATABASE"), name.clone());
        } else {
            env.insert(format!("{prefix}__MONGO__URI"), servers.mongo_target_uri.clone());
            env.insert(format!("{prefix}__CONSUME__TOPICS"), format!("^{name}\\..*"));
            env.insert(format!("{prefix}__CONSUME__GROUP_ID"), name.clone());
            env.insert(format!("{prefix}__CONSUME__DEAD_LETTER_TOPIC"), format!("{name}-dlq"));
        }
        let child = spawn(service, &[], &env);
        eventually("service answers", Duration::from_secs(30), || async {
            http_get(addr, "/health/livez").await.ok().filter(|(status, _)| *status == 200)
        })
        .await;
        let after = probe(env.clone()).await;
        assert!(after.status.success(), "{service}: {}", String::from_utf8_lossy(&after.stderr));
        terminate(&child).await;
        let status = child.wait_with_output().await.expect("exits").status;
        assert!(status.success(), "{service} stops cleanly");
    }
}
