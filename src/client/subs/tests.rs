//! The subscription manager against scripted server messages.

use std::sync::{Arc, Mutex};

use super::*;
use crate::event::EventKind;

/// Adds a subscription with a live table and no filters.
fn add_table(m: &mut SubscriptionManager, name: &str) {
    m.add(
        name,
        FilterSpec::default(),
        Some(TableHandle::default()),
        None,
    )
    .unwrap();
}
use serde_json::Value;

fn result(seq: u64, event: EventKind, symbol: &str, scan: &str, subs: &[&str]) -> ResultMessage {
    ResultMessage {
        seq,
        event,
        symbol: symbol.to_owned(),
        scan: scan.to_owned(),
        score: seq as f64,
        price: 10.0,
        change_pct: 1.0,
        volume: 100,
        volume_ratio: 2.0,
        rsi: None,
        source_ts: None,
        adhoc: false,
        subscriptions: subs.iter().map(|s| (*s).to_owned()).collect(),
        left: Vec::new(),
        timestamp: String::new(),
    }
}

fn new(seq: u64, subs: &[&str]) -> ResultMessage {
    result(seq, EventKind::New, "AAPL", "volume_spike", subs)
}

fn subscribed(name: &str, epoch: &str, seq: u64, recovered: bool) -> Subscribed {
    Subscribed {
        subscription: name.to_owned(),
        epoch: epoch.to_owned(),
        seq,
        recovered,
        replayed: 0,
    }
}

fn parse(msg: &str) -> Value {
    serde_json::from_str(msg).expect("subscribe messages are JSON")
}

/// A callback that keeps every event it is called with.
fn recorder() -> (Arc<Mutex<Vec<Event>>>, Callback) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    let cb: Callback = Box::new(move |ev: &Event| kept.lock().unwrap().push(ev.clone()));
    (seen, cb)
}

fn seqs(seen: &Arc<Mutex<Vec<Event>>>) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|ev| match ev {
            Event::Result(r) => Some(r.seq),
            _ => None,
        })
        .collect()
}

fn scans(names: &[&str]) -> FilterSpec {
    FilterSpec {
        scans: Some(names.iter().map(|s| (*s).to_owned()).collect()),
        ..FilterSpec::default()
    }
}

#[test]
fn first_connect_has_no_position_and_the_next_resumes_from_subscribed() {
    let mut m = SubscriptionManager::new();
    m.add("main", scans(&["volume_spike"]), None, None).unwrap();
    let sent = m.on_connect();
    assert_eq!(sent.len(), 1);
    let msg = parse(&sent[0]);
    assert_eq!(msg["type"], "subscribe");
    assert_eq!(msg["data"]["subscription"], "main");
    assert_eq!(msg["data"]["filters"]["scans"][0], "volume_spike");
    // Nothing to resume from, and no table to fill: neither a position nor a snapshot.
    assert!(msg["data"].get("since").is_none());
    assert!(msg["data"].get("epoch").is_none());
    assert!(msg["data"].get("snapshot").is_none());
    // The request id leads back to the subscription it was for.
    let id = msg["id"].as_str().unwrap();
    assert_eq!(m.request_subscription(id).as_deref(), Some("main"));

    let (events, send) = m.on_subscribed(subscribed("main", "e1", 10, true), None);
    assert_eq!(send, None);
    assert_eq!(
        events,
        vec![Event::Subscribed(subscribed("main", "e1", 10, true))]
    );
    assert_eq!(m.position("main"), Some((10, "e1".to_owned())));

    m.on_disconnect();
    let msg = parse(&m.on_connect()[0]);
    assert_eq!(msg["data"]["since"], 10);
    assert_eq!(msg["data"]["epoch"], "e1");
    assert!(msg["data"].get("snapshot").is_none());
}

