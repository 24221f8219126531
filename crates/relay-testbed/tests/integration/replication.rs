//! [`Replication`]: the replica applies what the primary commits, by GTID, and holds still
//! while its SQL thread is stopped.

use std::time::Duration;

use relay_testbed::Replication;

const ENABLED: &str =
    "SELECT name FROM mailserver_usermgmt.domains WHERE enabled = 1 ORDER BY name";

#[test]
fn the_replica_follows_the_primary_and_holds_still_while_its_sql_thread_is_stopped() {
    let pair = Replication::start().unwrap();
    pair.load_fixtures().unwrap();
    let seeded = pair.primary().sql(ENABLED).unwrap();
    assert!(seeded.contains("example.com"), "{seeded}");
    assert_eq!(pair.replica().sql(ENABLED).unwrap(), seeded);
    // The account relay-sync logs in with came through replication too.
    let users = pair
        .replica()
        .sql("SELECT user FROM mysql.user WHERE user = 'relay_sync'")
        .unwrap();
    assert_eq!(users.trim(), "relay_sync");
    let lag = pair.lag().unwrap();
    assert_eq!((lag.transactions, lag.seconds), (0, Some(0)), "{lag:?}");

    pair.stop_sql_thread().unwrap();
    pair.primary()
        .sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'")
        .unwrap();
    pair.primary()
        .sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.net'")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let lag = pair.lag().unwrap();
    assert_eq!((lag.transactions, lag.seconds), (2, None), "{lag:?}");
    assert_eq!(pair.replica().sql(ENABLED).unwrap(), seeded);

    pair.start_sql_thread().unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();
    let now = pair.replica().sql(ENABLED).unwrap();
    assert!(
        now.contains("old.example") && !now.contains("example.net"),
        "{now}"
    );
    assert_eq!(now, pair.primary().sql(ENABLED).unwrap());
}
