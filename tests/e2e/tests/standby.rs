//! Two cdc-source processes of one capture with `election.enabled`: one captures, the other stands
//! by (ready, `role: standby`, `cdc_source_active` 0). When the active one dies (kill -9), freezes
//! past the election's session timeout (SIGSTOP) or is cut off from the broker (Toxiproxy), the
//! standby takes over within 30 s with its first batch durable, and the committed topic holds
//! every insert exactly once: nothing lost at the handover, nothing the former active one still
//! had in a transaction. A former active instance that comes back stands by. A stop (SIGTERM)
//! hands over at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use e2e::process::Proc;
use e2e::toxiproxy::Toxiproxy;
use test_support::{eventually, http_get, metric, services};

/// The takeover the issue asks for, from the death to the successor's first durable batch.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(30);

/// One scenario at a time: takeover times are what is measured.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Instance {
    proc: Proc,
    http: SocketAddr,
}

impl Instance {
    fn start(p: &Pipeline, name: &str, bootstrap: &str) -> Instance {
        let http = e2e::free_addr();
        let mut env = e2e::source_process_env(&p.name, 4);
        env.extend(
            [
                ("HTTP__LISTEN_ADDR", http.to_string()),
                ("MONGO__URI", services().mongo_source_uri),
                ("KAFKA__BOOTSTRAP_SERVERS", bootstrap.to_string()),
                ("ELECTION__ENABLED", "true".into()),
                ("DELIVERY__MAX_BACKOFF_MS", "2000".into()),
                ("DELIVERY__BATCH_MAX_WAIT_MS", "20".into()),
                ("CAPTURE__COMPAT", format!("{:?}", p.source_config.capture.compat).to_lowercase()),
            ]
            .map(|(k, v)| (format!("CDC_SOURCE__{k}"), v)),
        );
        let mut proc = Proc::new(name, e2e::binary("cdc-source"), vec![], env, &p.dir());
        proc.start();
        Instance { proc, http }
    }

    async fn metrics(&self) -> String {
        http_get(self.http, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }

    /// The readiness status and body.
    async fn readiness(&self) -> Option<(u16, String)> {
        http_get(self.http, "/health/readyz").await.ok()
    }

    /// Waits until it is ready in `role` (and says so in its metric too).
    async fn wait_role(&self, role: &str, within: Duration) {
        let active = if role == "active" { 1.0 } else { 0.0 };
        eventually(&format!("{} ready as {role}", self.http), within, || async {
            let (status, body) = self.readiness().await?;
            let metrics = self.metrics().await;
            (status == 200
                && body.contains(&format!("role: {role}"))
                && metric(&metrics, "cdc_source_active") == active)
                .then_some(())
        })
        .await;
    }
}

/// Inserts `{_id: i}` one by one until stopped; returns how many.
fn writer(p: &Pipeline, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i32> {
    let coll = p.source_db().collection::<Document>("docs");
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) || i < 500 {
            coll.insert_one(doc! {"_id": i, "v": i}).await.expect("insert");
            i += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        i
    })
}

