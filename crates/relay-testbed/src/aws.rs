//! What the stand-ins for AWS services ([`SnsStandIn`](crate::SnsStandIn),
//! [`SecretsManagerStandIn`](crate::SecretsManagerStandIn)) share: an HTTP/1.1 server on
//! 127.0.0.1, one thread per connection, and the check of each request's AWS Signature Version 4
//! against the test credentials the stand-in was given.
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

/// Whom a stand-in accepts requests from: the test credentials, and the region and service
/// a request must be signed for.
#[derive(Debug, Clone)]
pub(crate) struct Signing {
    /// The access key ID requests must name.
    pub(crate) access_key_id: String,
    /// The secret access key the signatures are computed with.
    pub(crate) secret_access_key: String,
    /// The region in the credential scope.
    pub(crate) region: String,
    /// The service in the credential scope, e.g. `sns` or `secretsmanager`.
    pub(crate) service: &'static str,
}

impl Signing {
    /// Requests signed with these credentials, for `region` and `service`.
    pub(crate) fn new(
        access_key_id: &str,
        secret_access_key: &str,
        region: &str,
        service: &'static str,
    ) -> Signing {
        Signing {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            region: region.to_owned(),
            service,
        }
    }
}

/// One request as a stand-in received it.
#[derive(Debug)]
pub(crate) struct Request {
    /// `None` when the SigV4 signature checked out, or why it did not.
    pub(crate) signature_problem: Option<String>,
    /// Its body.
    pub(crate) body: Vec<u8>,
    /// Its headers, names in lower case.
    headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// How a stand-in answers one request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// An HTTP response, sent with `Connection: close`.
    Respond {
        /// The status code.
        status: u16,
        /// Its `Content-Type`.
        content_type: &'static str,
        /// The body.
        body: String,
    },
    /// No answer at all, until the stand-in is dropped.
    Hang,
}

/// The handler a stand-in serves requests with.
type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// A loopback HTTP server that hands every request, with its signature checked, to a handler;
/// stops when dropped.
pub(crate) struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Server(127.0.0.1:{})", self.port)
    }
}

impl Server {
    /// Listens on a free port of 127.0.0.1 and answers each request with `serve`, given the
    /// stand-in's `state` (which it shares with the thread serving).
    pub(crate) fn start<S: Send + Sync + 'static>(
        signing: Signing,
        state: &Arc<S>,
        serve: fn(&Request, &S) -> Answer,
    ) -> Result<Server> {
        let state = Arc::clone(state);
        let handler = move |request: &Request| serve(request, &state);
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot listen on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let signing = Arc::new(signing);
        let stopping = Arc::clone(&stop);
        let acceptor = std::thread::spawn(move || accept(&listener, &signing, &handler, &stopping));
        Ok(Server {
            port,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The endpoint URL, for `ALERT_SNS_ENDPOINT` or `DB_PASSWORD_SECRET_ENDPOINT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Locks `mutex`, whatever a panicking holder left behind.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections until the server is dropped; one thread per connection, so that a
/// hanging answer does not stop the next request.
fn accept(
    listener: &TcpListener,
    signing: &Arc<Signing>,
    handler: &Arc<Handler>,
    stop: &Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (signing, handler, stop) =
                    (Arc::clone(signing), Arc::clone(handler), Arc::clone(stop));
                std::thread::spawn(move || {
                    let _ = serve(stream, &signing, &*handler, &stop);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One request: HTTP/1.1 with a `Content-Length` body, answered with `Connection: close`.
fn serve(stream: TcpStream, signing: &Signing, handler: &Handler, stop: &AtomicBool) -> Result<()> {
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
    let signature_problem = verify(signing, &method, &target, &headers, &body).err();
    let request = Request {
        signature_problem,
        body,
        headers,
    };
    match handler(&request) {
        Answer::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
        Answer::Respond {
            status,
            content_type,
            body,
        } => {
            let mut stream = stream;
            respond(&mut stream, status, content_type, &body)
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         x-amzn-RequestId: stand-in\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(())
}

/// Checks the `Authorization` header: AWS Signature Version 4 for the stand-in's service in its
/// region, with its access key, over the signed headers and the body.
fn verify(
    signing: &Signing,
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
    if access_key_id != signing.access_key_id {
        return Err(format!("unknown access key {access_key_id}"));
    }
    if region != signing.region || service != signing.service {
        return Err(format!(
            "signed for {region}/{service}, not {}/{}",
            signing.region, signing.service
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
        format!("AWS4{}", signing.secret_access_key).as_bytes(),
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

    /// AWS's documented example request (Signature Version 4 test suite, `get-vanilla`): the
    /// whole check, canonical request to signature, accepts it, and refuses it for another
    /// service or with one signed header changed.
    #[test]
    fn a_documented_signature_is_accepted_and_a_changed_one_refused() {
        let signing = Signing {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
            region: "us-east-1".to_owned(),
            service: "service",
        };
        let headers = |date: &str| {
            vec![
                ("host".to_owned(), "example.amazonaws.com".to_owned()),
                ("x-amz-date".to_owned(), date.to_owned()),
                (
                    "authorization".to_owned(),
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                     SignedHeaders=host;x-amz-date, \
                     Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                        .to_owned(),
                ),
            ]
        };
        assert_eq!(
            verify(&signing, "GET", "/", &headers("20150830T123600Z"), b""),
            Ok(())
        );
        assert!(verify(&signing, "GET", "/", &headers("20150830T123601Z"), b"").is_err());
        let other = Signing {
            service: "sns",
            ..signing
        };
        assert!(verify(&other, "GET", "/", &headers("20150830T123600Z"), b"").is_err());
    }
}
