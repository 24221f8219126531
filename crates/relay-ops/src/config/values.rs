//! The value types of the keys: each turns one value's text into what [`Config`](super::Config)
//! holds, or says what it expected. A key's declaration names one of them
//! ([`keys`](super::keys)), and its default is text read by the same parser, so a default can
//! never be something the file could not say.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use relay_core::{DomainName, Transport};
use relay_db::{DbHost, TlsMode};

use super::RelayDomainsMode;

/// How the text of one key's value becomes its value. Empty text never gets here: an empty
/// value is the same as not setting the key.
pub(super) trait ValueType {
    /// What the key's value is once read.
    type Value;

    /// Reads `text`, or says what the key accepts (the error's "expected ...").
    fn parse(text: &str) -> Result<Self::Value, String>;
}

/// Declares a value type: a unit struct whose [`ValueType::parse`] is `parse`, an expression of
/// `text` giving `Result<$value, E>` with `E` a `&str` or a `String`.
macro_rules! value_type {
    ($(#[$doc:meta])* $name:ident -> $value:ty, |$text:ident| $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(super) struct $name;

        impl ValueType for $name {
            type Value = $value;

            fn parse($text: &str) -> Result<$value, String> {
                $parse.map_err(Into::into)
            }
        }
    };
}

value_type! {
    /// Any text, as written.
    Text -> String, |text| Ok::<_, &str>(text.to_owned())
}
value_type! {
    /// An IP address or a host name ([`relay_core::is_host_name`]), kept as written.
    Host -> String, |text| is_host(text)
        .then(|| text.to_owned())
        .ok_or("an IP address or a host name, without brackets or port")
}
value_type! {
    /// `DB_HOST`: one host, or several tried in order, separated by commas or whitespace; each
    /// an IP address or a host name, with `:PORT` when it is not at `DB_PORT` (an IPv6 address
    /// with a port in brackets: `[2001:db8::5]:3307`).
    HostList -> Vec<DbHost>, |text| host_list(text)
}
value_type! {
    /// A TCP port.
    Port -> u16, |text| text
        .parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or("a port number from 1 to 65535")
}
value_type! {
    /// A timeout: more than 0 and at most an hour (comparisons with NaN are false).
    Seconds -> Duration, |text| seconds(text, 3600.0)
        .ok_or("a number of seconds above 0 and at most 3600, such as 3 or 0.5")
}
value_type! {
    /// `ALERT_AFTER_SECONDS`: more than 0 and at most a week.
    Period -> Duration, |text| seconds(text, 604_800.0)
        .ok_or("a number of seconds above 0 and at most 604800 (a week), such as 1500")
}
value_type! {
    /// `LOG_FILE`: an absolute path, or `-` for standard output.
    LogFile -> PathBuf, |text| Some(PathBuf::from(text))
        .filter(|path| path.is_absolute() || path.as_os_str() == "-")
        .ok_or("an absolute path, or - for standard output")
}
value_type! {
    /// A path that does not depend on the working directory.
    AbsolutePath -> PathBuf, |text| Some(PathBuf::from(text))
        .filter(|path| path.is_absolute())
        .ok_or("an absolute path")
}
value_type! {
    /// `BACKUP_KEEP`.
    Keep -> usize, |text| text
        .parse()
        .ok()
        .filter(|count| *count >= 1)
        .ok_or("a whole number of at least 1")
}
value_type! {
    /// `ALERT_AFTER_FAILURES`.
    Count -> u32, |text| text
        .parse()
        .ok()
        .filter(|count| *count >= 1)
        .ok_or("a whole number of at least 1")
}
value_type! {
    /// `MAX_REMOVE_PERCENT`.
    Percent -> u8, |text| text
        .parse()
        .ok()
        .filter(|percent| *percent <= 100)
        .ok_or("a whole number from 0 to 100")
}
value_type! {
    /// Yes or no, in any case.
    Bool -> bool, |text| one_of(text, &[
        ("yes", true), ("no", false), ("true", true), ("false", false), ("1", true), ("0", false),
    ])
}
value_type! {
    /// One address, `local@domain`, with nothing that could break a mail header.
    Email -> String, |text| is_email(text)
        .then(|| text.to_owned())
        .ok_or("one email address such as ops@example.com")
}
value_type! {
    /// `MAP_TYPE`: the lookup table types relay-sync builds with postmap, lower case.
    MapType -> String, |text| one_of(text, &[
        ("hash", "hash"), ("lmdb", "lmdb"), ("cdb", "cdb"), ("btree", "btree"),
    ]).map(str::to_owned)
}
value_type! {
    /// `DB_TLS`, as relay-db's [`TlsMode`].
    Tls -> TlsMode, |text| one_of(text, &[
        ("disabled", TlsMode::Disabled),
        ("preferred", TlsMode::Preferred),
        ("required", TlsMode::Required),
        ("verify-ca", TlsMode::VerifyCa),
        ("verify-full", TlsMode::VerifyFull),
    ])
}
value_type! {
    /// `RELAY_TRANSPORT`, as relay-core's [`Transport`].
    RelayTransport -> Transport, |text| one_of(text, &[
        ("smtp", Transport::Smtp), ("lmtp", Transport::Lmtp),
    ])
}
value_type! {
    /// `RELAY_DOMAINS_MODE`.
    DomainsMode -> RelayDomainsMode, |text| one_of(text, &[
        ("inline", RelayDomainsMode::Inline), ("map", RelayDomainsMode::Map),
    ])
}
value_type! {
    /// `PRESERVE_DOMAINS`: domain names separated by commas or whitespace.
    DomainList -> BTreeSet<DomainName>, |text| domain_list(text)
}
value_type! {
    /// `POSTFIX_COMMAND_PREFIX`: words separated by whitespace, with no shell quoting.
    Words -> Vec<String>, |text| Ok::<_, &str>(text.split_whitespace().map(str::to_owned).collect())
}
value_type! {
    /// `ALERT_SNS_REGION`: a region name such as `eu-central-1`.
    AwsRegion -> String, |text| is_region(text)
        .then(|| text.to_owned())
        .ok_or("an AWS region such as eu-central-1")
}
value_type! {
    /// `ALERT_SNS_ENDPOINT`: an https URL, kept as written; plain http only to a loopback
    /// address (a stand-in for tests), since the request carries the session token.
    Endpoint -> String, |text| is_endpoint(text)
        .then(|| text.to_owned())
        .ok_or("an https:// URL such as https://sns.eu-central-1.amazonaws.com (http:// only to a loopback address such as http://127.0.0.1:4566)")
}
value_type! {
    /// `ALERT_SNS_TOPIC_ARN`, with the region it names.
    TopicArn -> Arn, |text| topic_arn(text).ok_or(
        "an SNS standard topic's ARN such as arn:aws:sns:eu-central-1:123456789012:relay-sync-alerts",
    )
}

value_type! {
    /// `DB_PASSWORD_SECRET`: a Secrets Manager secret's ARN, with the region it names, or its
    /// name.
    SecretId -> SecretRef, |text| secret_ref(text).ok_or(
        "a Secrets Manager secret's ARN such as \
         arn:aws:secretsmanager:eu-central-1:123456789012:secret:relay-sync/db-AbCdEf, or its \
         name (up to 512 letters, digits and /_+=.@-)",
    )
}

/// A Secrets Manager secret as `DB_PASSWORD_SECRET` names it.
#[derive(Debug)]
pub(super) struct SecretRef {
    /// The ARN or the name, as written: what `GetSecretValue` is asked for.
    pub(super) id: String,
    /// The region in the ARN; `None` for a name.
    pub(super) region: Option<String>,
}

/// An SNS topic's ARN and the region in it.
#[derive(Debug)]
pub(super) struct Arn {
    /// The whole ARN.
    pub(super) arn: String,
    /// Its region part.
    pub(super) region: String,
}

/// An IP address or a host name: the one rule every host key follows. relay-core's `NextHop`
/// holds the same, so a next hop read here is always one it accepts.
fn is_host(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok() || relay_core::is_host_name(text)
}

/// `DB_HOST`'s entries, in order: `host`, `host:port`, `IPv6`, `[IPv6]:port`; no entry twice.
fn host_list(text: &str) -> Result<Vec<DbHost>, String> {
    const EXPECTED: &str = "one or more hosts separated by commas (IP addresses or host names, \
                            each with :PORT when it is not at DB_PORT), such as \
                            replica.example, primary.example";
    let mut hosts: Vec<DbHost> = Vec::new();
    for entry in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
    {
        let host = db_host(entry).ok_or_else(|| {
            format!(
                "{EXPECTED}, and {} is not one",
                relay_core::escape_for_log(entry)
            )
        })?;
        if hosts.contains(&host) {
            return Err(format!("{EXPECTED}, each once, and {host} is listed twice"));
        }
        hosts.push(host);
    }
    if hosts.is_empty() {
        return Err(EXPECTED.to_owned());
    }
    Ok(hosts)
}

/// One entry of `DB_HOST`.
fn db_host(entry: &str) -> Option<DbHost> {
    let port = |text: &str| text.parse::<u16>().ok().filter(|port| *port != 0);
    if let Some(rest) = entry.strip_prefix('[') {
        // `[IPv6]` or `[IPv6]:port`.
        let (address, after) = rest.split_once(']')?;
        address.parse::<std::net::Ipv6Addr>().ok()?;
        let host = DbHost::new(address);
        return match after {
            "" => Some(host),
            _ => Some(host.with_port(port(after.strip_prefix(':')?)?)),
        };
    }
    if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(DbHost::new(entry));
    }
    match entry.split_once(':') {
        Some((name, number)) => {
            let port = port(number)?;
            is_host(name).then(|| DbHost::new(name).with_port(port))
        }
        None => is_host(entry).then(|| DbHost::new(entry)),
    }
}

