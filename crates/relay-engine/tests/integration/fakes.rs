//! In-memory stand-ins for MariaDB and Postfix, with failure injection and a call log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use relay_db::{DbError, DomainSource};
use relay_postfix::{Backup, PostfixError, PostfixRead, PostfixWrite};

/// A database that returns fixed rows or a fixed error.
pub(crate) enum FakeSource {
    Rows(Vec<String>),
    /// Domain rows and RECIPIENTS_QUERY rows.
    WithRecipients(Vec<String>, Vec<String>),
    Unreachable,
    MissingTable,
}

impl FakeSource {
    pub(crate) fn rows(rows: &[&str]) -> FakeSource {
        FakeSource::Rows(rows.iter().map(|s| s.to_string()).collect())
    }
}

impl DomainSource for FakeSource {
    async fn fetch(&self) -> Result<relay_db::Fetched, DbError> {
        match self {
            FakeSource::WithRecipients(names, recipients) => Ok(relay_db::Fetched {
                names: names.clone(),
                recipients: Some(recipients.clone()),
            }),
            _ => Ok(relay_db::Fetched {
                names: self.fetch_names().await?,
                recipients: None,
            }),
        }
    }

    async fn fetch_names(&self) -> Result<Vec<String>, DbError> {
        match self {
            FakeSource::Rows(rows) | FakeSource::WithRecipients(rows, _) => Ok(rows.clone()),
            FakeSource::Unreachable => Err(DbError::Unreachable {
                addr: "192.0.2.1:3306".into(),
                detail: "connect timed out after 3s".into(),
            }),
            FakeSource::MissingTable => Err(DbError::Query {
                addr: "127.0.0.1:3306".into(),
                detail: "Table 'mailserver_usermgmt.domainz' doesn't exist".into(),
            }),
        }
    }
}

/// Which operation to make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Backup,
    WriteTransport,
    SetRelayDomains,
    Reload,
    Lookup,
    WriteRelayDomainsMap,
    WriteRecipientsMap,
    SetRelayRecipientMaps,
}

/// What Postfix holds: the `relay_domains` value, the transport source, and the built map (what
/// `postmap -q` answers from), plus what has been done to it.
#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    pub(crate) relay_domains: String,
    pub(crate) transport: Option<String>,
    pub(crate) map: Option<String>,
    pub(crate) map_fresh: bool,
    pub(crate) backups: Vec<(String, Option<String>)>,
    /// Map mode's relay-domains table source (`None`: no file).
    pub(crate) table: Option<String>,
    /// Whether the table's database is at least as new as its source.
    pub(crate) table_stale: bool,
    /// Table backups, by stamp.
    pub(crate) table_backups: Vec<(String, String)>,
    pub(crate) calls: Vec<String>,
    /// Remaining failures per operation: `n` makes the next `n` calls fail.
    pub(crate) failures: BTreeMap<Op, usize>,
    /// When set, `postconf -h relay_domains` answers this once `relay_domains` has been
    /// written (a Postfix that does not see what was written).
    pub(crate) lie_after_write: Option<String>,
    /// When set to `(n, key)`, the map built by the `n`th transport write (from 1) has no
    /// entry for `key`: a map that does not hold what its source says.
    pub(crate) map_loses: Option<(usize, String)>,
    /// Transport writes so far.
    pub(crate) transport_writes: usize,
    /// The (transport, table) texts handed to `prepare_maps`, in order.
    pub(crate) prepared: Vec<(String, String)>,
    /// How many times `discard_prepared` was called.
    pub(crate) discarded: usize,
    /// `relay_recipient_maps`.
    pub(crate) relay_recipient_maps: String,
    /// The recipients table's source (`None`: no file).
    pub(crate) recipients: Option<String>,
    /// Whether the recipients table's database is older than its source.
    pub(crate) recipients_stale: bool,
    /// Recipient backups: (stamp, relay_recipient_maps, table).
    pub(crate) recipient_backups: Vec<(String, String, Option<String>)>,
    /// Called after every change with the state it left: a recorder of every intermediate
    /// state, for order checks.
    pub(crate) snapshots: Vec<Snapshot>,
    /// Changes so far (writes, rebuilds, `postconf -e`, reloads; not backups or reads).
    pub(crate) changes: usize,
    /// When set to `n`, the `n`th change (from 1) fails and changes nothing.
    pub(crate) fail_change: Option<usize>,
    /// When set, every read-back (`postmap -q`, `postconf -h relay_recipient_maps`) after the
    /// first change fails: a verification that cannot see what was written.
    pub(crate) blind_after_change: bool,
    /// `relay_domains` and `relay_recipient_maps` as the running processes read them at the
    /// last reload (until the next one, they are in force beside main.cf's).
    pub(crate) running: (String, String),
    readback: Option<String>,
}

