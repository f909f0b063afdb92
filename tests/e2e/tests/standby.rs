//! Two cdc-source processes of one capture with `election.enabled`: one captures, the other stands
//! by (ready, `role: standby`, `cdc_source_active` 0). When the active one dies (kill -9), freezes
//! past the election's session timeout (SIGSTOP) or is cut off from the broker (Toxiproxy), the
//! standby takes over within 30 s with its first batch durable and visible to `read_committed`
//! readers (nothing the former one left open holds it back), and the committed topic holds
//! every insert exactly once: nothing lost at the handover, nothing the former active one still
//! had in a transaction. A former active instance that comes back stands by. A stop (SIGTERM)
//! hands over at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::pipeline::Pipeline;
use e2e::standby::{docs_topic, first_visible, inserts, takeover, writer, Instance, TAKEOVER_LIMIT};
use e2e::toxiproxy::Toxiproxy;
use test_support::{metric, services};

/// One scenario at a time: takeover times are what is measured.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let next = Arc::new(AtomicI32::new(0));
    let writes = writer(&p, stop.clone(), next.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let died = Instant::now();
    let visible = first_visible(servers.kafka_bootstrap.clone(), docs_topic(&p), next.load(Ordering::Relaxed), died);
    match death {
        Death::Kill => a.proc.kill9(),
        Death::Freeze => a.proc.pause(),
        Death::Cut => toxiproxy.enable("kafka", false).await,
    }
    let (elected, durable) = takeover(&b, died).await;
    let visible = visible.await.expect("reader");
    println!(
        "{test}: standby elected after {elected:?}, first batch durable after {durable:?}, visible after {visible:?}"
    );
    assert!(durable < TAKEOVER_LIMIT, "{test}: the standby took {durable:?} to take over");
    let visible = visible.unwrap_or(TAKEOVER_LIMIT * 3);
    assert!(visible < TAKEOVER_LIMIT, "{test}: new changes reached committed readers only after {visible:?}");

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
    let counts = inserts(&services().kafka_bootstrap, &p, written).await;
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
    let writes = writer(&p, stop.clone(), Arc::new(AtomicI32::new(0)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = Instant::now();
    a.proc.stop();
    let (_, durable) = takeover(&b, stopped).await;
    println!("standby_stop: first batch durable {durable:?} after the stop began");
    // Leaving the group hands over without waiting for the session timeout (10 s).
    assert!(durable < Duration::from_secs(8), "a stop handed over only after {durable:?}");
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.expect("writer") as usize;
    let counts = inserts(&services().kafka_bootstrap, &p, written).await;
    assert_eq!(counts.len(), written, "every insert is on the committed topic");
    assert!(counts.values().all(|n| *n == 1), "an insert twice on the committed topic");
    let mut b = b;
    b.proc.stop();
}
