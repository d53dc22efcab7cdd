//! Transactions a page asks a citizen's or officer's device to sign:
//! granting and revoking a consent, an officer's decision on a case step.
//! The portal never holds their keys:
//!
//! 1. a form on the citizen's page (`POST /me/consents/new`, `.../revoke`)
//!    makes a [`SignRequest`] with the citizen's next nonce and shows it
//!    as a QR code;
//! 2. the device builds the transaction from the request, signs it and
//!    posts the envelope to `POST /sign/callback`
//!    (`govchain identity respond`);
//! 3. the portal checks that the envelope is the citizen's and carries
//!    exactly the requested transaction, submits it and waits for its
//!    commit (`SubmitTransactionAndWait`); the page follows
//!    `GET /sign/events` and returns to the citizen's record.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use govchain_proto::node::v1::{GetAccountRequest, SubmitTransactionAndWaitRequest};
use govchain_proto::types::v1::{Transaction, TransactionEnvelope, TransactionOutcome};
use maud::{PreEscaped, html};
use prost::Message as _;
use serde::Serialize;
use tokio::sync::watch;
use tracing::info;

use crate::login::{CsrfForm, check_csrf};
use crate::pages::{ErrorPage, Frame, format_time, layout};
use crate::request::{DeviceSignature, SignAction, SignRequest, valid_purpose};
use crate::sessions::{Citizen, Session, now_ms, random_token};
use crate::waiting::{Wait, Waits};
use crate::{AppState, ClientAddr, Portal};

/// How long a signing request waits for the device.
pub const SIGN_TTL_MS: u64 = 5 * 60 * 1000;
/// Largest device answer: a request and an envelope in hex.
pub const SIGN_CALLBACK_BYTES_MAX: usize = 16 * 1024;
/// Consent lengths a citizen may choose, in days.
pub const CONSENT_DAYS: [u64; 4] = [30, 90, 365, 730];

#[derive(Clone, Debug)]
pub enum SignState {
    Waiting { refused: Option<String> },
    Committed { transaction_id: String },
}

/// What a device's signed answer must match.
#[derive(Clone)]
pub struct Expected {
    /// The key that must sign: the logged-in citizen's or officer's.
    signer: Vec<u8>,
    /// The request's text, as shown.
    text: String,
    request: SignRequest,
}

/// Requests waiting for a device, by request id.
pub type PendingSigns = Waits<Expected, SignState>;

/// The logged-in citizen of the request, or an error page.
pub(crate) fn citizen_of(
    portal: &Portal,
    headers: &HeaderMap,
    form: &CsrfForm,
) -> Result<(Session, Citizen), ErrorPage> {
    let session = check_csrf(
        &portal.config.department,
        portal.sessions.get(headers).as_ref(),
        form,
    )?;
    let citizen = session.citizen.clone().ok_or_else(|| {
        ErrorPage::new(
            StatusCode::UNAUTHORIZED,
            &portal.config.department,
            "Log in first.",
        )
    })?;
    Ok((session, citizen))
}

/// The form fields of a consent form, with repeated `attribute` fields.
fn form_fields(body: &[u8]) -> (CsrfForm, HashMap<String, Vec<String>>) {
    let mut fields: HashMap<String, Vec<String>> = HashMap::new();
    for (key, value) in form_urlencoded::parse(body) {
        fields
            .entry(key.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    let csrf = fields
        .get("csrf")
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default();
    (CsrfForm { csrf }, fields)
}

fn one<'a>(fields: &'a HashMap<String, Vec<String>>, name: &str) -> &'a str {
    fields
        .get(name)
        .and_then(|v| v.first())
        .map_or("", String::as_str)
}

