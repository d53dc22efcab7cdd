//! QR login in the browser.
//!
//! 1. `GET /login` asks the node for a challenge (`CreateLoginChallenge`
//!    with the portal's callback URL and `account_scope`), shows its QR
//!    code and text, and remembers it for the browser's session.
//! 2. The citizen's device signs the payload and posts the answer to
//!    `POST /login/callback` (`govchain identity login respond`); the portal
//!    passes it to `CompleteLogin`, which checks the signature against the
//!    chain and consumes the challenge.
//! 3. The page learns the outcome from `GET /login/events` (server-sent
//!    events), or, without JavaScript, when the citizen presses Continue;
//!    `POST /login/finish` then replaces the browser's session by a logged
//!    in one.

use axum::Json;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use govchain_proto::identity::v1::{CompleteLoginRequest, CreateLoginChallengeRequest};
use maud::{PreEscaped, html};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

use crate::pages::{ErrorPage, Frame, csrf_field, format_time, layout};
use crate::sessions::{self, Citizen, Officer, Principal, Session, now_ms, same_token};
use crate::waiting::{Wait, Waits};
use crate::{AppState, ClientAddr};

/// Default lifetime of a login page's challenge, and the bounds of `ttl`.
pub const LOGIN_TTL_DEFAULT_SECS: u32 = 120;
pub const LOGIN_TTL_MIN_SECS: u32 = 5;
pub const LOGIN_TTL_MAX_SECS: u32 = 600;
/// How long an officer's session lasts (as a citizen's login session).
pub const OFFICER_SESSION_TTL_MS: u64 = 15 * 60 * 1000;
/// Largest device answer accepted (a payload, a key and a signature).
pub const CALLBACK_BYTES_MAX: usize = 4096;

/// Where a login page's challenge stands.
#[derive(Clone, Debug)]
pub enum LoginState {
    /// No valid answer yet; the last refused answer's reason, if any.
    Waiting { refused: Option<String> },
    /// The device's answer was accepted; the session lasts until the ms.
    Done {
        principal: Principal,
        expires_ms: u64,
    },
}

/// The challenges login pages show, by nonce (hex), each with its
/// payload.
pub type PendingLogins = Waits<String, LoginState>;

