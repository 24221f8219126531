//! A stand-in for Amazon SNS on 127.0.0.1: it checks each request's SigV4 signature against
//! the test credentials it was given, records `Publish` and `GetTopicAttributes` calls, and
//! answers as SNS's query protocol does, or fails on purpose ([`Behaviour`]).
//!
//! The signature check is written here from AWS's published algorithm, independently of the
//! SDK under test, so a request the SDK signs wrongly is refused (`SignatureDoesNotMatch`)
//! rather than verified by the same code that signed it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Like SNS for a caller allowed everything.
    Accept,
    /// `500 Internal Server Error` to every request.
    Fail500,
    /// Reads the request and never answers (until the stand-in is dropped).
    Hang,
    /// `403 AuthorizationError` naming the action, as SNS answers a role without it.
    Deny,
}

/// A message published to the stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `TopicArn`.
    pub topic_arn: String,
    /// `Subject`.
    pub subject: String,
    /// `Message`.
    pub message: String,
    /// The string message attributes, by name.
    pub attributes: BTreeMap<String, String>,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The `Action` parameter, e.g. `Publish`.
    pub action: String,
    /// `None` when the signature checked out, or why it did not.
    pub signature_problem: Option<String>,
    /// How it was answered.
    pub behaviour: Behaviour,
}