/// `POST /me/consents/new`: department, attribute (repeated), purpose, days.
pub async fn grant_consent(
    State(portal): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ErrorPage> {
    let (form, fields) = form_fields(&body);
    let (session, citizen) = citizen_of(&portal, &headers, &form)?;
    let refuse =
        |message: &str| ErrorPage::new(StatusCode::BAD_REQUEST, &portal.config.department, message);
    let department = one(&fields, "department");
    if !portal
        .config
        .validators
        .iter()
        .any(|name| name == department)
    {
        return Err(refuse("Choose a department of the consortium."));
    }
    let attributes = fields.get("attribute").cloned().unwrap_or_default();
    if attributes.is_empty() {
        return Err(refuse(
            "Choose at least one attribute the department may read.",
        ));
    }
    let purpose = one(&fields, "purpose").trim().to_owned();
    if !valid_purpose(&purpose) {
        return Err(refuse(
            "Describe the purpose in at most 128 letters, digits, spaces and - _ . , characters.",
        ));
    }
    let days: u64 = one(&fields, "days").parse().unwrap_or(0);
    if !CONSENT_DAYS.contains(&days) {
        return Err(refuse("Choose how long the consent lasts."));
    }
    let action = SignAction::GrantConsent {
        department: department.to_owned(),
        attributes,
        purpose,
        expires_ms: now_ms() + days * 86_400_000,
    };
    ask_device(
        &portal,
        &session,
        &citizen.public_key,
        action,
        "Give a consent",
        "/me#consents",
    )
    .await
}

/// `POST /me/consents/revoke`: consent (64 hex).
pub async fn revoke_consent(
    State(portal): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ErrorPage> {
    let (form, fields) = form_fields(&body);
    let (session, citizen) = citizen_of(&portal, &headers, &form)?;
    let consent_id: [u8; 32] = hex::decode(one(&fields, "consent"))
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            ErrorPage::new(
                StatusCode::BAD_REQUEST,
                &portal.config.department,
                "That is not a consent id.",
            )
        })?;
    let action = SignAction::RevokeConsent { consent_id };
    ask_device(
        &portal,
        &session,
        &citizen.public_key,
        action,
        "Revoke a consent",
        "/me#consents",
    )
    .await
}

/// Makes the request with the signer's next nonce and shows it; once it
/// commits, the page goes on to `return_to`.
pub(crate) async fn ask_device(
    portal: &Portal,
    session: &Session,
    signer: &[u8],
    action: SignAction,
    title: &str,
    return_to: &str,
) -> Result<Response, ErrorPage> {
    let department = &portal.config.department;
    let failed = |status: tonic::Status| ErrorPage::from_status(department, &status);
    let mut node = portal.node.node();
    let chain = node
        .get_status(govchain_proto::node::v1::GetStatusRequest {})
        .await
        .map_err(failed)?
        .into_inner()
        .chain_id;
    let account = node
        .get_account(GetAccountRequest {
            public_key: signer.to_vec(),
            prove: false,
        })
        .await
        .map_err(failed)?
        .into_inner();
    let request = SignRequest {
        chain,
        relying_party: department.clone(),
        request: random_token()[..32].to_owned(),
        nonce: account.next_nonce,
        action,
        callback: format!("{}sign/callback", portal.config.public_url),
    };
    let text = request.to_text();
    let svg = qrcode::QrCode::new(text.as_bytes())
        .map_err(|err| {
            ErrorPage::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                department,
                err.to_string(),
            )
        })?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .build();
    let svg = svg
        .find("<svg")
        .map_or(svg.as_str(), |start| &svg[start..])
        .to_owned();
    let expires_ms = now_ms() + SIGN_TTL_MS;
    let description = request.describe();
    let (state, _) = watch::channel(SignState::Waiting { refused: None });
    let id = request.request.clone();
    let pending = Wait {
        session_token: session.token.clone(),
        expires_ms,
        state,
        expected: Expected {
            signer: signer.to_vec(),
            text: text.clone(),
            request,
        },
    };
    if !portal.signs.insert(id, pending) {
        return Err(ErrorPage::new(
            StatusCode::SERVICE_UNAVAILABLE,
            department,
            "Too many requests are waiting for devices. Try again in a minute.",
        ));
    }
    let frame = Frame {
        department,
        session: Some(session),
    };
    let page = layout(
        &frame,
        title,
        html! {
            div class="login" data-sign-wait="/sign/events" {
                div class="qr" role="img" aria-label="QR code of the request to sign" { (PreEscaped(svg)) }
                div {
                    p { "Scan the code with your govchain identity app. It will ask you to " strong { (description) } "." }
                    p { "Your key stays on your device: it signs the request there, and this page continues once the chain has recorded it. The request expires at " (format_time(expires_ms)) "." }
                    details {
                        summary { "Cannot scan? Use the request text" }
                        p { "Give this text to your device's " code { "govchain identity respond" } " command:" }
                        pre { code id="sign-payload" { (text) } }
                    }
                    p id="sign-status" class="status" role="status" aria-live="polite" { "Waiting for your device…" }
                    p { a id="sign-done" href=(return_to) { "Continue" } }
                }
            }
        },
    );
    Ok(Html(page.into_string()).into_response())
}