/// Takes the session's challenge if its login is done.
fn take_done(logins: &PendingLogins, token: &str) -> Option<(Principal, u64)> {
    logins.take_of_session(token, |wait| match &*wait.state.borrow() {
        LoginState::Done {
            principal,
            expires_ms,
        } => Some((principal.clone(), *expires_ms)),
        LoginState::Waiting { .. } => None,
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Seconds the challenge stays valid (5 to 600; default 120).
    ttl: Option<u32>,
    /// "officer" for an officer's login.
    #[serde(rename = "as")]
    as_: Option<String>,
    /// Attested attributes the site asks the citizen for, comma-separated
    /// (each needs the citizen's consent to this department).
    attributes: Option<String>,
}

/// Attributes one login may ask for (the node's limit).
pub const LOGIN_ATTRIBUTES_MAX: usize = 16;

/// The attribute names of `?attributes=`, checked.
fn requested_attributes(list: Option<&str>) -> Result<Vec<String>, String> {
    let Some(list) = list.filter(|list| !list.is_empty()) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = list.split(',').map(|name| name.trim().to_owned()).collect();
    if names.len() > LOGIN_ATTRIBUTES_MAX {
        return Err(format!(
            "at most {LOGIN_ATTRIBUTES_MAX} attributes per login"
        ));
    }
    if let Some(bad) = names.iter().find(|name| {
        name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }) {
        return Err(format!("{bad:?} is not an attribute name"));
    }
    Ok(names)
}

/// Where a logged-in session starts.
fn home_of(session: &Session) -> Option<&'static str> {
    if session.officer.is_some() {
        Some("/officer")
    } else if session.citizen.is_some() {
        Some("/me")
    } else {
        None
    }
}

/// `GET /login`: a fresh challenge as a QR code.
pub async fn show(
    State(portal): State<AppState>,
    axum::Extension(ClientAddr(client)): axum::Extension<ClientAddr>,
    Query(query): Query<LoginQuery>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    let department = &portal.config.department;
    let refuse = |status, message: &str| ErrorPage::new(status, department, message);
    if let Some(home) = portal.sessions.get(&headers).as_ref().and_then(home_of) {
        return Ok(Redirect::to(home).into_response());
    }
    let officer = match query.as_.as_deref() {
        None => false,
        Some("officer") => true,
        Some(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "as must be \"officer\" or absent",
            ));
        }
    };
    if !portal.sessions.allow_login_attempt(client.ip()) {
        return Err(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many login attempts from your address. Wait a minute and try again.",
        ));
    }
    let attributes = requested_attributes(query.attributes.as_deref())
        .map_err(|reason| refuse(StatusCode::BAD_REQUEST, &reason))?;
    if officer && !attributes.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "an officer's login asks for no attributes",
        ));
    }
    let ttl = query.ttl.unwrap_or(LOGIN_TTL_DEFAULT_SECS);
    if !(LOGIN_TTL_MIN_SECS..=LOGIN_TTL_MAX_SECS).contains(&ttl) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("ttl must be {LOGIN_TTL_MIN_SECS} to {LOGIN_TTL_MAX_SECS} seconds"),
        ));
    }
    let (session, new) = portal
        .sessions
        .get_or_start(&headers)
        .map_err(|full| refuse(StatusCode::SERVICE_UNAVAILABLE, &full.to_string()))?;
    let challenge = portal
        .node
        .identity()
        .create_login_challenge(CreateLoginChallengeRequest {
            requested_attributes: attributes.clone(),
            ttl_seconds: ttl,
            website: website_label(&portal.config.public_url),
            callback_url: format!("{}login/callback", portal.config.public_url),
            account_scope: !officer,
            officer,
        })
        .await
        .map_err(|status| ErrorPage::from_status(department, &status))?
        .into_inner();
    let (state, _) = watch::channel(LoginState::Waiting { refused: None });
    let pending = Wait {
        session_token: session.token.clone(),
        expires_ms: challenge.expires_ms,
        state,
        expected: challenge.qr_payload.clone(),
    };
    if !portal.logins.insert(hex::encode(&challenge.nonce), pending) {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many logins are in progress. Try again in a minute.",
        ));
    }
    let page = login_page(
        &portal,
        &session,
        &challenge.qr_svg,
        &challenge.qr_payload,
        challenge.expires_ms,
        officer,
        &attributes,
    );
    let mut response = Html(page.into_string()).into_response();
    if new {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, sessions::set_cookie(&session));
    }
    Ok(response)
}

/// The website label in a challenge: the host and port of the portal.
fn website_label(public_url: &str) -> String {
    public_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-:".contains(*c))
        .take(128)
        .collect()
}

fn login_page(
    portal: &crate::Portal,
    session: &Session,
    qr_svg: &str,
    payload: &str,
    expires_ms: u64,
    officer: bool,
    attributes: &[String],
) -> maud::Markup {
    // The node draws the QR code; the XML declaration has no place inside
    // HTML.
    let svg = qr_svg.find("<svg").map_or(qr_svg, |start| &qr_svg[start..]);
    let frame = Frame {
        department: &portal.config.department,
        session: Some(session),
    };
    let (title, asks) = if officer {
        (
            "Log in as an officer",
            "and that it logs you in as one of its officers, then approve.",
        )
    } else {
        (
            "Log in with your digital identity",
            "and for access to your own record, then approve.",
        )
    };
    layout(
        &frame,
        title,
        html! {
            div class="login" data-login-wait="/login/events" {
                div class="qr" role="img" aria-label="QR code of the login challenge" {
                    (PreEscaped(svg))
                }
                div {
                    ol class="steps" {
                        li { "Open your govchain identity app and scan the QR code." }
                        li { "Check that it asks for department " strong { (portal.config.department) } " " (asks) }
                        @if !attributes.is_empty() {
                            li { "This site also asks for your attested " strong { (attributes.join(", ")) } ": your device sends it only if you gave department " (portal.config.department) " a consent for it." }
                        }
                        li { "This page continues by itself once your device has answered." }
                    }
                    p { "The code expires at " time id="login-expires" data-expires-ms=(expires_ms) { (format_time(expires_ms)) } "." }
                    details {
                        summary { "Cannot scan? Use the login text" }
                        p { "Give this text to your device's " code { "govchain identity login respond" } " command:" }
                        pre { code id="login-payload" { (payload) } }
                    }
                    p id="login-status" class="status" role="status" aria-live="polite" { "Waiting for your device…" }
                    form id="login-finish" method="post" action="/login/finish" {
                        (csrf_field(Some(session)))
                        button type="submit" class="button" { "Continue" }
                    }
                    p { a href=(if officer { "/login?as=officer" } else { "/login" }) { "Show a new code" } }
                }
            }
        },
    )
}

