//! `GET /me`: a citizen's own record, read with the login session the
//! citizen gave this department: identity, attributes and who attested
//! them, consents, and the access log (every read of the citizen's data
//! and every refused attempt).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use govchain_proto::identity::v1::{AttributeState, GetIdentityRequest, ListAccessesRequest};
use govchain_proto::types::v1::{AccessRecord, ConsentRecord};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ErrorPage, Frame, csrf_field, format_time, layout, short_hex};
use crate::AppState;
use crate::sessions::{Session, now_ms};
use crate::signing::CONSENT_DAYS;

/// Accesses shown per page of the log.
pub const ACCESSES_PER_PAGE: u32 = 50;

#[derive(Debug, Deserialize)]
pub struct MeQuery {
    /// Where the access log's page starts (a `next_page_token`).
    #[serde(default)]
    accesses: String,
}

pub async fn show(
    State(portal): State<AppState>,
    Query(query): Query<MeQuery>,
    headers: HeaderMap,
) -> Result<Response, ErrorPage> {
    let department = &portal.config.department;
    let Some(session) = portal.sessions.get(&headers) else {
        return Ok(Redirect::to("/login").into_response());
    };
    let Some(citizen) = session.citizen.as_ref() else {
        return Ok(Redirect::to("/login").into_response());
    };
    let failed = |status: tonic::Status| ErrorPage::from_status(department, &status);
    let mut identity = portal.node.identity();
    let record = identity
        .get_identity(GetIdentityRequest {
            public_key: citizen.public_key.clone(),
            login_session: citizen.login_session.clone(),
            ..GetIdentityRequest::default()
        })
        .await
        .map_err(failed)?
        .into_inner();
    let accesses = identity
        .list_accesses(ListAccessesRequest {
            public_key: citizen.public_key.clone(),
            page_size: ACCESSES_PER_PAGE,
            page_token: query.accesses.clone(),
            login_session: citizen.login_session.clone(),
            ..ListAccessesRequest::default()
        })
        .await
        .map_err(failed)?
        .into_inner();
    let frame = Frame {
        department,
        session: Some(&session),
    };
    let created = record.identity.as_ref().map_or(0, |i| i.created_ms);
    let now = now_ms();
    let page = layout(
        &frame,
        "My record",
        html! {
            dl class="summary" {
                dt { "Your identity" } dd { code id="citizen-did" { (citizen.did) } }
                dt { "Created" } dd { (format_time(created)) }
                dt { "Logged in until" } dd { (format_time(session.expires_ms)) }
            }
            @if !citizen.claims.is_empty() {
                h2 id="login-claims-heading" { "What this site received at login" }
                ul id="login-claims" {
                    @for (name, attested_by) in &citizen.claims {
                        li { strong { (name) } ", attested by " (attested_by.join(", ")) }
                    }
                }
            }
            h2 id="attributes" { "My attributes" }
            (attributes_table(&record.attributes, now))
            h2 id="consents" { "My consents" }
            p { "A consent lets a department read the attributes it names, for one purpose, until it expires or you revoke it." }
            (consents_table(&record.consents, now, &session))
            (consent_form(&portal.config.validators, &record.attributes, &session))
            h2 id="access-log" { "Who used my data" }
            p { "Every read of your data by a department is recorded on the chain, and so is every refused attempt." }
            (access_table(&accesses.accesses))
            @if !accesses.next_page_token.is_empty() {
                p { a href={ "/me?accesses=" (accesses.next_page_token) "#access-log" } { "Later accesses" } }
            }
        },
    );
    Ok(Html(page.into_string()).into_response())
}