#[test]
fn a_table_asks_for_a_snapshot_only_without_a_position() {
    let mut m = SubscriptionManager::new();
    add_table(&mut m, "t");
    let msg = parse(&m.on_connect()[0]);
    assert_eq!(msg["data"]["snapshot"], true);
    assert!(msg["data"].get("since").is_none());

    m.on_subscribed(subscribed("t", "e1", 7, true), None);
    // With a position, replay keeps the table exact: no snapshot.
    let msg = parse(&m.on_connect()[0]);
    assert_eq!(msg["data"]["since"], 7);
    assert_eq!(msg["data"]["epoch"], "e1");
    assert!(msg["data"].get("snapshot").is_none());
}

#[test]
fn on_connect_sends_every_subscription_in_order_with_distinct_ids() {
    let mut m = SubscriptionManager::new();
    for name in ["b", "a", "c"] {
        m.add(name, FilterSpec::default(), None, None).unwrap();
    }
    let sent: Vec<Value> = m.on_connect().iter().map(|s| parse(s)).collect();
    let names: Vec<&str> = sent
        .iter()
        .map(|m| m["data"]["subscription"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a", "c"]);
    let ids: Vec<&str> = sent.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
    // A disconnect forgets the unanswered requests.
    m.on_disconnect();
    assert_eq!(m.request_subscription(ids[0]), None);
}

#[test]
fn a_result_goes_only_to_existing_subscriptions_and_their_callbacks() {
    let mut m = SubscriptionManager::new();
    let (seen_a, cb_a) = recorder();
    m.add("a", FilterSpec::default(), None, Some(cb_a)).unwrap();
    let (seen_c, cb_c) = recorder();
    m.add("c", FilterSpec::default(), None, Some(cb_c)).unwrap();

    let ev = m.on_result(new(1, &["a", "b"])).expect("a takes it");
    match &ev {
        Event::Result(r) => {
            assert_eq!(r.subscriptions, ["a"]);
            assert_eq!(r.seq, 1);
        }
        other => panic!("expected a result, got {other:?}"),
    }
    assert_eq!(*seen_a.lock().unwrap(), vec![ev]);
    // Not listed: its callback stays quiet.
    assert!(seen_c.lock().unwrap().is_empty());

    // Nobody left to take it.
    assert_eq!(m.on_result(new(2, &["b"])), None);
    assert_eq!(m.on_result(new(3, &[])), None);
}

#[test]
fn duplicates_are_dropped_per_subscription() {
    let mut m = SubscriptionManager::new();
    let (seen_a, cb_a) = recorder();
    m.add("a", FilterSpec::default(), None, Some(cb_a)).unwrap();
    let (seen_b, cb_b) = recorder();
    m.add("b", FilterSpec::default(), None, Some(cb_b)).unwrap();
    m.on_subscribed(subscribed("a", "e1", 10, true), None);
    m.on_subscribed(subscribed("b", "e1", 20, true), None);

    // At or before where each stands: already had, or stood for by `subscribed`.
    assert_eq!(m.on_result(new(10, &["a"])), None);
    assert_eq!(m.on_result(new(5, &["a", "b"])), None);
    assert!(seqs(&seen_a).is_empty());

    // 15 is new to a, old to b: only a takes it.
    let Some(Event::Result(r)) = m.on_result(new(15, &["a", "b"])) else {
        panic!("a takes 15");
    };
    assert_eq!(r.subscriptions, ["a"]);
    assert_eq!(m.position("a"), Some((15, "e1".to_owned())));
    assert_eq!(m.position("b"), Some((20, "e1".to_owned())));

    // The same result again is a duplicate for both.
    assert_eq!(m.on_result(new(15, &["a", "b"])), None);

    let Some(Event::Result(r)) = m.on_result(new(21, &["a", "b"])) else {
        panic!("both take 21");
    };
    assert_eq!(r.subscriptions, ["a", "b"]);
    assert_eq!(seqs(&seen_a), [15, 21]);
    assert_eq!(seqs(&seen_b), [21]);
    assert_eq!(m.position("a"), Some((21, "e1".to_owned())));
    assert_eq!(m.position("b"), Some((21, "e1".to_owned())));
}

#[test]
fn an_unrecovered_resume_in_a_new_run_reports_a_gap_and_starts_from_one() {
    let mut m = SubscriptionManager::new();
    let (seen, cb) = recorder();
    m.add("main", FilterSpec::default(), None, Some(cb))
        .unwrap();
    m.on_subscribed(subscribed("main", "e1", 10, true), None);
    m.on_result(new(12, &["main"])).unwrap();

    // The server restarted: run e2, its own numbering.
    let (events, send) = m.on_subscribed(subscribed("main", "e2", 3, false), None);
    let gap = Event::Gap {
        subscription: "main".to_owned(),
        since: 12,
        epoch: "e1".to_owned(),
        server_epoch: "e2".to_owned(),
    };
    assert_eq!(
        events,
        vec![
            gap.clone(),
            Event::Subscribed(subscribed("main", "e2", 3, false))
        ]
    );
    // No table: replay of the new run is all it needs.
    assert_eq!(send, None);
    assert_eq!(m.position("main"), Some((0, "e2".to_owned())));
    // The callback hears the gap before the new subscription, after what came before.
    assert_eq!(seen.lock().unwrap()[2..], [gap, events[1].clone()]);

    // Everything the new run retained is new, though numbered below the old position.
    assert!(m.on_result(new(1, &["main"])).is_some());
    assert!(m.on_result(new(2, &["main"])).is_some());
    assert_eq!(m.on_result(new(2, &["main"])), None);
    assert_eq!(seqs(&seen), [12, 1, 2]);
    assert_eq!(m.position("main"), Some((2, "e2".to_owned())));
}

#[test]
fn an_unrecovered_resume_in_the_same_run_keeps_the_position() {
    let mut m = SubscriptionManager::new();
    m.add("main", FilterSpec::default(), None, None).unwrap();
    m.on_subscribed(subscribed("main", "e1", 10, true), None);

    // The history no longer reaches back to 11: results were lost, numbering goes on.
    let (events, _) = m.on_subscribed(subscribed("main", "e1", 500, false), None);
    assert_eq!(
        events[0],
        Event::Gap {
            subscription: "main".to_owned(),
            since: 10,
            epoch: "e1".to_owned(),
            server_epoch: "e1".to_owned(),
        }
    );
    assert_eq!(m.position("main"), Some((10, "e1".to_owned())));
    assert_eq!(m.on_result(new(10, &["main"])), None);
    assert!(m.on_result(new(400, &["main"])).is_some());
}

#[test]
fn a_recovered_resume_is_no_gap() {
    let mut m = SubscriptionManager::new();
    m.add("main", FilterSpec::default(), None, None).unwrap();
    m.on_subscribed(subscribed("main", "e1", 10, true), None);
    m.on_result(new(11, &["main"])).unwrap();
    let (events, send) = m.on_subscribed(subscribed("main", "e1", 30, true), None);
    assert_eq!(
        events,
        vec![Event::Subscribed(subscribed("main", "e1", 30, true))]
    );
    assert_eq!(send, None);
    // The replay of 12..=30 is still to come: the position must not jump to 30.
    assert_eq!(m.position("main"), Some((11, "e1".to_owned())));
    assert!(m.on_result(new(12, &["main"])).is_some());
}

#[test]
fn a_table_after_a_gap_asks_for_a_fresh_snapshot() {
    let mut m = SubscriptionManager::new();
    let table = TableHandle::default();
    m.add("t", FilterSpec::default(), Some(table.clone()), None)
        .unwrap();
    m.on_subscribed(subscribed("t", "e1", 10, true), None);
    m.on_snapshot("t", 10, vec![new(9, &["t"])]);

    let (events, send) = m.on_subscribed(subscribed("t", "e2", 4, false), None);
    assert!(matches!(&events[0], Event::Gap { since: 10, .. }));
    let msg = parse(&send.expect("a table cannot be repaired by replay"));
    assert_eq!(msg["type"], "subscribe");
    assert_eq!(msg["data"]["subscription"], "t");
    assert_eq!(msg["data"]["snapshot"], true);
    assert!(msg["data"].get("since").is_none());
    assert!(msg["data"].get("epoch").is_none());
    assert_eq!(
        m.request_subscription(msg["id"].as_str().unwrap())
            .as_deref(),
        Some("t")
    );
    // Gave up its position: a reconnect now would ask for a snapshot too.
    assert_eq!(m.position("t"), None);

    // The answer to the fresh subscribe, then its snapshot, set things right.
    let (events, send) = m.on_subscribed(subscribed("t", "e2", 4, true), None);
    assert_eq!(events.len(), 1);
    assert_eq!(send, None);
    m.on_snapshot(
        "t",
        4,
        vec![result(2, EventKind::New, "MSFT", "new_high", &["t"])],
    );
    let t = table.lock();
    assert_eq!(t.len(), 1);
    assert!(t.get("MSFT", "new_high").is_some());
    assert_eq!(t.seq, 4);
    drop(t);
    assert_eq!(m.position("t"), Some((4, "e2".to_owned())));
}

#[test]
fn snapshot_and_results_keep_the_table_current() {
    let mut m = SubscriptionManager::new();
    let table = TableHandle::default();
    let (seen, cb) = recorder();
    m.add("t", FilterSpec::default(), Some(table.clone()), Some(cb))
        .unwrap();
    m.on_subscribed(subscribed("t", "e1", 5, true), None);
    let rows = vec![
        result(3, EventKind::New, "AAPL", "volume_spike", &["t"]),
        result(4, EventKind::New, "MSFT", "price_change", &["t"]),
    ];
    let ev = m.on_snapshot("t", 5, rows.clone()).unwrap();
    assert_eq!(
        ev,
        Event::Snapshot {
            subscription: "t".to_owned(),
            seq: 5,
            results: rows,
        }
    );
    assert_eq!(seen.lock().unwrap().last(), Some(&ev));
    assert_eq!(table.lock().len(), 2);
    assert_eq!(table.lock().seq, 5);
    // The snapshot stands for everything up to its seq.
    assert_eq!(m.on_result(new(5, &["t"])), None);

    m.on_result(result(6, EventKind::New, "TSLA", "new_low", &["t"]))
        .unwrap();
    let mut update = result(7, EventKind::Update, "AAPL", "volume_spike", &["t"]);
    update.score = 9.5;
    m.on_result(update).unwrap();
    m.on_result(result(8, EventKind::Clear, "MSFT", "price_change", &["t"]))
        .unwrap();
    {
        let t = table.lock();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("AAPL", "volume_spike").unwrap().score, 9.5);
        assert_eq!(t.get("AAPL", "volume_spike").unwrap().seq, 7);
        assert!(t.get("TSLA", "new_low").is_some());
        assert!(t.get("MSFT", "price_change").is_none());
        assert_eq!(t.seq, 8);
    }

    // An ad-hoc result moves the position but is no open opportunity.
    let mut adhoc = result(9, EventKind::New, "AMD", "price_change", &["t"]);
    adhoc.adhoc = true;
    m.on_result(adhoc).unwrap();
    assert!(table.lock().get("AMD", "price_change").is_none());
    assert_eq!(table.lock().seq, 9);

    // A replayed duplicate must not touch the table.
    assert_eq!(
        m.on_result(result(7, EventKind::Clear, "AAPL", "volume_spike", &["t"])),
        None
    );
    assert!(table.lock().get("AAPL", "volume_spike").is_some());
    assert_eq!(table.lock().seq, 9);

    // A later snapshot replaces every row, not merges.
    m.on_snapshot(
        "t",
        20,
        vec![result(19, EventKind::New, "NVDA", "rsi_oversold", &["t"])],
    );
    let t = table.lock();
    assert_eq!(t.len(), 1);
    assert!(t.get("NVDA", "rsi_oversold").is_some());
    assert!(t.get("AAPL", "volume_spike").is_none());
    assert_eq!(t.seq, 20);
    drop(t);
    assert_eq!(m.position("t"), Some((20, "e1".to_owned())));
}

#[test]
fn a_result_that_leaves_a_table_removes_its_row() {
    let mut m = SubscriptionManager::new();
    let table = TableHandle::default();
    let (seen, cb) = recorder();
    m.add("t", FilterSpec::default(), Some(table.clone()), Some(cb))
        .unwrap();
    let (seen_u, cb_u) = recorder();
    m.add("u", FilterSpec::default(), None, Some(cb_u)).unwrap();
    m.on_subscribed(subscribed("t", "e1", 5, true), None);
    m.on_subscribed(subscribed("u", "e1", 5, true), None);
    let row = result(3, EventKind::New, "AAPL", "volume_spike", &[]);
    m.on_snapshot("t", 5, vec![row]);

    // Seq 6 drops out of t's filters and still matches u's.
    let mut update = result(6, EventKind::Update, "AAPL", "volume_spike", &["u"]);
    update.left = vec!["t".to_owned(), "gone".to_owned()];
    let Some(Event::Result(r)) = m.on_result(update) else {
        panic!("t and u take 6");
    };
    assert_eq!(
        (r.subscriptions.as_slice(), r.left.as_slice()),
        (&["u".to_owned()][..], &["t".to_owned()][..])
    );
    assert!(table.lock().is_empty());
    assert_eq!(table.lock().seq, 6);
    assert_eq!(seqs(&seen), [6]);
    assert_eq!(seqs(&seen_u), [6]);
    assert_eq!(m.position("t"), Some((6, "e1".to_owned())));

    // Left alone, and then again as a duplicate: nothing.
    let mut again = result(6, EventKind::Update, "AAPL", "volume_spike", &[]);
    again.left = vec!["t".to_owned()];
    assert_eq!(m.on_result(again), None);
}

#[test]
fn replacing_without_a_table_keeps_the_position() {
    let mut m = SubscriptionManager::new();
    m.add("main", scans(&["volume_spike"]), None, None).unwrap();
    m.on_subscribed(subscribed("main", "e1", 10, true), None);
    m.on_result(new(11, &["main"])).unwrap();

    let (seen, cb) = recorder();
    m.add("main", scans(&["new_high"]), None, Some(cb)).unwrap();
    assert_eq!(m.names().collect::<Vec<_>>(), ["main"]);
    assert_eq!(m.position("main"), Some((11, "e1".to_owned())));
    let msg = parse(&m.on_connect()[0]);
    assert_eq!(msg["data"]["filters"]["scans"][0], "new_high");
    assert_eq!(msg["data"]["since"], 11);
    // The new callback is the one called.
    m.on_result(new(12, &["main"])).unwrap();
    assert_eq!(seqs(&seen), [12]);
}

#[test]
fn replacing_with_a_table_starts_from_a_snapshot() {
    let mut m = SubscriptionManager::new();
    m.add("main", FilterSpec::default(), None, None).unwrap();
    m.on_subscribed(subscribed("main", "e1", 10, true), None);
    let table = TableHandle::default();
    m.add("main", FilterSpec::default(), Some(table), None)
        .unwrap();
    assert_eq!(m.position("main"), None);
    assert!(m.table("main").is_some());
    let msg = parse(&m.on_connect()[0]);
    assert_eq!(msg["data"]["snapshot"], true);
    assert!(msg["data"].get("since").is_none());
}

#[test]
fn new_filters_on_a_table_drop_the_position() {
    let mut m = SubscriptionManager::new();
    add_table(&mut m, "t");
    m.on_subscribed(subscribed("t", "e1", 10, true), None);
    assert_eq!(m.set_filters("t", scans(&["new_low"])), Ok(true));
    assert_eq!(m.position("t"), None);
    let msg = parse(&m.subscribe_message("t", true).unwrap());
    assert_eq!(msg["data"]["snapshot"], true);
    assert_eq!(msg["data"]["filters"]["scans"][0], "new_low");
    assert!(msg["data"].get("since").is_none());

    assert_eq!(m.set_filters("nobody", FilterSpec::default()), Ok(false));
}

#[test]
fn new_filters_without_a_table_go_on_in_place() {
    let mut m = SubscriptionManager::new();
    m.add("main", FilterSpec::default(), None, None).unwrap();
    m.on_subscribed(subscribed("main", "e1", 10, true), None);
    assert_eq!(m.set_filters("main", scans(&["new_low"])), Ok(true));
    assert_eq!(m.position("main"), Some((10, "e1".to_owned())));
    // On a live connection the server replaces it in place: no replay, no snapshot.
    let msg = parse(&m.subscribe_message("main", false).unwrap());
    assert_eq!(msg["data"]["filters"]["scans"][0], "new_low");
    assert!(msg["data"].get("since").is_none());
    assert!(msg["data"].get("epoch").is_none());
    assert!(msg["data"].get("snapshot").is_none());
    assert_eq!(m.subscribe_message("nobody", false), None);
}

#[test]
fn bad_filters_are_refused() {
    let mut m = SubscriptionManager::new();
    let unknown = scans(&["nope"]);
    let empty = FilterSpec {
        symbols: Some(Vec::new()),
        ..FilterSpec::default()
    };
    let inverted = FilterSpec {
        min_price: Some(10.0),
        max_price: Some(5.0),
        ..FilterSpec::default()
    };
    for bad in [&unknown, &empty, &inverted] {
        assert!(
            matches!(m.check(bad), Err(FilterError::Invalid(_))),
            "{bad:?}"
        );
        assert!(m.add("x", bad.clone(), None, None).is_err(), "{bad:?}");
    }
    // Refused filters add nothing.
    assert_eq!(m.names().count(), 0);

    m.add("x", FilterSpec::default(), None, None).unwrap();
    assert!(m.set_filters("x", unknown).is_err());
    assert!(m.check(&FilterSpec::default()).is_ok());
}

#[test]
fn the_symbol_cap_is_checked_once_set() {
    let mut m = SubscriptionManager::new();
    let three = FilterSpec {
        symbols: Some(vec!["A".into(), "B".into(), "C".into()]),
        ..FilterSpec::default()
    };
    assert!(m.check(&three).is_ok());
    m.set_max_symbols(2);
    assert_eq!(
        m.check(&three),
        Err(FilterError::TooManySymbols { given: 3, max: 2 })
    );
}

#[test]
fn a_removed_subscription_takes_nothing() {
    let mut m = SubscriptionManager::new();
    let (seen, cb) = recorder();
    m.add("main", FilterSpec::default(), None, Some(cb))
        .unwrap();
    assert!(m.remove("main"));
    assert!(!m.remove("main"));
    assert_eq!(m.on_result(new(1, &["main"])), None);
    let (events, send) = m.on_subscribed(subscribed("main", "e1", 1, true), None);
    assert!(events.is_empty());
    assert_eq!(send, None);
    assert!(m.on_connect().is_empty());
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a_quiet_subscription_stands_at_the_connections_last_result() {
    // "rare" matches nothing for a while; results for "all" still tell it how far the
    // connection got, so a resume asks only for what came after them.
    let mut m = SubscriptionManager::new();
    m.add("rare", FilterSpec::default(), None, None).unwrap();
    m.add("all", FilterSpec::default(), None, None).unwrap();
    let _ = m.on_connect();
    m.on_subscribed(subscribed("rare", "e1", 10, true), None);
    m.on_subscribed(subscribed("all", "e1", 10, true), None);
    for seq in 11..=50 {
        m.on_result(new(seq, &["all"]));
    }
    assert_eq!(m.position("rare"), Some((50, "e1".to_owned())));
    let msg = parse(&m.on_connect()[0]);
    assert_eq!(msg["data"]["since"], 50);
    // Not live until its `subscribed` on the new connection: no advance meanwhile.
    m.on_result(new(51, &["all"]));
    assert_eq!(m.position("rare"), Some((50, "e1".to_owned())));
}