/// `GET /login/events`: `done` when the device's answer is accepted,
/// `refused` (with the reason) for an answer the node refused, `expired`
/// when the challenge expires, and `waiting` now and then.
pub async fn events(
    State(portal): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<crate::waiting::EventStream>, StatusCode> {
    crate::waiting::stream_of_session(&portal.logins, &portal.sessions, &headers, |state| {
        match state {
            LoginState::Done { .. } => Ok(Event::default().event("done").data("logged in")),
            LoginState::Waiting { refused } => Err(refused.clone()),
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Checks the form's CSRF token against the session's.
pub fn check_csrf(
    department: &str,
    session: Option<&Session>,
    form: &CsrfForm,
) -> Result<Session, ErrorPage> {
    match session {
        Some(session) if same_token(&session.csrf, &form.csrf) => Ok(session.clone()),
        Some(_) => Err(ErrorPage::new(
            StatusCode::FORBIDDEN,
            department,
            "The form's security token is missing or wrong (CSRF). Go back, reload the page and try again.",
        )),
        None => Err(ErrorPage::new(
            StatusCode::FORBIDDEN,
            department,
            "Your session has ended. Go back, reload the page and try again.",
        )),
    }
}

/// `POST /login/finish`: logs the browser in if its challenge was answered.
pub async fn finish(
    State(portal): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ErrorPage> {
    let department = &portal.config.department;
    let session = check_csrf(department, portal.sessions.get(&headers).as_ref(), &form)?;
    let Some((principal, expires_ms)) = take_done(&portal.logins, &session.token) else {
        let (waiting, expired) = match portal.logins.of_session(&session.token) {
            Some((_, expires_ms)) => (true, expires_ms <= now_ms()),
            None => (false, true),
        };
        let message = if waiting && !expired {
            "Your device has not answered yet. Scan the code with your app, then continue."
        } else {
            "The login code expired. Show a new code and scan it."
        };
        return Err(ErrorPage::new(StatusCode::CONFLICT, department, message));
    };
    let did = match &principal {
        Principal::Citizen(citizen) => citizen.did.clone(),
        Principal::Officer(officer) => officer.did.clone(),
    };
    let session = portal
        .sessions
        .log_in(&session.token, principal, expires_ms)
        .map_err(|full| {
            ErrorPage::new(
                StatusCode::SERVICE_UNAVAILABLE,
                department,
                full.to_string(),
            )
        })?;
    info!(did = %did, "portal login");
    let mut response = Redirect::to(home_of(&session).unwrap_or("/")).into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions::set_cookie(&session));
    Ok(response)
}

/// `POST /logout`.
pub async fn logout(
    State(portal): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ErrorPage> {
    let session = check_csrf(
        &portal.config.department,
        portal.sessions.get(&headers).as_ref(),
        &form,
    )?;
    portal.sessions.end(&session.token);
    let mut response = Redirect::to("/").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions::clear_cookie());
    Ok(response)
}

/// The device's answer to a login challenge (`govchain identity login
/// respond` posts it as JSON).
#[derive(Debug, Deserialize, Serialize)]
pub struct DeviceAnswer {
    /// The login payload, exactly as shown.
    pub payload: String,
    /// The citizen's Ed25519 public key, 64 hex characters.
    pub public_key: String,
    /// The signature over "govchain/login/v1\n" || payload, in hex.
    pub signature: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CallbackReply {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub did: String,
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    let body = CallbackReply {
        ok: status.is_success(),
        message: message.into(),
        did: String::new(),
    };
    (status, Json(body)).into_response()
}

/// `POST /login/callback`: the device's answer. The answer is its own
/// proof (a signature over the challenge), so it needs no session or CSRF
/// token; its address is rate-limited.
pub async fn callback(
    State(portal): State<AppState>,
    axum::Extension(ClientAddr(client)): axum::Extension<ClientAddr>,
    body: axum::body::Bytes,
) -> Response {
    if !portal.sessions.allow_login_attempt(client.ip()) {
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            "too many login attempts from this address; wait a minute",
        );
    }
    if body.len() > CALLBACK_BYTES_MAX {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the answer is over {CALLBACK_BYTES_MAX} bytes"),
        );
    }
    let answer: DeviceAnswer = match serde_json::from_slice(&body) {
        Ok(answer) => answer,
        Err(err) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("the answer is not JSON with payload, public_key and signature: {err}"),
            );
        }
    };
    let (Ok(public_key), Ok(signature)) = (
        hex::decode(&answer.public_key),
        hex::decode(&answer.signature),
    ) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "public_key and signature must be hex",
        );
    };
    let Some(nonce) = payload_nonce(&answer.payload) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "the payload is not a govchain login payload",
        );
    };
    let shown = portal
        .logins
        .find(nonce, |wait| {
            (wait.expected == answer.payload).then(|| wait.state.clone())
        })
        .flatten();
    let Some(state) = shown else {
        return reply(
            StatusCode::NOT_FOUND,
            "this portal shows no such login code: it is another site's, or it expired and was replaced",
        );
    };
    let completed = portal
        .node
        .identity()
        .complete_login(CompleteLoginRequest {
            qr_payload: answer.payload.clone(),
            public_key: public_key.clone(),
            signature,
        })
        .await;
    match completed {
        Ok(response) => {
            let response = response.into_inner();
            let (principal, expires_ms) = if response.officer_role.is_empty() {
                let citizen = Citizen {
                    did: response.did.clone(),
                    public_key,
                    login_session: response.session,
                    claims: response
                        .claims
                        .into_iter()
                        .map(|claim| (claim.name, claim.attested_by))
                        .collect(),
                };
                (Principal::Citizen(citizen), response.session_expires_ms)
            } else {
                let officer = Officer {
                    did: response.did.clone(),
                    public_key,
                    role: response.officer_role,
                };
                (
                    Principal::Officer(officer),
                    now_ms() + OFFICER_SESSION_TTL_MS,
                )
            };
            state.send_replace(LoginState::Done {
                principal,
                expires_ms,
            });
            let body = CallbackReply {
                ok: true,
                message: "logged in: the browser continues by itself".into(),
                did: response.did,
            };
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(status) => {
            let message = status.message().to_owned();
            if !matches!(&*state.borrow(), LoginState::Done { .. }) {
                state.send_replace(LoginState::Waiting {
                    refused: Some(message.clone()),
                });
            }
            let http = match status.code() {
                tonic::Code::FailedPrecondition => StatusCode::GONE,
                tonic::Code::AlreadyExists => StatusCode::CONFLICT,
                tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            reply(http, message)
        }
    }
}

/// The nonce field of a login payload.
fn payload_nonce(payload: &str) -> Option<&str> {
    payload
        .strip_prefix("govchain-login:v1?")?
        .split('&')
        .find_map(|pair| pair.strip_prefix("nonce="))
        .filter(|nonce| nonce.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_is_read_from_the_payload() {
        let payload = "govchain-login:v1?chain=c&rp=tax&site=s&nonce=000102030405060708090a0b0c0d0e0f&attrs=&exp=1";
        assert_eq!(
            payload_nonce(payload),
            Some("000102030405060708090a0b0c0d0e0f")
        );
        assert_eq!(payload_nonce("govchain-login:v1?nonce=00"), None);
        assert_eq!(
            payload_nonce("other:v1?nonce=000102030405060708090a0b0c0d0e0f"),
            None
        );
    }

    #[test]
    fn requested_attributes_are_checked_names() {
        assert_eq!(requested_attributes(None), Ok(Vec::new()));
        assert_eq!(requested_attributes(Some("")), Ok(Vec::new()));
        assert_eq!(
            requested_attributes(Some("name,date_of_birth")),
            Ok(vec!["name".to_owned(), "date_of_birth".to_owned()])
        );
        assert!(requested_attributes(Some("Name")).is_err());
        assert!(requested_attributes(Some("name,,photo")).is_err());
        let many = vec!["a"; LOGIN_ATTRIBUTES_MAX + 1].join(",");
        assert!(requested_attributes(Some(&many)).is_err());
    }

    #[test]
    fn the_website_label_is_host_and_port() {
        assert_eq!(website_label("https://127.0.0.1:8443/"), "127.0.0.1:8443");
        assert_eq!(
            website_label("https://portal.tax.gov.example/"),
            "portal.tax.gov.example"
        );
    }
}
