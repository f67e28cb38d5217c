//! The simulated clock: saved with every advance, resumed exactly on reopen, never backwards.

use std::sync::Arc;

use hub::{Caller, Hub, HubConfig, HubError, ManualClock, SystemClock};
use jiff::Timestamp;
use store::sqlite::{Durability, SqliteOptions, SqliteStore};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn open_store(dir: &std::path::Path) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(dir, SqliteOptions { durability: Durability::Normal, readers: 1, ..Default::default() })
            .unwrap(),
    )
}

async fn operator(hub: &Hub) -> Caller {
    let token = match hub.bootstrap_operator().await.unwrap() {
        Some(t) => t.token,
        None => hub.issue_token_unchecked(&"hub-operator".parse().unwrap(), "test").await.unwrap().token,
    };
    hub.authenticate(&token).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_time_is_saved_resumed_and_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_store(dir.path());
        let hub = Hub::open(store.clone(), Arc::new(ManualClock::new(t("2026-01-01T00:00:00Z"))), HubConfig::default())
            .await
            .unwrap();
        let op = operator(&hub).await;
        // Two advances at once: whatever the order, the saved time is the later one.
        let (a, b) = tokio::join!(
            hub.advance_clock(&op, t("2026-03-01T00:00:00Z")),
            hub.advance_clock(&op, t("2026-02-01T00:00:00Z"))
        );
        assert!(a.is_ok(), "{a:?}");
        assert!(matches!(b, Ok(_) | Err(HubError::Invalid { .. })), "{b:?}");
        assert_eq!(hub.now(), t("2026-03-01T00:00:00Z"));
        store.close().await;
    }
    // Reopened with any start, it resumes exactly where it was.
    for start in ["2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z"] {
        let store = open_store(dir.path());
        let hub = Hub::open(store.clone(), Arc::new(ManualClock::new(t(start))), HubConfig::default()).await.unwrap();
        assert_eq!(hub.now(), t("2026-03-01T00:00:00Z"), "started at {start}");
        store.close().await;
    }
    // The system clock is refused on a simulated data directory.
    let store = open_store(dir.path());
    let refused = Hub::open(store.clone(), Arc::new(SystemClock), HubConfig::default()).await;
    assert!(matches!(refused, Err(HubError::Conflict(_))));
}