/// Seconds above 0 and at most `max`, fractions allowed.
fn seconds(text: &str, max: f64) -> Option<Duration> {
    text.parse()
        .ok()
        .filter(|s| *s > 0.0 && *s <= max)
        .map(Duration::from_secs_f64)
}

/// The value of the word `text` is, in any case, or the words accepted: "smtp or lmtp".
fn one_of<T: Copy>(text: &str, words: &[(&str, T)]) -> Result<T, String> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, value)) = words.iter().find(|(word, _)| *word == lower) {
        return Ok(*value);
    }
    let names: Vec<&str> = words.iter().map(|(word, _)| *word).collect();
    Err(match &names[..] {
        [init @ .., last] if !init.is_empty() => format!("{} or {last}", init.join(", ")),
        _ => names.concat(),
    })
}

fn domain_list(text: &str) -> Result<BTreeSet<DomainName>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .map(|word| {
            DomainName::parse(word).map_err(|reason| {
                format!(
                    "domain names separated by commas or spaces, and {} is not one ({reason})",
                    relay_core::escape_for_log(word)
                )
            })
        })
        .collect()
}

/// `arn:PARTITION:sns:REGION:ACCOUNT:NAME` with a 12-digit account and a standard topic's name:
/// a FIFO topic (`.fifo`) would need a message group that alerts do not have.
fn topic_arn(text: &str) -> Option<Arn> {
    let parts: Vec<&str> = text.split(':').collect();
    let ["arn", partition, "sns", region, account, name] = parts[..] else {
        return None;
    };
    let valid = partition.starts_with("aws")
        && is_region(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| Arn {
        arn: text.to_owned(),
        region: region.to_owned(),
    })
}

