//! A network namespace joined to the host by a veth pair, for a server whose network can fail
//! the way a real one does: [`NetNs::link_down`] makes packets to it vanish, so connections and
//! queries hang until their timeouts instead of being refused at once.
//!
//! Each [`NetNs`] has a name, interface names and a /30 of its own, all derived from the
//! process id and a counter, and is removed on drop. The addresses come from 198.18.0.0/15,
//! the block RFC 2544 sets aside for benchmarks: never routed, and unused on the machines this
//! runs on. Nothing leaves the host: the /30 also gets an `unreachable` route of a low priority,
//! so that when the veth's own route is gone (its host end down or deleted) a packet for the
//! namespace gets an immediate error instead of following the default route. That route is
//! added first and doubles as the reservation of the /30: the kernel refuses a second one, so
//! two processes never share a block.
//!
//! Measured on a 2-core VM: with the namespace's end of the link down and a permanent neighbour
//! entry on the host's end, `connect()` and reads on an established connection hang (5 s
//! timeouts expired) and data sent meanwhile arrives after [`NetNs::link_up`]. Without the
//! permanent entry, ARP fails after about 3 s and `connect()` gets "No route to host".

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// iproute2's `ip` (`/bin/ip` with or without merged `/usr`).
const IP: &str = "/bin/ip";
/// The metric of the safety route: above anything a connected route gets (0).
const SAFETY_METRIC: &str = "4242";
/// How many /30 blocks are tried before giving up.
const ATTEMPTS: u32 = 64;

/// A network namespace with a veth link to the host, removed on drop.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let ns = relay_testbed::NetNs::create()?;
/// // A server inside listens on ns.address(); the host reaches it there.
/// ns.link_down()?; // connections to it hang now
/// ns.link_up()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    ns_if: String,
    /// The /30's network address; `None` until it is reserved.
    network: Option<Ipv4Addr>,
    /// Whether the namespace exists (it holds the veth pair).
    created: bool,
}

