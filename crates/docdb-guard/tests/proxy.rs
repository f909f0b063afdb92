//! The guard in front of the real source mongod (`scripts/services.sh`): what DocumentDB accepts
//! reaches mongod, what it refuses never does and the client reads DocumentDB's error, through
//! the driver's pool, replica-set discovery and change streams.

use std::time::Duration;

use bson::{doc, Document};
use docdb_guard::hello::Addresses;
use futures::{StreamExt, TryStreamExt};
use mongodb::error::ErrorKind;
use test_support::{services, unique};
use tokio::sync::oneshot;

/// A guard on an ephemeral port in front of the source mongod.
struct Guard {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Guard {
    async fn start() -> Self {
        let upstream = host_of(&services().mongo_source_uri);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let addresses = Addresses { upstream, advertised: addr.to_string() };
        let task = tokio::spawn(docdb_guard::proxy::serve(listener, addresses, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop: Some(stop), task }
    }

    /// The connection string a DocumentDB user writes: replica set, no retryable writes.
    fn uri(&self) -> String {
        format!("mongodb://{}/?replicaSet=source&retryWrites=false&serverSelectionTimeoutMS=5000", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("stops").expect("joins");
    }
}

fn host_of(uri: &str) -> String {
    uri.trim_start_matches("mongodb://").split(['/', '?']).next().unwrap_or_default().to_string()
}

fn server_error(error: &mongodb::error::Error) -> (i32, String) {
    match &*error.kind {
        ErrorKind::Command(e) => (e.code, e.message.clone()),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => (e.code, e.message.clone()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn accepted_commands_reach_mongod_and_refused_ones_never_do() {
    let guard = Guard::start().await;
    let db_name = unique("guard");
    let guarded = test_support::mongo(&guard.uri()).await.database(&db_name);
    let direct = test_support::mongo(&services().mongo_source_uri).await.database(&db_name);

    guarded.collection::<Document>("c").insert_one(doc! {"_id": 1, "a": {"b": 1}}).await.expect("insert");
    assert_eq!(direct.collection::<Document>("c").count_documents(doc! {}).await.expect("count"), 1);

    let dotted = guarded.collection::<Document>("c").insert_one(doc! {"_id": 2, "a.b": 1}).await.expect_err("dot");
    assert_eq!(server_error(&dotted), (2, "Document can't have '.' in field names: 'a.b'".to_string()));
    assert_eq!(direct.collection::<Document>("c").count_documents(doc! {}).await.expect("count"), 1, "never sent");

    let facet = guarded.collection::<Document>("c").aggregate(vec![doc! {"$facet": {"a": []}}]).await;
    let (code, message) = server_error(&facet.expect_err("facet"));
    assert_eq!((code, message.as_str()), (304, "Aggregation stage not supported: '$facet'"));

    // The connection stays usable after a refusal.
    let found = guarded.collection::<Document>("c").find_one(doc! {"_id": 1}).await.expect("find");
    assert_eq!(found, Some(doc! {"_id": 1, "a": {"b": 1}}));
    direct.drop().await.expect("drop");
    guard.stop().await;
}

#[tokio::test]
async fn retryable_writes_are_refused_as_documentdb_refuses_them() {
    let guard = Guard::start().await;
    let uri = guard.uri().replace("retryWrites=false", "retryWrites=true");
    let db = test_support::mongo(&uri).await.database(&unique("guard"));
    let refused = db.collection::<Document>("c").insert_one(doc! {"_id": 1}).await.expect_err("retryable");
    assert_eq!(server_error(&refused), (9, "Unrecognized field: 'txnNumber'".to_string()));
    guard.stop().await;
}

#[tokio::test]
async fn replica_set_discovery_stays_behind_the_guard() {
    let guard = Guard::start().await;
    let client = test_support::mongo(&guard.uri()).await;
    let hello = client.database("admin").run_command(doc! {"hello": 1}).await.expect("hello");
    let advertised = guard.addr.to_string();
    assert_eq!(hello.get_str("me").expect("me"), advertised);
    assert_eq!(hello.get_array("hosts").expect("hosts"), &vec![bson::Bson::String(advertised)]);
    assert!(!hello.contains_key("compression"));
    // Stopping the guard cuts the client off: nothing went around it.
    client.database("admin").run_command(doc! {"ping": 1}).await.expect("ping through the guard");
    guard.stop().await;
    let admin = client.database("admin");
    let cut_off = tokio::time::timeout(Duration::from_secs(20), admin.run_command(doc! {"ping": 1})).await;
    assert!(cut_off.expect("answers within the selection timeout").is_err());
}

#[tokio::test]
async fn many_concurrent_connections_are_served() {
    let guard = Guard::start().await;
    let uri = format!("{}&maxPoolSize=40&minPoolSize=20", guard.uri());
    let db_name = unique("guard");
    let coll = test_support::mongo(&uri).await.database(&db_name).collection::<Document>("c");
    let writers = (0..40).map(|i| {
        let coll = coll.clone();
        tokio::spawn(async move {
            for j in 0..25 {
                coll.insert_one(doc! {"_id": i * 100 + j, "w": i}).await.expect("insert");
                let refused = coll.find(doc! {"$where": "true"}).await.expect_err("$where");
                assert_eq!(server_error(&refused).0, 303);
            }
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer");
    }
    let direct = test_support::mongo(&services().mongo_source_uri).await.database(&db_name);
    assert_eq!(direct.collection::<Document>("c").count_documents(doc! {}).await.expect("count"), 1000);
    direct.drop().await.expect("drop");
    guard.stop().await;
}

#[tokio::test]
async fn change_streams_pass_with_documentdb_options_and_not_without() {
    let guard = Guard::start().await;
    let db_name = unique("guard");
    let coll = test_support::mongo(&guard.uri()).await.database(&db_name).collection::<Document>("c");
    coll.insert_one(doc! {"_id": 0}).await.expect("create");
    let mut stream = coll
        .watch()
        .pipeline(vec![doc! {"$match": {"operationType": "insert"}}])
        .full_document(mongodb::options::FullDocumentType::UpdateLookup)
        .await
        .expect("watch");
    coll.insert_one(doc! {"_id": 1}).await.expect("insert");
    let event = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("event in time");
    assert_eq!(event.expect("an event").expect("ok").document_key, Some(doc! {"_id": 1}));

    let expanded = coll.watch().show_expanded_events(true).await.expect_err("expanded events");
    assert_eq!(server_error(&expanded), (9, "Unrecognized field: 'showExpandedEvents'".to_string()));
    let split = coll.watch().pipeline(vec![doc! {"$changeStreamSplitLargeEvent": {}}]).await;
    assert_eq!(server_error(&split.expect_err("split")).0, 304);
    let post_images = coll.watch().full_document(mongodb::options::FullDocumentType::Required).await;
    assert_eq!(server_error(&post_images.expect_err("post images")).0, 303);
    let _: Vec<Document> = coll.find(doc! {}).await.expect("find").try_collect().await.expect("read");
    test_support::mongo(&services().mongo_source_uri).await.database(&db_name).drop().await.expect("drop");
    guard.stop().await;
}
