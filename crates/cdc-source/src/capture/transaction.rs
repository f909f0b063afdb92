//! Debezium's `transaction` block for changes made in a multi-document transaction: its id
//! (`<lsid>:<txnNumber>`) and each event's place in it, overall and per collection. A
//! transaction's events arrive together in the change stream. Pure.

use std::collections::HashMap;

use bson::{Bson, Document};
use envelope::{Namespace, Transaction};

/// Positions within the transaction being streamed.
#[derive(Debug, Default)]
pub struct Transactions {
    current: Option<Order>,
}

#[derive(Debug)]
struct Order {
    id: String,
    total: u64,
    per_collection: HashMap<String, u64>,
}

impl Transactions {
    /// The `transaction` block of the next event (none outside a transaction, which also ends
    /// the one before).
    pub fn order(&mut self, lsid: Option<&str>, txn_number: Option<i64>, ns: &Namespace) -> Option<Transaction> {
        let (Some(lsid), Some(number)) = (lsid, txn_number) else {
            self.current = None;
            return None;
        };
        let id = format!("{lsid}:{number}");
        let order = match &mut self.current {
            Some(order) if order.id == id => order,
            slot => slot.insert(Order { id: id.clone(), total: 0, per_collection: HashMap::new() }),
        };
        order.total += 1;
        let per = order.per_collection.entry(ns.to_string()).or_insert(0);
        *per += 1;
        Some(Transaction { id, total_order: order.total, data_collection_order: *per })
    }
}

/// The session id of a transaction as UUID text (`lsid.id` is a UUID binary).
pub fn lsid_text(lsid: &Document) -> Option<String> {
    match lsid.get("id")? {
        Bson::Binary(bin) if bin.bytes.len() == 16 => {
            let hex: String = bin.bytes.iter().map(|b| format!("{b:02x}")).collect();
            Some(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
        }
        other => Some(envelope::extjson::value_to_string(other, envelope::extjson::Style::Relaxed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, spec::BinarySubtype, Binary};

    #[test]
    fn positions_count_per_transaction_and_collection() {
        let lsid = doc! {"id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![0xab; 16] }};
        let lsid = lsid_text(&lsid).expect("a session id");
        assert_eq!(lsid, "abababab-abab-abab-abab-abababababab");
        let mut transactions = Transactions::default();
        let orders: Vec<Transaction> = ["a", "b", "a"]
            .iter()
            .filter_map(|coll| transactions.order(Some(&lsid), Some(3), &Namespace::new("shop", *coll)))
            .collect();
        assert_eq!(orders[0].id, format!("{lsid}:3"));
        assert_eq!(
            orders.iter().map(|t| (t.total_order, t.data_collection_order)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 1), (3, 2)]
        );
        assert_eq!(transactions.order(None, None, &Namespace::new("shop", "a")), None);
        let next = transactions.order(Some(&lsid), Some(4), &Namespace::new("shop", "a")).expect("a transaction");
        assert_eq!((next.total_order, next.data_collection_order), (1, 1), "a new transaction counts from 1");
    }
}