fn attributes_table(attributes: &[AttributeState], now: u64) -> Markup {
    html! {
        @if attributes.is_empty() {
            p { "You have declared no attributes." }
        } @else {
            table id="attributes-table" {
                caption class="visually-hidden" { "Your attributes and their attestations" }
                thead { tr { th scope="col" { "Attribute" } th scope="col" { "Declared" } th scope="col" { "Attested by" } th scope="col" { "Status" } } }
                tbody {
                    @for state in attributes {
                        @let name = state.attribute.as_ref().map_or("", |a| a.name.as_str());
                        @let declared = state.attribute.as_ref().map_or(0, |a| a.declared_ms);
                        @let valid: Vec<&str> = state.attestations.iter()
                            .filter(|a| !a.revoked && (a.expires_ms == 0 || a.expires_ms > now))
                            .map(|a| a.department.as_str()).collect();
                        tr {
                            th scope="row" { (name) }
                            td { (format_time(declared)) }
                            td { @if valid.is_empty() { "–" } @else { (valid.join(", ")) } }
                            td {
                                @if state.attested { span class="tag ok" { "Attested" } }
                                @else { span class="tag" { "Not attested" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The form that asks the device to sign a new consent.
fn consent_form(
    departments: &[String],
    attributes: &[AttributeState],
    session: &Session,
) -> Markup {
    html! {
        @if !attributes.is_empty() {
            details id="give-consent" {
                summary { "Give a department a consent" }
                form method="post" action="/me/consents/new" class="stack" {
                    (csrf_field(Some(session)))
                    div {
                        label for="consent-department" { "Department" }
                        select id="consent-department" name="department" {
                            @for department in departments { option value=(department) { (department) } }
                        }
                    }
                    fieldset {
                        legend { "Attributes it may read" }
                        @for state in attributes {
                            @if let Some(attribute) = &state.attribute {
                                div {
                                    input type="checkbox" id={ "consent-attribute-" (attribute.name) } name="attribute" value=(attribute.name);
                                    " "
                                    label for={ "consent-attribute-" (attribute.name) } { (attribute.name) }
                                }
                            }
                        }
                    }
                    div {
                        label for="consent-purpose" { "Purpose" }
                        input id="consent-purpose" name="purpose" type="text" maxlength="128" required;
                    }
                    div {
                        label for="consent-days" { "Lasts" }
                        select id="consent-days" name="days" {
                            @for days in CONSENT_DAYS { option value=(days) { (days) " days" } }
                        }
                    }
                    button type="submit" class="button" { "Sign on my device" }
                }
            }
        }
    }
}

fn consents_table(consents: &[ConsentRecord], now: u64, session: &Session) -> Markup {
    html! {
        @if consents.is_empty() {
            p { "You have given no consents." }
        } @else {
            table id="consents-table" {
                caption class="visually-hidden" { "Your consents" }
                thead { tr { th scope="col" { "Department" } th scope="col" { "Attributes" } th scope="col" { "Purpose" } th scope="col" { "Until" } th scope="col" { "Status" } th scope="col" { "Consent" } th scope="col" { "Action" } } }
                tbody {
                    @for consent in consents {
                        tr {
                            th scope="row" { (consent.department) }
                            td { (consent.attributes.join(", ")) }
                            td { (consent.purpose) }
                            td { (format_time(consent.expires_ms)) }
                            td {
                                @if consent.revoked { span class="tag bad" { "Revoked" } }
                                @else if consent.expires_ms <= now { span class="tag" { "Expired" } }
                                @else { span class="tag ok" { "Active" } }
                            }
                            td { (short_hex(&consent.consent_id)) }
                            td {
                                @if !consent.revoked && consent.expires_ms > now {
                                    form method="post" action="/me/consents/revoke" class="inline" {
                                        (csrf_field(Some(session)))
                                        input type="hidden" name="consent" value=(hex::encode(&consent.consent_id));
                                        button type="submit" class="button secondary" aria-label={ "Revoke the consent for " (consent.department) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn access_table(accesses: &[AccessRecord]) -> Markup {
    html! {
        @if accesses.is_empty() {
            p id="access-log-empty" { "No department has read your data." }
        } @else {
            table id="access-table" {
                caption class="visually-hidden" { "Accesses to your data" }
                thead { tr { th scope="col" { "When" } th scope="col" { "Department" } th scope="col" { "Attribute" } th scope="col" { "Purpose" } th scope="col" { "Under consent" } th scope="col" { "Outcome" } } }
                tbody {
                    @for access in accesses {
                        tr class=[access.refused.then_some("refused")] {
                            td { (format_time(access.accessed_ms)) }
                            th scope="row" { (access.department) }
                            td { (access.attribute) }
                            td { (access.purpose) }
                            td { @if access.consent_id.is_empty() { "–" } @else { (short_hex(&access.consent_id)) } }
                            td {
                                @if access.refused {
                                    span class="tag bad" { "Refused" } " " (access.refusal)
                                } @else {
                                    span class="tag ok" { "Read" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