/// `GET /sign/events`: `done` once the signed transaction committed,
/// `refused` with the reason, `expired`, and `waiting` now and then.
pub async fn events(
    State(portal): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<crate::waiting::EventStream>, StatusCode> {
    crate::waiting::stream_of_session(
        &portal.signs,
        &portal.sessions,
        &headers,
        |state| match state {
            SignState::Committed { transaction_id } => {
                Ok(Event::default().event("done").data(transaction_id.clone()))
            }
            SignState::Waiting { refused } => Err(refused.clone()),
        },
    )
}

#[derive(Debug, Serialize)]
struct SignReply {
    ok: bool,
    message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    transaction_id: String,
}

fn reply(status: StatusCode, message: impl Into<String>, transaction_id: String) -> Response {
    let body = SignReply {
        ok: status.is_success(),
        message: message.into(),
        transaction_id,
    };
    (status, Json(body)).into_response()
}

/// `POST /sign/callback`: the device's signed envelope for a request.
pub async fn callback(
    State(portal): State<AppState>,
    axum::Extension(ClientAddr(client)): axum::Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    if !portal.sessions.allow_login_attempt(client.ip()) {
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts from this address; wait a minute",
            String::new(),
        );
    }
    if body.len() > SIGN_CALLBACK_BYTES_MAX {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the answer is over {SIGN_CALLBACK_BYTES_MAX} bytes"),
            String::new(),
        );
    }
    let answer: DeviceSignature = match serde_json::from_slice(&body) {
        Ok(answer) => answer,
        Err(err) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("the answer is not JSON with payload and envelope: {err}"),
                String::new(),
            );
        }
    };
    let request = match SignRequest::parse(&answer.payload) {
        Ok(request) => request,
        Err(err) => return reply(StatusCode::BAD_REQUEST, err.to_string(), String::new()),
    };
    let now = now_ms();
    let shown = portal
        .signs
        .find(&request.request, |wait| {
            (wait.expected.text == answer.payload).then(|| {
                (
                    wait.expires_ms > now,
                    wait.state.clone(),
                    wait.expected.clone(),
                )
            })
        })
        .flatten();
    let (state, expected) = match shown {
        Some((true, state, expected)) => (state, expected),
        Some((false, ..)) => {
            return reply(
                StatusCode::GONE,
                "the request expired; ask the page for a new one",
                String::new(),
            );
        }
        None => {
            return reply(
                StatusCode::NOT_FOUND,
                "this portal shows no such request: it is another site's, or it was replaced",
                String::new(),
            );
        }
    };
    if matches!(&*state.borrow(), SignState::Committed { .. }) {
        return reply(
            StatusCode::CONFLICT,
            "the request was already signed and recorded",
            String::new(),
        );
    }
    let envelope = match check_envelope(&answer.envelope, &expected.signer, &expected.request) {
        Ok(envelope) => envelope,
        Err(reason) => {
            state.send_replace(SignState::Waiting {
                refused: Some(reason.clone()),
            });
            return reply(StatusCode::BAD_REQUEST, reason, String::new());
        }
    };
    let submitted = portal
        .node
        .node()
        .submit_transaction_and_wait(SubmitTransactionAndWaitRequest {
            envelope: Some(envelope),
        })
        .await;
    let outcome = submitted.map(|r| r.into_inner().transaction.unwrap_or_default());
    match outcome {
        Ok(found)
            if found
                .result
                .as_ref()
                .is_some_and(|r| r.outcome == TransactionOutcome::Success as i32) =>
        {
            let transaction_id = hex::encode(&found.transaction_id);
            info!(transaction_id = %transaction_id, "a citizen's signed request committed");
            state.send_replace(SignState::Committed {
                transaction_id: transaction_id.clone(),
            });
            reply(
                StatusCode::OK,
                "recorded on the chain: the page continues by itself",
                transaction_id,
            )
        }
        Ok(found) => {
            let reason = found
                .result
                .map(|r| r.error)
                .unwrap_or_else(|| "not committed".into());
            let message = format!("the chain refused the transaction: {reason}");
            state.send_replace(SignState::Waiting {
                refused: Some(message.clone()),
            });
            reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                message,
                hex::encode(&found.transaction_id),
            )
        }
        Err(status) => {
            let message = status.message().to_owned();
            state.send_replace(SignState::Waiting {
                refused: Some(message.clone()),
            });
            let http = match status.code() {
                tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
                    StatusCode::CONFLICT
                }
                tonic::Code::InvalidArgument | tonic::Code::Unauthenticated => {
                    StatusCode::BAD_REQUEST
                }
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            reply(http, message, String::new())
        }
    }
}

