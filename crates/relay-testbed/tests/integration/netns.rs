//! [`NetNs`] and a MariaDB inside one: reachable from the host on the namespace's address, and
//! while the link is down a connection hangs (it is not refused); everything is gone after drop.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use relay_testbed::{MariaDb, ServerOptions};

/// The first bytes of the server's greeting, or the error and how long it took.
fn greet(addr: SocketAddr) -> Result<Vec<u8>, (std::io::ErrorKind, Duration)> {
    let started = Instant::now();
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|error| (error.kind(), started.elapsed()))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut greeting = [0u8; 16];
    let n = stream
        .read(&mut greeting)
        .map_err(|error| (error.kind(), started.elapsed()))?;
    Ok(greeting[..n].to_vec())
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("/bin/ip").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_server_in_a_namespace_hangs_while_its_link_is_down() {
    let mut db = MariaDb::start_with(ServerOptions::new().in_network_namespace()).unwrap();
    let ns = db.netns().unwrap();
    let (name, address) = (ns.name().to_owned(), ns.address());
    assert_ne!(db.host(), "127.0.0.1");
    assert_eq!(db.host(), address.to_string());
    let addr = SocketAddr::new(address.into(), db.port());
    // The socket works whatever the link does: the tests' root access.
    assert_eq!(db.sql("SELECT 1").unwrap().trim(), "1");
    let greeting = greet(addr).unwrap();
    assert!(greeting.len() > 4, "{greeting:?}");

    ns.link_down().unwrap();
    let (kind, took) = greet(addr).unwrap_err();
    assert_eq!(kind, std::io::ErrorKind::TimedOut, "after {took:?}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert_eq!(db.sql("SELECT 1").unwrap().trim(), "1");

    ns.link_up().unwrap();
    assert!(greet(addr).is_ok());

    // A restart stays in the namespace.
    db.stop().unwrap();
    db.start_again().unwrap();
    assert!(greet(addr).is_ok());

    drop(db);
    assert!(
        !ip(&["netns", "list"]).contains(&name),
        "{name} left behind"
    );
    let network = format!("{}/30", std::net::Ipv4Addr::from(u32::from(address) & !3));
    assert_eq!(ip(&["route", "show", "exact", &network]), "", "{network}");
}