/// `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME` (NAME as Secrets Manager shows it,
/// with or without its random suffix), or a secret's name alone: Secrets Manager's own rule for
/// names, 1 to 512 of `A-Za-z0-9/_+=.@-`.
fn secret_ref(text: &str) -> Option<SecretRef> {
    let is_name = |name: &str| {
        (1..=512).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
    };
    if !text.starts_with("arn:") {
        return is_name(text).then(|| SecretRef {
            id: text.to_owned(),
            region: None,
        });
    }
    let parts: Vec<&str> = text.split(':').collect();
    let ["arn", partition, "secretsmanager", region, account, "secret", name] = parts[..] else {
        return None;
    };
    let valid = partition.starts_with("aws")
        && is_region(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && is_name(name);
    valid.then(|| SecretRef {
        id: text.to_owned(),
        region: Some(region.to_owned()),
    })
}

fn is_region(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('-')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An `https://` URL, or an `http://` one whose host is a loopback IP address (`127.0.0.0/8`,
/// `[::1]`): a request to SNS carries the access key ID and the session token, which must not
/// cross a network in clear text. A loopback name such as `localhost` is refused too: what it
/// resolves to is not in the URL.
fn is_endpoint(text: &str) -> bool {
    let (rest, secure) = match text.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => match text.strip_prefix("http://") {
            Some(rest) => (rest, false),
            None => return false,
        },
    };
    let well_formed = !rest.is_empty()
        && !rest.starts_with('/')
        && !rest
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@');
    well_formed && (secure || is_loopback_authority(rest))
}

/// Whether the host of a URL's `HOST[:PORT][/PATH]` is a loopback IP address.
fn is_loopback_authority(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map(|(host, _)| host),
        None => Some(authority.split(':').next().unwrap_or_default()),
    };
    host.and_then(|host| host.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

fn is_email(text: &str) -> bool {
    let plain = !text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
    matches!(text.rsplit_once('@'), Some((local, domain))
        if plain && !local.is_empty() && is_host(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALERT_SNS_ENDPOINT` carries credentials: https, or http to a loopback address only.
    #[test]
    fn an_sns_endpoint_is_https_or_loopback() {
        for good in [
            "https://sns.eu-central-1.amazonaws.com",
            "https://vpce-1.sns.eu-central-1.vpce.amazonaws.com/",
            "https://10.0.0.5:8443",
            "http://127.0.0.1:4566",
            "http://127.0.0.2",
            "http://[::1]:4566/",
        ] {
            assert!(is_endpoint(good), "{good}");
        }
        for bad in [
            "http://sns.eu-central-1.amazonaws.com",
            "http://10.0.0.5:4566",
            "http://localhost:4566",
            "http://127.0.0.1.attacker.example",
            "http://[::2]:4566",
            "http://[::1",
            "http://",
            "https://",
            "https:///path",
            "https://user@host",
            "sns.local:4566",
            "ftp://127.0.0.1",
        ] {
            assert!(!is_endpoint(bad), "{bad}");
        }
    }
}
