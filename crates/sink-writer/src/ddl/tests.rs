//! The applier over the in-memory DDL log and target catalog (`fake.rs`): which step a DDL
//! takes, that the first claimer's choice stands, what each step does to the target, and what
//! applied DDL makes obsolete. The barrier itself is tested in `barrier.rs`.

use std::time::Duration;

use bson::{doc, Document};
use envelope::{ClusterTime, ControlEvent, Ddl, Position};
use prometheus::IntCounter;
use service_kit::health::Health;
use tokio_util::sync::CancellationToken;

use super::fake::{ns, FakeCatalog, FakeLog};
use super::{DdlApplier, Passed};
use crate::apply::retry::Retrier;
use crate::config::MappingRule;
use crate::mapping::Mapper;

struct Fixture {
    applier: DdlApplier,
    catalog: FakeCatalog,
    log: FakeLog,
    retries: IntCounter,
}

/// An applier over a target holding `collections`, with pauses of a few milliseconds between
/// retries (counted, not timed).
fn fixture(collections: &[&str], rules: &[MappingRule]) -> Fixture {
    let (catalog, log) = (FakeCatalog::with(collections), FakeLog::default());
    let retries = IntCounter::new("retries", "retries").expect("a counter");
    let retrier = Retrier::new(Health::new(), retries.clone(), Duration::from_millis(5));
    let mapper = Mapper::new(rules).expect("rules");
    let applier = DdlApplier::new(Box::new(catalog.clone()), Box::new(log.clone()), mapper, "g", retrier);
    Fixture { applier, catalog, log, retries }
}

impl Fixture {
    /// The one partition holding the marker reaches it: the DDL is applied there and then.
    async fn apply(&self, event: &ControlEvent) -> Passed {
        self.applier.barrier(event, "t/0", 7, 1, &CancellationToken::new()).await.expect("applied")
    }

    fn entry(&self, event: &ControlEvent) -> Document {
        self.log.get(&self.applier.entry_id(event)).expect("an entry in the log")
    }
}

fn event(ddl: Ddl, t: u32) -> ControlEvent {
    ControlEvent {
        ddl,
        markers: 1,
        topics: Default::default(),
        source: Default::default(),
        position: Position { cluster_time: ClusterTime { t, i: 1 }, exact: true, ..Default::default() },
        ts_ms: 0,
    }
}

fn rename(from: &str, to: &str) -> Ddl {
    Ddl::Rename { from: ns(from), to: ns(to) }
}

#[tokio::test]
async fn a_rename_whose_collection_exists_replaces_the_new_name_with_it() {
    let f = fixture(&["shop.carts", "shop.orders"], &[]);
    let event = event(rename("shop.carts", "shop.orders"), 10);
    let passed = f.apply(&event).await;
    assert!(passed.here && passed.refused.is_none(), "{passed:?}");
    assert_eq!(f.catalog.collections_now(), vec!["shop.orders"]);
    assert_eq!(f.catalog.commands(), vec!["rename shop.carts shop.orders"]);
    let entry = f.entry(&event);
    assert_eq!(entry.get_str("step"), Ok("rename"));
    assert_eq!(entry.get_bool("applied"), Ok(true));
}

#[tokio::test]
async fn a_rename_of_a_collection_the_target_never_had_empties_the_new_name() {
    // The source renamed an empty collection (no event ever created it here) over `orders`.
    let f = fixture(&["shop.orders"], &[]);
    let event = event(rename("shop.carts", "shop.orders"), 10);
    f.apply(&event).await;
    assert_eq!(f.catalog.collections_now(), Vec::<String>::new());
    assert_eq!(f.catalog.commands(), vec!["drop shop.orders"]);
    assert_eq!(f.entry(&event).get_str("step"), Ok("dropTarget"));
}

#[tokio::test]
async fn a_claimer_after_a_crash_performs_the_step_the_first_one_fixed() {
    // The first claimer fixed `rename`, renamed, and died before marking the DDL applied: `from`
    // is gone now. Choosing again would drop the renamed documents (`dropTarget`).
    let f = fixture(&["shop.orders"], &[]);
    let event = event(rename("shop.carts", "shop.orders"), 10);
    f.log.set(&f.applier.entry_id(&event), doc! {"step": "rename", "markers": 1_i64});
    f.apply(&event).await;
    assert_eq!(f.catalog.collections_now(), vec!["shop.orders"], "the renamed documents stay");
    assert_eq!(f.catalog.commands(), vec!["rename shop.carts shop.orders"], "done again, harmlessly");
}

#[tokio::test]
async fn a_drop_database_keeps_a_database_that_newer_events_wrote_to() {
    let f = fixture(&["shop.newer", "logs.system.views"], &[]);
    f.apply(&event(Ddl::DropDatabase { db: "shop".into() }, 10)).await;
    f.apply(&event(Ddl::DropDatabase { db: "logs".into() }, 11)).await;
    assert_eq!(f.catalog.collections_now(), vec!["shop.newer"]);
    assert_eq!(f.catalog.commands(), vec!["dropDatabase logs"], "only the database left empty");
}

