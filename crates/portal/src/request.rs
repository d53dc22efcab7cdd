//! What a page asks a citizen's device to sign: a transaction request as
//! text (shown as a QR code), from which the device builds the transaction
//! itself, so that it signs only what it can show its holder.
//!
//! ```text
//! govchain-sign:v1?chain=<chain id>&rp=<department of the portal>
//!   &req=<32 hex>&nonce=<the citizen's next nonce>&action=<action>
//!   [&dept=<department>&attrs=<a,b>&purpose=<text>&exp=<Unix ms>]  grant-consent
//!   [&consent=<64 hex>]                                            revoke-consent
//!   [&case=<64 hex>&step=<step id>&verb=approve|reject|return
//!    &reason=<text>]                                              act-on-case
//!   &cb=<callback url>
//! ```
//!
//! Values carry no '&' or '=': names, numbers, hex, and purposes of
//! letters, digits, spaces and `-_.,`. The device posts the signed envelope
//! back to `cb` ([`DeviceSignature`]); the portal submits it only if the
//! envelope's transaction is exactly the one requested.
//!
//! This is pure (no I/O) and shared with the `govchain identity respond`
//! command, which plays the device.

use std::collections::HashMap;

use govchain_proto::types::v1::transaction::Body;
use govchain_proto::types::v1::{ActOnCase, CaseAction, GrantConsent, RevokeConsent, Transaction};
use serde::{Deserialize, Serialize};

pub const SIGN_PAYLOAD_PREFIX: &str = "govchain-sign:v1?";
/// Longest purpose text a request carries.
pub const PURPOSE_BYTES_MAX: usize = 128;

/// The transaction a page asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignAction {
    GrantConsent {
        department: String,
        attributes: Vec<String>,
        purpose: String,
        expires_ms: u64,
    },
    RevokeConsent {
        consent_id: [u8; 32],
    },
    /// An officer's decision on a case step.
    ActOnCase {
        case_id: [u8; 32],
        step: String,
        verb: CaseVerb,
        reason: String,
    },
}

/// What an officer does with a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseVerb {
    Approve,
    Reject,
    Return,
}