impl NetNs {
    /// Creates the namespace, the veth pair and their addresses, brings everything up, and
    /// pins the namespace's address in the host's neighbour table (see the module doc).
    /// Fails, naming the command, when `ip` is missing or refuses (it needs root).
    pub fn create() -> Result<NetNs> {
        crate::require(IP, "iproute2")?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut ns = NetNs {
            name: format!("relay-testbed-{pid}-{n}"),
            // Interface names are at most 15 bytes: "rtb", the pid in hex (at most 6 digits
            // for Linux's 4194304), the counter in hex, and the end.
            host_if: format!("rtb{pid:x}x{n:x}h"),
            ns_if: format!("rtb{pid:x}x{n:x}n"),
            network: None,
            created: false,
        };
        if ns.host_if.len() > 15 {
            bail!("interface name {} is longer than 15 bytes", ns.host_if);
        }
        ns.reserve_network(pid, n)?;
        ip(&["netns", "add", &ns.name])?;
        ns.created = true;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
            "netns",
            &ns.name,
        ])?;
        let host = format!("{}/30", ns.host_address());
        let inside = format!("{}/30", ns.address());
        ip(&["addr", "add", &host, "dev", &ns.host_if])?;
        ip(&["-n", &ns.name, "addr", "add", &inside, "dev", &ns.ns_if])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns.name, "link", "set", &ns.ns_if, "up"])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let mac = ns.ns_mac()?;
        ip(&[
            "neigh",
            "replace",
            &ns.address().to_string(),
            "lladdr",
            &mac,
            "dev",
            &ns.host_if,
            "nud",
            "permanent",
        ])?;
        Ok(ns)
    }

    /// The namespace's name (`ip netns exec NAME …`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address inside the namespace, where a server there listens.
    pub fn address(&self) -> Ipv4Addr {
        self.offset(2)
    }

    /// The host's end of the link: where connections from the host come from, as a server in
    /// the namespace sees them (e.g. the host part of a MariaDB account).
    pub fn host_address(&self) -> Ipv4Addr {
        self.offset(1)
    }

    /// `program` to be run inside the namespace: `ip netns exec NAME program`. `ip` enters the
    /// namespace and then executes `program`, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut command = Command::new(IP);
        command
            .args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        command
    }

    /// Takes the namespace's end of the link down: packets to it are dropped without an
    /// answer, so new connections and established ones hang.
    pub fn link_down(&self) -> Result<()> {
        ip(&["-n", &self.name, "link", "set", &self.ns_if, "down"])
    }

    /// Brings the namespace's end of the link back up.
    pub fn link_up(&self) -> Result<()> {
        ip(&["-n", &self.name, "link", "set", &self.ns_if, "up"])
    }

    /// Reserves a free /30 of 198.18.0.0/15 by adding its safety route (see the module doc).
    fn reserve_network(&mut self, pid: u32, n: u32) -> Result<()> {
        // 32768 blocks; a start that differs between processes, then the next ones.
        let start = pid
            .wrapping_mul(2654435761)
            .wrapping_add(n.wrapping_mul(40503));
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let block = start.wrapping_add(attempt) % 32768;
            let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4;
            let network = Ipv4Addr::from(base);
            let prefix = format!("{network}/30");
            match ip(&[
                "route",
                "add",
                "unreachable",
                &prefix,
                "metric",
                SAFETY_METRIC,
            ]) {
                Ok(()) if !in_use(&prefix)? => {
                    self.network = Some(network);
                    return Ok(());
                }
                // Someone uses the block already (an address, or a route beside ours).
                Ok(()) => {
                    let _ = ip(&[
                        "route",
                        "del",
                        "unreachable",
                        &prefix,
                        "metric",
                        SAFETY_METRIC,
                    ]);
                }
                Err(error) => last = format!("{error:#}"),
            }
        }
        bail!("no free /30 in 198.18.0.0/15 after {ATTEMPTS} tries; last error: {last}")
    }

    fn offset(&self, host: u32) -> Ipv4Addr {
        let base = self.network.map_or(0, u32::from);
        Ipv4Addr::from(base + host)
    }

    /// The MAC address of the namespace's end of the link.
    fn ns_mac(&self) -> Result<String> {
        let output = ip_output(&["-n", &self.name, "-o", "link", "show", &self.ns_if])?;
        output
            .split_whitespace()
            .skip_while(|word| *word != "link/ether")
            .nth(1)
            .map(str::to_owned)
            .with_context(|| format!("no MAC address for {} in: {output}", self.ns_if))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the host's end,
        // the addresses, the neighbour entry and the connected route. Errors cannot be
        // reported from drop.
        if self.created {
            let _ = ip(&["netns", "del", &self.name]);
        }
        if let Some(network) = self.network {
            let _ = ip(&[
                "route",
                "del",
                "unreachable",
                &format!("{network}/30"),
                "metric",
                SAFETY_METRIC,
            ]);
        }
    }
}

/// Whether anything but our safety route uses `prefix`: another route to it, or an address in
/// it on some interface.
fn in_use(prefix: &str) -> Result<bool> {
    let routes = ip_output(&["-4", "route", "show", "exact", prefix])?;
    let ours = format!("unreachable {prefix} metric {SAFETY_METRIC}");
    let others = routes.lines().any(|line| line.trim() != ours);
    let base = prefix
        .split('/')
        .next()
        .and_then(|network| network.parse::<Ipv4Addr>().ok())
        .map_or(0, u32::from);
    let addresses = ip_output(&["-4", "-o", "addr", "show"])?;
    let taken = addresses.lines().any(|line| {
        line.split_whitespace()
            .skip_while(|word| *word != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
            .is_some_and(|addr| u32::from(addr) & !3 == base)
    });
    Ok(others || taken)
}

/// Runs `ip ARGS`; an error carries the command line and its stderr.
fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String> {
    let output = Command::new(IP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {IP}"))?;
    if !output.status.success() {
        bail!(
            "{IP} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("ip printed non-UTF-8 output")
}
