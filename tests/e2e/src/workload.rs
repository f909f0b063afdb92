//! A mixed write workload at a set rate: inserts, `$inc`/`$set`/`$push`/`$pull` updates, replaces,
//! deletes, hot keys and multi-document transactions over two collections. Counts operations
//! as documents changed, as the change stream sees them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use mongodb::Database;
use tokio::task::JoinHandle;

use crate::chaos::Rng;

#[derive(Debug, Clone, Default)]
pub struct WorkloadStats {
    pub operations: u64,
    pub transactions: u64,
    pub elapsed: Duration,
}

pub struct Workload {
    handle: JoinHandle<WorkloadStats>,
    enough: Arc<AtomicBool>,
}

const INSERTS_PER_ROUND: i64 = 40;
const HOT_KEYS: u64 = 5;

fn item(id: i64, rng: &mut Rng) -> Document {
    let size = match rng.next_u64() % 100 {
        0 => 64 * 1024,
        1..=10 => 2048,
        _ => 64,
    };
    doc! {"_id": id, "n": 0_i64, "tags": ["a", "b"], "sub": {"x": id, "pad": "p".repeat(size)}}
}

impl Workload {
    /// Starts writing changes into `db` at `rate` per second: at least `operations` of them,
    /// and on until [`Workload::finish`] is called.
    pub fn start(db: Database, operations: u64, rate: u64, seed: u64) -> Workload {
        let enough = Arc::new(AtomicBool::new(false));
        let flag = enough.clone();
        let handle = tokio::spawn(async move { run(db, operations, rate.max(1), seed, flag).await });
        Workload { handle, enough }
    }

    /// Lets the workload end once it has done its operations, and waits for that.
    pub async fn finish(self) -> WorkloadStats {
        self.enough.store(true, Ordering::Relaxed);
        self.handle.await.expect("workload task")
    }
}

async fn run(db: Database, total: u64, rate: u64, seed: u64, enough: Arc<AtomicBool>) -> WorkloadStats {
    let items = db.collection::<Document>("items");
    let hot = db.collection::<Document>("hot");
    let mut rng = Rng::new(seed ^ 0x5eed);
    let started = Instant::now();
    let mut stats = WorkloadStats::default();
    let mut next: i64 = 0;
    let mut round: u64 = 0;
    while stats.operations < total || !enough.load(Ordering::Relaxed) {
        round += 1;
        let docs: Vec<Document> = (next..next + INSERTS_PER_ROUND).map(|id| item(id, &mut rng)).collect();
        next += INSERTS_PER_ROUND;
        stats.operations += items.insert_many(docs).await.expect("insert").inserted_ids.len() as u64;
        let live = next.max(1) as u64;
        let from = (rng.next_u64() % live) as i64;
        let updated = items
            .update_many(
                doc! {"_id": {"$gte": from, "$lt": from + 20}},
                doc! {"$inc": {"n": 1_i64}, "$set": {"round": round as i64}},
            )
            .await
            .expect("update");
        stats.operations += updated.modified_count;
        let key = format!("hot-{}", rng.next_u64() % HOT_KEYS);
        hot.update_one(doc! {"_id": &key}, doc! {"$inc": {"hits": 1_i64}, "$set": {"last": round as i64}})
            .upsert(true)
            .await
            .expect("hot");
        stats.operations += 1;
        let one = (rng.next_u64() % live) as i64;
        let change = if round.is_multiple_of(2) {
            doc! {"$push": {"tags": "c"}}
        } else {
            doc! {"$pull": {"tags": "a"}, "$unset": {"round": ""}}
        };
        stats.operations += items.update_one(doc! {"_id": one}, change).await.expect("array update").modified_count;
        let replaced = (rng.next_u64() % live) as i64;
        stats.operations += items
            .replace_one(doc! {"_id": replaced}, doc! {"_id": replaced, "replaced": round as i64})
            .await
            .expect("replace")
            .modified_count;
        let gone = (rng.next_u64() % live) as i64;
        stats.operations +=
            items.delete_many(doc! {"_id": {"$gte": gone, "$lt": gone + 3}}).await.expect("delete").deleted_count;
        if round.is_multiple_of(10) {
            stats.operations += transaction(&db, round, &mut rng, live).await;
            stats.transactions += 1;
        }
        // Pace to the rate.
        let due = Duration::from_secs_f64(stats.operations as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    stats.elapsed = started.elapsed();
    stats
}

/// Two inserts and an update across both collections, atomically.
async fn transaction(db: &Database, round: u64, rng: &mut Rng, live: u64) -> u64 {
    let mut session = db.client().start_session().await.expect("session");
    session.start_transaction().await.expect("start transaction");
    let items = db.collection::<Document>("items");
    let hot = db.collection::<Document>("hot");
    let r = round as i64;
    hot.insert_one(doc! {"_id": format!("txn-{r}-a"), "round": r}).session(&mut session).await.expect("txn insert");
    hot.insert_one(doc! {"_id": format!("txn-{r}-b"), "round": r}).session(&mut session).await.expect("txn insert");
    let target = (rng.next_u64() % live) as i64;
    let updated = items
        .update_one(doc! {"_id": target}, doc! {"$set": {"txn": r}})
        .session(&mut session)
        .await
        .expect("txn update")
        .modified_count;
    session.commit_transaction().await.expect("commit");
    2 + updated
}

/// `len` letters and digits from a xorshift generator seeded by `seed`: text that lz4 cannot
/// shrink (a document of one repeated letter compresses ~250x, and Kafka counts compressed
/// bytes), for tests and benchmarks of large documents.
pub fn incompressible(seed: i64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}