impl CaseVerb {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approve" => Some(Self::Approve),
            "reject" => Some(Self::Reject),
            "return" => Some(Self::Return),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Return => "return",
        }
    }

    fn action(self) -> CaseAction {
        match self {
            Self::Approve => CaseAction::Approve,
            Self::Reject => CaseAction::Reject,
            Self::Return => CaseAction::Return,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignRequest {
    pub chain: String,
    /// The department whose portal asks.
    pub relying_party: String,
    /// The request's id, 16 random bytes in hex.
    pub request: String,
    /// The nonce the transaction takes (the citizen's next one).
    pub nonce: u64,
    pub action: SignAction,
    pub callback: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a govchain signing request: {0}")]
pub struct RequestError(pub String);

/// What the device posts to the callback.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceSignature {
    /// The request text, exactly as shown.
    pub payload: String,
    /// The encoded, signed `govchain.types.v1.TransactionEnvelope`, in hex.
    pub envelope: String,
}

/// A purpose a request can carry.
pub fn valid_purpose(purpose: &str) -> bool {
    !purpose.is_empty()
        && purpose.len() <= PURPOSE_BYTES_MAX
        && purpose
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -_.,".contains(&b))
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
}

/// A department or attribute name a request can carry.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl SignRequest {
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{SIGN_PAYLOAD_PREFIX}chain={}&rp={}&req={}&nonce={}",
            self.chain, self.relying_party, self.request, self.nonce
        );
        match &self.action {
            SignAction::GrantConsent {
                department,
                attributes,
                purpose,
                expires_ms,
            } => text.push_str(&format!(
                "&action=grant-consent&dept={department}&attrs={}&purpose={purpose}&exp={expires_ms}",
                attributes.join(",")
            )),
            SignAction::RevokeConsent { consent_id } => text.push_str(&format!(
                "&action=revoke-consent&consent={}",
                hex::encode(consent_id)
            )),
            SignAction::ActOnCase {
                case_id,
                step,
                verb,
                reason,
            } => text.push_str(&format!(
                "&action=act-on-case&case={}&step={step}&verb={}&reason={reason}",
                hex::encode(case_id),
                verb.as_str()
            )),
        }
        text.push_str("&cb=");
        text.push_str(&self.callback);
        text
    }

    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let bad = |reason: &str| RequestError(reason.to_owned());
        let query = text
            .strip_prefix(SIGN_PAYLOAD_PREFIX)
            .ok_or_else(|| bad("wrong prefix"))?;
        let mut fields = HashMap::new();
        for pair in query.split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("a field has no '='"))?;
            if fields.insert(key, value).is_some() {
                return Err(bad(&format!("field {key} appears twice")));
            }
        }
        let field = |name: &str| {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| bad(&format!("no {name} field")))
        };
        let number = |name: &str| -> Result<u64, RequestError> {
            field(name)?
                .parse()
                .map_err(|_| bad(&format!("{name} is not a number")))
        };
        let action = match field("action")? {
            "grant-consent" => {
                let attributes: Vec<String> =
                    field("attrs")?.split(',').map(str::to_owned).collect();
                let department = field("dept")?.to_owned();
                let purpose = field("purpose")?.to_owned();
                if !valid_name(&department) || !attributes.iter().all(|a| valid_name(a)) {
                    return Err(bad("dept and attrs must be names"));
                }
                if !valid_purpose(&purpose) {
                    return Err(bad("purpose has characters a request cannot carry"));
                }
                SignAction::GrantConsent {
                    department,
                    attributes,
                    purpose,
                    expires_ms: number("exp")?,
                }
            }
            "revoke-consent" => SignAction::RevokeConsent {
                consent_id: hex32(field("consent")?)
                    .ok_or_else(|| bad("consent is not 64 hex characters"))?,
            },
            "act-on-case" => {
                let step = field("step")?.to_owned();
                let reason = field("reason")?.to_owned();
                let verb = CaseVerb::parse(field("verb")?)
                    .ok_or_else(|| bad("verb is not approve, reject or return"))?;
                if !valid_name(&step) {
                    return Err(bad("step must be a name"));
                }
                if !(reason.is_empty() || valid_purpose(&reason)) {
                    return Err(bad("reason has characters a request cannot carry"));
                }
                SignAction::ActOnCase {
                    case_id: hex32(field("case")?)
                        .ok_or_else(|| bad("case is not 64 hex characters"))?,
                    step,
                    verb,
                    reason,
                }
            }
            other => return Err(bad(&format!("unknown action {other:?}"))),
        };
        let request = field("req")?;
        if request.len() != 32 || !request.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("req is not 32 hex characters"));
        }
        let callback = field("cb")?;
        if !callback.starts_with("https://") {
            return Err(bad("cb is not an https:// URL"));
        }
        Ok(Self {
            chain: field("chain")?.to_owned(),
            relying_party: field("rp")?.to_owned(),
            request: request.to_owned(),
            nonce: number("nonce")?,
            action,
            callback: callback.to_owned(),
        })
    }

    /// The transaction the request asks the citizen to sign.
    pub fn transaction(&self) -> Transaction {
        let body = match &self.action {
            SignAction::GrantConsent {
                department,
                attributes,
                purpose,
                expires_ms,
            } => Body::GrantConsent(GrantConsent {
                department: department.clone(),
                attributes: attributes.clone(),
                purpose: purpose.clone(),
                expires_ms: *expires_ms,
                jurisdiction: String::new(),
            }),
            SignAction::RevokeConsent { consent_id } => Body::RevokeConsent(RevokeConsent {
                consent_id: consent_id.to_vec(),
            }),
            SignAction::ActOnCase {
                case_id,
                step,
                verb,
                reason,
            } => Body::ActOnCase(ActOnCase {
                case_id: case_id.to_vec(),
                step_id: step.clone(),
                action: verb.action() as i32,
                reason: reason.clone(),
            }),
        };
        Transaction { body: Some(body) }
    }

    /// What the device shows its holder before signing.
    pub fn describe(&self) -> String {
        match &self.action {
            SignAction::GrantConsent {
                department,
                attributes,
                purpose,
                expires_ms,
            } => format!(
                "let department {department} read {} for {purpose:?} until {} (asked by {}'s website)",
                attributes.join(", "),
                crate::pages::format_time(*expires_ms),
                self.relying_party
            ),
            SignAction::RevokeConsent { consent_id } => format!(
                "revoke consent {} (asked by {}'s website)",
                hex::encode(consent_id),
                self.relying_party
            ),
            SignAction::ActOnCase {
                case_id,
                step,
                verb,
                reason,
            } => {
                let because = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" because {reason:?}")
                };
                format!(
                    "{} step {step} of case {}{because} (asked by {}'s website)",
                    verb.as_str(),
                    hex::encode(case_id),
                    self.relying_party
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> SignRequest {
        SignRequest {
            chain: "govchain-devnet".into(),
            relying_party: "tax".into(),
            request: "00112233445566778899aabbccddeeff".into(),
            nonce: 7,
            action: SignAction::GrantConsent {
                department: "health".into(),
                attributes: vec!["name".into(), "date_of_birth".into()],
                purpose: "vaccination record".into(),
                expires_ms: 1_800_000_000_000,
            },
            callback: "https://127.0.0.1:8443/sign/callback".into(),
        }
    }

    #[test]
    fn requests_round_trip_through_their_text() {
        let revoke = SignRequest {
            action: SignAction::RevokeConsent {
                consent_id: [9; 32],
            },
            ..grant()
        };
        let act = |verb, reason: &str| SignRequest {
            action: SignAction::ActOnCase {
                case_id: [3; 32],
                step: "health-inspection".into(),
                verb,
                reason: reason.into(),
            },
            ..grant()
        };
        for request in [
            grant(),
            revoke,
            act(CaseVerb::Approve, ""),
            act(CaseVerb::Reject, "kitchen not clean"),
            act(CaseVerb::Return, "add the floor plan"),
        ] {
            let text = request.to_text();
            assert!(text.starts_with(SIGN_PAYLOAD_PREFIX), "{text}");
            assert_eq!(SignRequest::parse(&text), Ok(request.clone()), "{text}");
        }
    }

    #[test]
    fn the_transaction_is_the_one_described() {
        let Some(Body::GrantConsent(consent)) = grant().transaction().body else {
            panic!("not a grant");
        };
        assert_eq!(consent.department, "health");
        assert_eq!(consent.attributes, ["name", "date_of_birth"]);
        assert_eq!(consent.expires_ms, 1_800_000_000_000);
        assert!(
            grant()
                .describe()
                .contains("let department health read name, date_of_birth")
        );
    }

    #[test]
    fn an_officers_decision_is_an_act_on_case() {
        let request = SignRequest {
            action: SignAction::ActOnCase {
                case_id: [3; 32],
                step: "license".into(),
                verb: CaseVerb::Reject,
                reason: "no insurance".into(),
            },
            ..grant()
        };
        let Some(Body::ActOnCase(act)) = request.transaction().body else {
            panic!("not an act on case");
        };
        assert_eq!(act.case_id, vec![3; 32]);
        assert_eq!(act.step_id, "license");
        assert_eq!(act.action, CaseAction::Reject as i32);
        assert_eq!(act.reason, "no insurance");
        assert!(
            request
                .describe()
                .starts_with("reject step license of case 0303")
        );
        let text = request
            .to_text()
            .replace("verb=reject", "verb=override-approve");
        assert!(
            SignRequest::parse(&text)
                .expect_err("verb")
                .0
                .contains("verb")
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_the_reason() {
        let text = grant().to_text();
        for (changed, reason) in [
            (
                text.replace("govchain-sign:v1?", "govchain-login:v1?"),
                "prefix",
            ),
            (
                text.replace("action=grant-consent", "action=transfer"),
                "unknown action",
            ),
            (text.replace("nonce=7", "nonce=x"), "nonce is not a number"),
            (
                text.replace("req=00112233445566778899aabbccddeeff", "req=00"),
                "req",
            ),
            (text.replace("cb=https://", "cb=http://"), "cb"),
            (format!("{text}&nonce=8"), "appears twice"),
            (
                text.replace("purpose=vaccination record", "purpose=a<b"),
                "purpose",
            ),
        ] {
            let err = SignRequest::parse(&changed).expect_err(&changed);
            assert!(err.0.contains(reason), "{changed}: {err}");
        }
    }
}