#[tokio::test]
async fn ddl_reaches_the_target_namespace_the_mapping_names() {
    let rules = [MappingRule { source: r"shop\.(.*)".into(), target: "mirror.$1".into() }];
    let f = fixture(&["shop.carts", "mirror.carts"], &rules);
    f.apply(&event(Ddl::Drop(ns("shop.carts")), 10)).await;
    let create = Ddl::Create { ns: ns("shop.people"), options: Document::new() };
    f.apply(&event(create, 11)).await;
    assert_eq!(f.catalog.commands(), vec!["drop mirror.carts", "change create mirror.people"]);
    assert_eq!(f.catalog.collections_now(), vec!["mirror.people", "shop.carts"]);
}

#[tokio::test]
async fn what_a_ddl_touches_is_forgotten_as_known_and_a_create_is_known_at_once() {
    let f = fixture(&["shop.carts"], &[]);
    f.applier.collections.exists(&ns("shop.carts"));
    f.applier.collections.exists(&ns("shop.orders"));
    f.apply(&event(Ddl::Drop(ns("shop.carts")), 10)).await;
    assert!(!f.applier.collections.known(&ns("shop.carts")), "dropped: a transaction must create it again");
    assert!(f.applier.collections.known(&ns("shop.orders")), "untouched");
    f.apply(&event(Ddl::Create { ns: ns("shop.carts"), options: Document::new() }, 11)).await;
    assert!(f.applier.collections.known(&ns("shop.carts")), "created: a transaction may write to it");
}

#[tokio::test]
async fn a_target_that_fails_for_a_while_is_retried_until_the_ddl_is_applied_once() {
    let f = fixture(&["shop.carts"], &[]);
    f.catalog.fail_next(3);
    let event = event(rename("shop.carts", "shop.orders"), 10);
    f.apply(&event).await;
    assert_eq!(f.retries.get(), 3);
    assert_eq!(f.catalog.collections_now(), vec!["shop.orders"]);
    assert_eq!(f.catalog.commands(), vec!["rename shop.carts shop.orders"]);
    assert_eq!(f.entry(&event).get_bool("applied"), Ok(true));
}

#[tokio::test]
async fn a_rename_the_target_refuses_for_good_is_applied_with_its_reason() {
    let f = fixture(&["shop.carts"], &[]);
    f.catalog.refuse_renames("cross-database rename not supported");
    let event = event(rename("shop.carts", "other.carts"), 10);
    let passed = f.apply(&event).await;
    let reason = passed.refused.expect("refused");
    assert!(reason.contains("cross-database rename not supported"), "{reason}");
    assert_eq!(f.entry(&event).get_str("refused"), Ok(reason.as_str()));
    assert_eq!(f.catalog.collections_now(), vec!["shop.carts"], "left as it was");
}

#[tokio::test]
async fn events_older_than_an_applied_drop_or_rename_are_obsolete_and_newer_ones_are_not() {
    let f = fixture(&["shop.carts", "shop.a"], &[]);
    f.apply(&event(Ddl::Drop(ns("shop.carts")), 10)).await;
    f.apply(&event(rename("shop.a", "shop.b"), 20)).await;
    let modify = Ddl::Modify { ns: ns("shop.c"), changes: doc! {"validator": {}} };
    f.apply(&event(modify, 30)).await;
    let at = |t| ClusterTime { t, i: 0 };
    assert!(f.applier.obsolete(&ns("shop.carts"), at(9)));
    assert!(!f.applier.obsolete(&ns("shop.carts"), at(11)), "a newer collection of the same name");
    assert!(f.applier.obsolete(&ns("shop.a"), at(19)) && f.applier.obsolete(&ns("shop.b"), at(19)));
    assert!(!f.applier.obsolete(&ns("shop.c"), at(29)), "a modify leaves documents as they are");
}

#[tokio::test]
async fn two_different_schema_changes_at_one_time_both_apply_and_the_same_one_sent_again_once() {
    let f = fixture(&["shop.items"], &[]);
    let indexes = |name: &str| Ddl::CreateIndexes { ns: ns("shop.items"), indexes: vec![doc! {"name": name}] };
    // A source listing schema changes where its stream had not moved: both at (10, 1).
    f.apply(&event(indexes("by_sku"), 10)).await;
    f.apply(&event(indexes("by_tag"), 10)).await;
    f.apply(&event(indexes("by_tag"), 10)).await;
    let changes = f.catalog.commands();
    assert_eq!(changes, vec!["change createIndexes shop.items", "change createIndexes shop.items"], "{changes:?}");
}

#[tokio::test]
async fn copies_of_a_ddl_read_from_the_stream_are_one_ddl_whatever_they_set() {
    // Sent again after a crash, a streamed create carries options read again since: still one.
    let f = fixture(&[], &[]);
    let create = |validator: &str| {
        let mut event = event(Ddl::Create { ns: ns("shop.items"), options: doc! {"validator": {"v": validator}} }, 10);
        event.position.resume_token = Some(envelope::ResumeToken::from_document(&doc! {"_data": "82"}));
        event
    };
    f.apply(&create("first")).await;
    f.apply(&create("read again")).await;
    assert_eq!(f.catalog.commands(), vec!["change create shop.items"]);
}
