//! Sample events shared by the golden and decoding tests.

use bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use envelope::{
    ChangeEvent, ClusterTime, ControlEvent, Ddl, Namespace, Op, Position, ResumeToken, Snapshot, SourceInfo,
    Transaction, TruncatedArray, UpdateDescription, Watermark,
};

pub fn pen() -> Document {
    doc! {
        "_id": ObjectId::parse_str("64b7f1e2a1b2c3d4e5f60718").expect("oid"),
        "Item": "Pen",
        "Colors": ["Red", "Green", "Blue", "Black"],
        "Inventory": {"OnHand": 244_i32, "MinOnHand": 72_i32},
        "Price": 1.5_f64,
        "Sold": 1_000_000_000_000_i64,
        "Updated": DateTime::from_millis(1_700_000_000_123),
    }
}

fn source(snapshot: Snapshot) -> SourceInfo {
    SourceInfo {
        name: "src".into(),
        rs: Some("source".into()),
        snapshot,
        wall_time_ms: Some(1_700_000_000_123),
        lsid: None,
        txn_number: None,
    }
}

fn position(i: u32, seq: u64, token: bool) -> Position {
    Position {
        cluster_time: ClusterTime { t: 1_700_000_000, i },
        resume_token: token.then(|| {
            ResumeToken::from_document(&doc! {"_data": format!("8265533A80000000{i:02}2B022C0100296E5A1004")})
        }),
        seq,
        exact: true,
    }
}

fn change(op: Op, i: u32) -> ChangeEvent {
    let pen = pen();
    ChangeEvent {
        op,
        ns: Namespace::new("inventory", "products"),
        document_key: doc! {"_id": pen.get("_id").cloned().unwrap_or(Bson::Null)},
        before: None,
        after: Some(pen),
        update_description: None,
        source: source(Snapshot::False),
        transaction: None,
        position: position(i, u64::from(i), true),
        ts_ms: 1_700_000_000_200,
        resend: None,
    }
}

/// One event per kind, named as its fixture files are.
pub fn samples() -> Vec<(&'static str, ChangeEvent)> {
    let insert = change(Op::Create, 1);

    let mut update = change(Op::Update, 2);
    update.update_description = Some(UpdateDescription {
        updated_fields: doc! {"Inventory.OnHand": 240_i32, "Colors": ["Red", "Green"]},
        removed_fields: vec!["Price".into()],
        truncated_arrays: vec![TruncatedArray { field: "Colors".into(), size: 2 }],
    });
    update.before = Some(pen());
    update.source.lsid = Some("a1b2c3d4-0000-4000-8000-000000000001".into());
    update.source.txn_number = Some(3);
    update.transaction = Some(Transaction {
        id: "a1b2c3d4-0000-4000-8000-000000000001:3".into(),
        total_order: 1,
        data_collection_order: 1,
    });

    let mut replace = change(Op::Update, 3);
    replace.after = Some(doc! {"_id": pen().get("_id").cloned().unwrap_or(Bson::Null), "Item": "Pen", "Retired": true});

    let mut delete = change(Op::Delete, 4);
    delete.after = None;

    // An update whose looked-up document is gone (deleted since): sent as a delete.
    let mut update_gone = change(Op::Update, 8);
    update_gone.after = None;
    update_gone.update_description = Some(UpdateDescription {
        updated_fields: doc! {"Inventory.OnHand": 239_i32},
        removed_fields: vec![],
        truncated_arrays: vec![],
    });

    let mut read = change(Op::Read, 0);
    read.source.snapshot = Snapshot::True;
    read.source.wall_time_ms = None;
    read.position = position(0, 0, false);

    // The current state read again at an operator's request, ordered with the stream.
    let mut resend = change(Op::Read, 9);
    resend.source.snapshot = Snapshot::Incremental;
    resend.source.wall_time_ms = None;
    resend.position.resume_token = None;
    resend.resend = Some("3f0c1d2e-repair-1".into());

    vec![
        ("insert", insert),
        ("update", update),
        ("replace", replace),
        ("delete", delete),
        ("update_gone", update_gone),
        ("read", read),
        ("resend", resend),
    ]
}

pub fn controls() -> Vec<(&'static str, ControlEvent)> {
    let ns = Namespace::new("inventory", "products");
    let event = |ddl: Ddl, i: u32| ControlEvent {
        ddl,
        markers: 4,
        topics: [("cdc.inventory.products".to_string(), 4)].into_iter().collect(),
        source: source(Snapshot::False),
        position: position(i, 10 + u64::from(i), true),
        ts_ms: 1_700_000_000_300,
    };
    vec![
        ("drop", event(Ddl::Drop(ns.clone()), 5)),
        ("rename", event(Ddl::Rename { from: ns.clone(), to: Namespace::new("archive", "products_2023") }, 6)),
        ("drop_database", event(Ddl::DropDatabase { db: "inventory".into() }, 7)),
        (
            "create",
            event(
                Ddl::Create {
                    ns: ns.clone(),
                    options: doc! {"validator": {"$jsonSchema": {"required": ["name"]}}, "validationLevel": "strict",
                    "collation": {"locale": "en", "strength": 2}},
                },
                8,
            ),
        ),
        (
            "create_indexes",
            event(
                Ddl::CreateIndexes {
                    ns: ns.clone(),
                    indexes: vec![
                        doc! {"v": 2, "key": {"sku": 1, "store": -1}, "name": "sku_1_store_-1", "unique": true},
                        doc! {"v": 2, "key": {"qty": 1}, "name": "qty_1", "partialFilterExpression": {"qty": {"$gt": 0_i64}}},
                        doc! {"v": 2, "key": {"seen": 1}, "name": "seen_1", "expireAfterSeconds": 3600},
                        doc! {"v": 2, "key": {"_fts": "text", "_ftsx": 1}, "name": "name_text", "weights": {"name": 1},
                        "default_language": "english", "textIndexVersion": 3},
                    ],
                },
                9,
            ),
        ),
        ("drop_indexes", event(Ddl::DropIndexes { ns: ns.clone(), names: vec!["qty_1".into()] }, 10)),
        (
            "modify",
            event(Ddl::Modify { ns, changes: doc! {"index": {"name": "seen_1", "expireAfterSeconds": 60}} }, 11),
        ),
    ]
}

pub fn watermark() -> Watermark {
    Watermark {
        cluster_time: ClusterTime { t: 1_700_000_100, i: 3 },
        source: source(Snapshot::False),
        ts_ms: 1_700_000_100_500,
    }
}