/// What Postfix accepts and routes in one state: `relay_domains`, `relay_recipient_maps`, the
/// tables and the transport map, after one change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) relay_domains: String,
    pub(crate) relay_recipient_maps: String,
    pub(crate) recipients: Option<String>,
    /// The built transport map.
    pub(crate) map: Option<String>,
    /// The relay-domains table (`/fake/relay_domains`).
    pub(crate) table: Option<String>,
    /// The running processes' `relay_domains`.
    pub(crate) running: String,
}

impl Snapshot {
    /// The domains relayed by main.cf's or the running `relay_domains`, inline or through the
    /// relay-domains table, that the transport map has no entry for.
    pub(crate) fn unrouted(&self) -> Vec<String> {
        let mut relayed = Vec::new();
        for value in [&self.relay_domains, &self.running] {
            for token in value.split([',', ' ']).filter(|t| !t.is_empty()) {
                if token.ends_with(":/fake/relay_domains") {
                    let table = self.table.as_deref().unwrap_or_default();
                    relayed.extend(table.lines().filter_map(relay_core::entry_key));
                } else if !token.starts_with(['$', '/', '.']) && !token.contains(':') {
                    relayed.push(token);
                }
            }
        }
        let map = self.map.as_deref().unwrap_or_default();
        relayed
            .into_iter()
            .filter(|domain| {
                !map.lines()
                    .any(|line| relay_core::entry_key(line) == Some(domain))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Whether Postfix in this state accepts `address` (lowercase), the recipients table being
    /// `/fake/relay_recipients`.
    pub(crate) fn accepts(&self, address: &str) -> bool {
        let (_, domain) = address.split_once('@').unwrap();
        let relayed = self
            .relay_domains
            .split([',', ' '])
            .any(|token| token == domain);
        if !relayed {
            return false;
        }
        let tables: Vec<&str> = self
            .relay_recipient_maps
            .split([',', ' '])
            .filter(|t| !t.is_empty())
            .collect();
        if tables.is_empty() {
            return true;
        }
        tables
            .iter()
            .any(|t| t.ends_with(":/fake/relay_recipients"))
            && self.recipients.as_deref().is_some_and(|text| {
                text.lines().any(|line| {
                    let key = line.split(' ').next().unwrap_or_default();
                    key == address || key == format!("@{domain}")
                })
            })
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FakePostfix(pub(crate) Arc<Mutex<State>>);

impl FakePostfix {
    pub(crate) fn new(relay_domains: &str, transport: Option<&str>) -> FakePostfix {
        FakePostfix(Arc::new(Mutex::new(State {
            relay_domains: relay_domains.to_owned(),
            transport: transport.map(str::to_owned),
            map: transport.map(str::to_owned),
            map_fresh: true,
            running: (relay_domains.to_owned(), String::new()),
            ..State::default()
        })))
    }

    pub(crate) fn fail(&self, op: Op, times: usize) {
        self.0.lock().unwrap().failures.insert(op, times);
    }

    pub(crate) fn state(&self) -> State {
        self.0.lock().unwrap().clone()
    }

    /// Records the state after a change.
    fn snapshot(state: &mut State) {
        let snapshot = Snapshot {
            relay_domains: state.relay_domains.clone(),
            relay_recipient_maps: state.relay_recipient_maps.clone(),
            recipients: state.recipients.clone(),
            map: state.map.clone(),
            table: state.table.clone(),
            running: state.running.0.clone(),
        };
        state.snapshots.push(snapshot);
    }

    /// Records the call and fails it if a failure is pending for `op`, or it is the change
    /// that `fail_change` names, or a read-back after a change while `blind_after_change`.
    fn call(&self, op: Op, what: String) -> Result<(), PostfixError> {
        let mut state = self.0.lock().unwrap();
        state.calls.push(what.clone());
        let change = !matches!(op, Op::Backup | Op::Lookup);
        if change {
            state.changes += 1;
        }
        let injected = (change && state.fail_change == Some(state.changes))
            || (op == Op::Lookup && state.blind_after_change && state.changes > 0);
        let failure = || PostfixError::CommandFailed {
            command: what.clone(),
            status: "exit status: 1".into(),
            stderr: "fake failure".into(),
        };
        if injected {
            return Err(failure());
        }
        match state.failures.get_mut(&op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(failure())
            }
            _ => Ok(()),
        }
    }
}

impl PostfixRead for FakePostfix {
    fn relay_domains(&self) -> Result<String, PostfixError> {
        let state = self.0.lock().unwrap();
        Ok(state
            .readback
            .clone()
            .unwrap_or_else(|| state.relay_domains.clone()))
    }

    fn read_transport(&self) -> Result<Option<String>, PostfixError> {
        Ok(self.0.lock().unwrap().transport.clone())
    }

    fn transport_map_is_fresh(&self) -> Result<bool, PostfixError> {
        Ok(self.0.lock().unwrap().map_fresh)
    }

    fn lookup_transport(&self, key: &str) -> Result<Option<String>, PostfixError> {
        self.call(Op::Lookup, format!("postmap -q {key}"))?;
        let state = self.0.lock().unwrap();
        Ok(state.map.as_deref().and_then(|map| {
            map.lines().find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(key)).then(|| fields.collect::<Vec<_>>().join(" "))
            })
        }))
    }

    fn transport_map_name(&self) -> String {
        "hash:/fake/transport".into()
    }

    fn relay_domains_table(&self) -> (String, PathBuf) {
        ("hash".into(), PathBuf::from("/fake/relay_domains"))
    }

    fn read_relay_domains_map(&self) -> Result<Option<String>, PostfixError> {
        Ok(self.0.lock().unwrap().table.clone())
    }

    fn relay_domains_map_is_fresh(&self) -> Result<bool, PostfixError> {
        Ok(!self.0.lock().unwrap().table_stale)
    }

    fn relay_recipient_maps(&self) -> Result<String, PostfixError> {
        self.call(Op::Lookup, "postconf -h relay_recipient_maps".into())?;
        Ok(self.0.lock().unwrap().relay_recipient_maps.clone())
    }

    fn recipients_table(&self) -> (String, PathBuf) {
        ("hash".into(), PathBuf::from("/fake/relay_recipients"))
    }

    fn read_recipients_map(&self) -> Result<Option<String>, PostfixError> {
        Ok(self.0.lock().unwrap().recipients.clone())
    }

    fn recipients_map_is_fresh(&self) -> Result<bool, PostfixError> {
        Ok(!self.0.lock().unwrap().recipients_stale)
    }

    fn lookup_recipients(&self, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError> {
        self.call(
            Op::Lookup,
            format!("postmap -q recipients ({} keys)", keys.len()),
        )?;
        let state = self.0.lock().unwrap();
        let text = state.recipients.clone().unwrap_or_default();
        Ok(keys
            .iter()
            .map(|key| {
                text.lines()
                    .any(|line| line.split(' ').next() == Some(*key))
                    .then(|| "OK".to_owned())
            })
            .collect())
    }
}

impl PostfixWrite for FakePostfix {
    fn backup(&self, relay_domains: &str, transport: Option<&str>) -> Result<Backup, PostfixError> {
        self.call(Op::Backup, "backup".into())?;
        let mut state = self.0.lock().unwrap();
        state
            .backups
            .push((relay_domains.to_owned(), transport.map(str::to_owned)));
        Ok(Backup {
            stamp: "20261123-120000".into(),
            files: vec![
                PathBuf::from("/fake/backup/relay_domains.20261123-120000.bak"),
                PathBuf::from("/fake/backup/transport.20261123-120000.bak"),
            ],
        })
    }

    fn prepare_maps(
        &self,
        transport: Option<&str>,
        relay_domains_map: Option<&str>,
        _recipients_map: Option<&str>,
    ) {
        self.0.lock().unwrap().prepared.push((
            transport.unwrap_or("-").to_owned(),
            relay_domains_map.unwrap_or("-").to_owned(),
        ));
    }

    fn discard_prepared(&self) {
        self.0.lock().unwrap().discarded += 1;
    }

    fn write_transport(&self, text: &str) -> Result<(), PostfixError> {
        let removed = text.matches('\n').count();
        self.call(
            Op::WriteTransport,
            format!("write transport ({removed} lines)"),
        )?;
        let mut state = self.0.lock().unwrap();
        state.transport_writes += 1;
        state.transport = Some(text.to_owned());
        state.map = Some(match &state.map_loses {
            Some((n, key)) if *n == state.transport_writes => text
                .lines()
                .filter(|line| line.split_whitespace().next() != Some(key))
                .map(|line| format!("{line}\n"))
                .collect(),
            _ => text.to_owned(),
        });
        state.map_fresh = true;
        FakePostfix::snapshot(&mut state);
        Ok(())
    }

    fn rebuild_transport_map(&self) -> Result<(), PostfixError> {
        self.call(Op::WriteTransport, "postmap".into())?;
        let mut state = self.0.lock().unwrap();
        state.map = state.transport.clone();
        state.map_fresh = true;
        FakePostfix::snapshot(&mut state);
        Ok(())
    }

    fn write_relay_domains_map(&self, text: &str) -> Result<(), PostfixError> {
        let lines = text.matches('\n').count();
        self.call(
            Op::WriteRelayDomainsMap,
            format!("write relay_domains map ({lines} lines)"),
        )?;
        let mut state = self.0.lock().unwrap();
        state.table = Some(text.to_owned());
        state.table_stale = false;
        FakePostfix::snapshot(&mut state);
        Ok(())
    }

    fn backup_relay_domains_map(&self, stamp: &str, text: &str) -> Result<PathBuf, PostfixError> {
        self.call(Op::Backup, "backup relay_domains map".into())?;
        let mut state = self.0.lock().unwrap();
        state
            .table_backups
            .push((stamp.to_owned(), text.to_owned()));
        Ok(PathBuf::from(format!(
            "/fake/backup/relay_domains_map.{stamp}.bak"
        )))
    }

    fn set_relay_domains(&self, value: &str) -> Result<(), PostfixError> {
        self.call(
            Op::SetRelayDomains,
            format!("postconf -e relay_domains = {value}"),
        )?;
        let mut state = self.0.lock().unwrap();
        state.relay_domains = value.to_owned();
        state.readback = state.lie_after_write.take();
        FakePostfix::snapshot(&mut state);
        Ok(())
    }

    fn write_recipients_map(&self, text: &str) -> Result<(), PostfixError> {
        let lines = text.matches('\n').count();
        self.call(
            Op::WriteRecipientsMap,
            format!("write recipients map ({lines} lines)"),
        )?;
        let mut state = self.0.lock().unwrap();
        state.recipients = Some(text.to_owned());
        state.recipients_stale = false;
        FakePostfix::snapshot(&mut state);
        Ok(())
    }

    fn set_relay_recipient_maps(&self, value: &str) -> Result<(), PostfixError> {
        self.call(
            Op::SetRelayRecipientMaps,
            format!("postconf -e relay_recipient_maps = {value}"),
        )?;
        let mut state = self.0.lock().unwrap();
        state.relay_recipient_maps = value.to_owned();
        FakePostfix::snapshot(&mut state);
        Ok(())
    }

    fn backup_recipients(
        &self,
        stamp: &str,
        relay_recipient_maps: &str,
        table: Option<&str>,
    ) -> Result<Vec<PathBuf>, PostfixError> {
        self.call(Op::Backup, "backup recipients".into())?;
        self.0.lock().unwrap().recipient_backups.push((
            stamp.to_owned(),
            relay_recipient_maps.to_owned(),
            table.map(str::to_owned),
        ));
        Ok(vec![PathBuf::from(format!(
            "/fake/backup/relay_recipient_maps.{stamp}.bak"
        ))])
    }

    fn reload(&self) -> Result<(), PostfixError> {
        self.call(Op::Reload, "postfix reload".into())?;
        let mut state = self.0.lock().unwrap();
        state.running = (
            state.relay_domains.clone(),
            state.relay_recipient_maps.clone(),
        );
        FakePostfix::snapshot(&mut state);
        Ok(())
    }
}