/// The device's envelope, if it is the citizen's and carries exactly the
/// requested transaction with the requested nonce. The signature itself is
/// the node's to check.
fn check_envelope(
    hex_envelope: &str,
    signer: &[u8],
    request: &SignRequest,
) -> Result<TransactionEnvelope, String> {
    let bytes = hex::decode(hex_envelope).map_err(|_| "envelope is not hex".to_owned())?;
    let envelope = TransactionEnvelope::decode(bytes.as_slice())
        .map_err(|err| format!("envelope does not decode: {err}"))?;
    if envelope.signer != signer {
        return Err("the envelope is signed by another key than the logged-in one's".into());
    }
    if envelope.chain_id != request.chain || envelope.nonce != request.nonce {
        return Err(format!(
            "the envelope is for chain {:?} nonce {}, the request for chain {:?} nonce {}",
            envelope.chain_id, envelope.nonce, request.chain, request.nonce
        ));
    }
    let transaction = Transaction::decode(&envelope.payload[..])
        .map_err(|err| format!("the envelope's transaction does not decode: {err}"))?;
    if transaction != request.transaction() {
        return Err("the envelope's transaction is not the one requested".into());
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::SignAction;

    fn request() -> SignRequest {
        SignRequest {
            chain: "c".into(),
            relying_party: "tax".into(),
            request: "00112233445566778899aabbccddeeff".into(),
            nonce: 3,
            action: SignAction::RevokeConsent {
                consent_id: [4; 32],
            },
            callback: "https://127.0.0.1:1/sign/callback".into(),
        }
    }

    fn envelope(signer: &[u8], nonce: u64, transaction: &Transaction) -> String {
        hex::encode(
            TransactionEnvelope {
                payload: transaction.encode_to_vec().into(),
                signer: signer.to_vec(),
                signature: vec![0; 64],
                chain_id: "c".into(),
                nonce,
            }
            .encode_to_vec(),
        )
    }

    #[test]
    fn only_the_requested_transaction_of_the_citizen_passes() {
        let citizen = [1u8; 32];
        let wanted = request().transaction();
        assert!(check_envelope(&envelope(&citizen, 3, &wanted), &citizen, &request()).is_ok());
        let other_key = check_envelope(&envelope(&[2; 32], 3, &wanted), &citizen, &request());
        assert!(other_key.expect_err("other key").contains("another key"));
        let other_nonce = check_envelope(&envelope(&citizen, 4, &wanted), &citizen, &request());
        assert!(other_nonce.expect_err("nonce").contains("nonce 4"));
        let other = SignRequest {
            action: SignAction::RevokeConsent {
                consent_id: [5; 32],
            },
            ..request()
        }
        .transaction();
        let swapped = check_envelope(&envelope(&citizen, 3, &other), &citizen, &request());
        assert!(
            swapped
                .expect_err("swapped")
                .contains("not the one requested")
        );
        assert!(check_envelope("zz", &citizen, &request()).is_err());
    }
}