/// Waits until `successor` is elected and has made its first batch durable; returns both times
/// since `died`.
async fn takeover(successor: &Instance, died: Instant) -> (Duration, Duration) {
    let mut elected = None;
    loop {
        let body = successor.metrics().await;
        if elected.is_none() && metric(&body, "cdc_source_active") == 1.0 {
            elected = Some(died.elapsed());
        }
        if elected.is_some() && metric(&body, "cdc_source_events_total") > 0.0 {
            return (elected.unwrap_or_default(), died.elapsed());
        }
        assert!(died.elapsed() < TAKEOVER_LIMIT * 2, "no takeover within {:?}", TAKEOVER_LIMIT * 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every insert on the committed topic, with how many times it is there.
async fn inserts(p: &Pipeline, at_least: usize) -> BTreeMap<String, usize> {
    let topic = format!("{}.{}.docs", p.name, p.name);
    let records =
        test_support::consume_all(&services().kafka_bootstrap, &[&topic], at_least, Duration::from_secs(90)).await;
    let mut counts = BTreeMap::new();
    for record in &records {
        if let Ok(envelope::Event::Change(change)) = envelope::decode(record.key.as_deref(), record.value.as_deref()) {
            if change.op == envelope::Op::Create {
                *counts.entry(format!("{:?}", change.id())).or_default() += 1;
            }
        }
    }
    counts
}

enum Death {
    Kill,
    Freeze,
    Cut,
}

/// A starts first (active), B stands by; A dies as `death` says while inserts go on.
async fn scenario(test: &str, death: Death) {
    let _one = ONE_AT_A_TIME.lock().await;
    let p = Pipeline::new(test, 4).await;
    let servers = services();
    let toxiproxy = Toxiproxy::start(&p.dir()).await;
    // A reaches the broker only through a proxy on the address its PROXIED listener advertises.
    let via_proxy: SocketAddr = servers.kafka_via_proxy.parse().expect("KAFKA_VIA_PROXY");
    toxiproxy.proxy_on("kafka", via_proxy, &servers.kafka_proxied_listener).await;
    let mut a = Instance::start(&p, "cdc-source-a", &servers.kafka_via_proxy);
    a.wait_role("active", Duration::from_secs(60)).await;
    let b = Instance::start(&p, "cdc-source-b", &servers.kafka_bootstrap);
    b.wait_role("standby", Duration::from_secs(60)).await;
    assert_eq!(metric(&a.metrics().await, "cdc_source_active"), 1.0, "a standby joining leaves the active one be");

    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&p, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let died = Instant::now();
    match death {
        Death::Kill => a.proc.kill9(),
        Death::Freeze => a.proc.pause(),
        Death::Cut => toxiproxy.enable("kafka", false).await,
    }
    let (elected, durable) = takeover(&b, died).await;
    println!("{test}: standby elected after {elected:?}, first batch durable after {durable:?}");
    assert!(durable < TAKEOVER_LIMIT, "{test}: the standby took {durable:?} to take over");

    // The former active one comes back and stands by; capture stays with B.
    match death {
        Death::Kill => {}
        Death::Freeze => a.proc.resume(),
        Death::Cut => toxiproxy.enable("kafka", true).await,
    }
    if !matches!(death, Death::Kill) {
        a.wait_role("standby", Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(metric(&b.metrics().await, "cdc_source_active"), 1.0, "{test}: B still captures");
        assert_eq!(metric(&a.metrics().await, "cdc_source_active"), 0.0, "{test}: A stands by");
    }
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.expect("writer") as usize;
    let counts = inserts(&p, written).await;
    assert_eq!(counts.len(), written, "{test}: every insert is on the committed topic");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "{test}: inserts twice on the committed topic: {repeated:?}");
    let mut b = b;
    b.proc.stop();
    a.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_killed_active_instance() {
    scenario("standby_kill", Death::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_frozen_active_instance_which_then_stands_by() {
    scenario("standby_freeze", Death::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_an_active_instance_cut_off_from_kafka() {
    scenario("standby_cut", Death::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_active_instance_hands_over_at_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let p = Pipeline::new("standby_stop", 4).await;
    let bootstrap = services().kafka_bootstrap;
    let mut a = Instance::start(&p, "cdc-source-a", &bootstrap);
    a.wait_role("active", Duration::from_secs(60)).await;
    let b = Instance::start(&p, "cdc-source-b", &bootstrap);
    b.wait_role("standby", Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&p, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = Instant::now();
    a.proc.stop();
    let (_, durable) = takeover(&b, stopped).await;
    println!("standby_stop: first batch durable {durable:?} after the stop began");
    // Leaving the group hands over without waiting for the session timeout (10 s).
    assert!(durable < Duration::from_secs(8), "a stop handed over only after {durable:?}");
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.expect("writer") as usize;
    let counts = inserts(&p, written).await;
    assert_eq!(counts.len(), written, "every insert is on the committed topic");
    assert!(counts.values().all(|n| *n == 1), "an insert twice on the committed topic");
    let mut b = b;
    b.proc.stop();
}
