//! A stand-in for Amazon SNS on 127.0.0.1: it checks each request's SigV4 signature against
//! the test credentials it was given (the check shared with the other stand-ins, in `aws`),
//! records `Publish` and `GetTopicAttributes` calls, and answers as SNS's query protocol does,
//! or fails on purpose ([`Behaviour`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::aws::{lock, Answer, Request, Server, Signing};

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
    behaviour: Mutex<Behaviour>,
    published: Mutex<Vec<Published>>,
    seen: Mutex<Vec<Seen>>,
}

/// The stand-in SNS endpoint; stops when dropped.
#[derive(Debug)]
pub struct SnsStandIn {
    shared: Arc<Shared>,
    server: Server,
}

impl SnsStandIn {
    /// Listens on a free port of 127.0.0.1, accepting requests signed with these credentials
    /// for `region`.
    pub fn start(access_key_id: &str, secret_access_key: &str, region: &str) -> Result<SnsStandIn> {
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::Accept),
            published: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let signing = Signing::new(access_key_id, secret_access_key, region, "sns");
        let server = Server::start(signing, &shared, serve)?;
        Ok(SnsStandIn { shared, server })
    }

    /// The endpoint URL, for `ALERT_SNS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
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

/// One request, in SNS's query protocol (a form body, XML answers).
fn serve(request: &Request, shared: &Shared) -> Answer {
    let params = form(&String::from_utf8_lossy(&request.body));
    let action = params.get("Action").cloned().unwrap_or_default();
    let topic_arn = params.get("TopicArn").cloned().unwrap_or_default();
    let behaviour = *lock(&shared.behaviour);
    lock(&shared.seen).push(Seen {
        action: action.clone(),
        signature_problem: request.signature_problem.clone(),
        behaviour,
    });
    if let Some(problem) = &request.signature_problem {
        return xml(
            403,
            error_xml("SignatureDoesNotMatch", &xml_escape(problem)),
        );
    }
    match behaviour {
        Behaviour::Hang => Answer::Hang,
        Behaviour::Fail500 => xml(
            500,
            error_xml("InternalError", "the stand-in fails on purpose"),
        ),
        Behaviour::Deny => xml(
            403,
            error_xml(
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
                xml(
                    200,
                    "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
                     <PublishResult><MessageId>00000000-0000-0000-0000-000000000001</MessageId>\
                     </PublishResult><ResponseMetadata><RequestId>stand-in</RequestId>\
                     </ResponseMetadata></PublishResponse>"
                        .to_owned(),
                )
            }
            "GetTopicAttributes" => xml(
                200,
                format!(
                    "<GetTopicAttributesResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
                     <GetTopicAttributesResult><Attributes><entry><key>TopicArn</key>\
                     <value>{}</value></entry></Attributes></GetTopicAttributesResult>\
                     <ResponseMetadata><RequestId>stand-in</RequestId></ResponseMetadata>\
                     </GetTopicAttributesResponse>",
                    xml_escape(&topic_arn)
                ),
            ),
            other => xml(
                400,
                error_xml(
                    "InvalidAction",
                    &xml_escape(&format!("the stand-in does not do {other}")),
                ),
            ),
        },
    }
}

fn xml(status: u16, body: String) -> Answer {
    Answer::Respond {
        status,
        content_type: "text/xml",
        body,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        let params = form("Action=Publish&Subject=a+b%3Ac&Message=line%0Anext&Empty=");
        assert_eq!(params["Action"], "Publish");
        assert_eq!(params["Subject"], "a b:c");
        assert_eq!(params["Message"], "line\nnext");
        assert_eq!(params["Empty"], "");
    }
}