#[derive(Debug)]
struct Shared {
    access_key_id: String,
    secret_access_key: String,
    region: String,
    behaviour: Mutex<Behaviour>,
    published: Mutex<Vec<Published>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// The stand-in SNS endpoint; stops when dropped.
#[derive(Debug)]
pub struct SnsStandIn {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl SnsStandIn {
    /// Listens on a free port of 127.0.0.1, accepting requests signed with these credentials
    /// for `region`.
    pub fn start(access_key_id: &str, secret_access_key: &str, region: &str) -> Result<SnsStandIn> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot listen on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            region: region.to_owned(),
            behaviour: Mutex::new(Behaviour::Accept),
            published: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || accept(&listener, &accepting));
        Ok(SnsStandIn {
            port,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The endpoint URL, for `ALERT_SNS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Changes how later requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// The messages published (and accepted) so far.
    pub fn published(&self) -> Vec<Published> {
        lock(&self.shared.published).clone()
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }
}

impl Drop for SnsStandIn {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections until the stand-in is dropped; one thread per connection, so that a
/// hanging answer does not stop the next request.
fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One request: HTTP/1.1 with a `Content-Length` body, answered with `Connection: close`.
fn serve(stream: TcpStream, shared: &Shared) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length: usize = header(&headers, "content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let params = form(&String::from_utf8_lossy(&body));
    let action = params.get("Action").cloned().unwrap_or_default();
    let topic_arn = params.get("TopicArn").cloned().unwrap_or_default();
    let signature_problem = verify(shared, &method, &target, &headers, &body).err();
    let behaviour = *lock(&shared.behaviour);
    lock(&shared.seen).push(Seen {
        action: action.clone(),
        signature_problem: signature_problem.clone(),
        behaviour,
    });
    let mut stream = stream;
    if let Some(problem) = signature_problem {
        return respond(
            &mut stream,
            403,
            &error_xml("SignatureDoesNotMatch", &xml_escape(&problem)),
        );
    }
    match behaviour {
        Behaviour::Hang => {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
        Behaviour::Fail500 => respond(
            &mut stream,
            500,
            &error_xml("InternalError", "the stand-in fails on purpose"),
        ),
        Behaviour::Deny => respond(
            &mut stream,
            403,
            &error_xml(
                "AuthorizationError",
                &xml_escape(&format!(
                    "User: arn:aws:iam::123456789012:user/relay-sync-test is not authorized to \
                     perform: SNS:{action} on resource: {topic_arn} because no identity-based \
                     policy allows the SNS:{action} action"
                )),
            ),
        ),
        Behaviour::Accept => match action.as_str() {
            "Publish" => {
                let mut attributes = BTreeMap::new();
                for n in 1.. {
                    let prefix = format!("MessageAttributes.entry.{n}");
                    let Some(name) = params.get(&format!("{prefix}.Name")) else {
                        break;
                    };
                    let value = params
                        .get(&format!("{prefix}.Value.StringValue"))
                        .cloned()
                        .unwrap_or_default();
                    attributes.insert(name.clone(), value);
                }
                lock(&shared.published).push(Published {
                    topic_arn,
                    subject: params.get("Subject").cloned().unwrap_or_default(),
                    message: params.get("Message").cloned().unwrap_or_default(),
                    attributes,
                });
                respond(
                    &mut stream,
                    200,
                    "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
                     <PublishResult><MessageId>00000000-0000-0000-0000-000000000001</MessageId>\
                     </PublishResult><ResponseMetadata><RequestId>stand-in</RequestId>\
                     </ResponseMetadata></PublishResponse>",
                )
            }
            "GetTopicAttributes" => respond(
                &mut stream,
                200,
                &format!(
                    "<GetTopicAttributesResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
                     <GetTopicAttributesResult><Attributes><entry><key>TopicArn</key>\
                     <value>{}</value></entry></Attributes></GetTopicAttributesResult>\
                     <ResponseMetadata><RequestId>stand-in</RequestId></ResponseMetadata>\
                     </GetTopicAttributesResponse>",
                    xml_escape(&topic_arn)
                ),
            ),
            other => respond(
                &mut stream,
                400,
                &error_xml(
                    "InvalidAction",
                    &xml_escape(&format!("the stand-in does not do {other}")),
                ),
            ),
        },
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
         x-amzn-RequestId: stand-in\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(())
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error>\
         <Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>stand-in</RequestId></ErrorResponse>"
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `application/x-www-form-urlencoded` into its parameters.
fn form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the `Authorization` header: AWS Signature Version 4 for service `sns` in the
/// stand-in's region, with its access key, over the signed headers and the body.
fn verify(
    shared: &Shared,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::result::Result<(), String> {
    let authorization =
        header(headers, "authorization").ok_or("no Authorization header".to_owned())?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256".to_owned())?;
    let mut fields = BTreeMap::new();
    for field in rest.split(',') {
        if let Some((name, value)) = field.trim().split_once('=') {
            fields.insert(name, value);
        }
    }
    let field = |name: &str| {
        fields
            .get(name)
            .copied()
            .ok_or_else(|| format!("no {name} in Authorization"))
    };
    let credential = field("Credential")?;
    let signed_headers = field("SignedHeaders")?;
    let signature = field("Signature")?;
    let scope_parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope_parts[..] else {
        return Err(format!("malformed credential scope {credential}"));
    };
    if access_key_id != shared.access_key_id {
        return Err(format!("unknown access key {access_key_id}"));
    }
    if region != shared.region || service != "sns" {
        return Err(format!(
            "signed for {region}/{service}, not {}/sns",
            shared.region
        ));
    }
    let amz_date = header(headers, "x-amz-date").ok_or("no X-Amz-Date header".to_owned())?;
    if !amz_date.starts_with(date) {
        return Err("X-Amz-Date is not the credential scope's date".to_owned());
    }
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let value = header(headers, name).ok_or(format!("signed header {name} missing"))?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let canonical_request = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        hex(&Sha256::digest(body))
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", shared.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if expected == signature {
        Ok(())
    } else {
        Err("the request signature does not match".to_owned())
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// AWS's documented signing-key example (Signature Version 4, "deriving a signing key").
    #[test]
    fn signing_key_matches_aws_example() {
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215");
        for part in ["us-east-1", "iam", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn form_values_are_decoded() {
        let params = form("Action=Publish&Subject=a+b%3Ac&Message=line%0Anext&Empty=");
        assert_eq!(params["Action"], "Publish");
        assert_eq!(params["Subject"], "a b:c");
        assert_eq!(params["Message"], "line\nnext");
        assert_eq!(params["Empty"], "");
    }
}
