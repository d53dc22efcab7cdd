//! The start page: what the portal offers, and the chain at a glance.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use govchain_proto::node::v1::GetStatusRequest;
use maud::html;

use super::{ErrorPage, Frame, layout};
use crate::AppState;

pub async fn show(
    State(portal): State<AppState>,
    headers: HeaderMap,
) -> Result<Html<String>, ErrorPage> {
    let department = &portal.config.department;
    let status = portal
        .node
        .node()
        .get_status(GetStatusRequest {})
        .await
        .map_err(|status| ErrorPage::from_status(department, &status))?
        .into_inner();
    let session = portal.sessions.get(&headers);
    let frame = Frame {
        department,
        session: session.as_ref(),
    };
    let logged_in = session.as_ref().is_some_and(|s| s.citizen.is_some());
    Ok(Html(
        layout(
            &frame,
            "Government data you can trust",
            html! {
                p class="lead" {
                    "Departments share records on govchain. Every use of your data needs your consent, and every use is recorded where you can see it."
                }
                div class="cards" {
                    section class="card" {
                        h2 { "Your record" }
                        p { "See your identity, the attributes departments have attested, your consents, and who used your data and why." }
                        @if logged_in {
                            a class="button" href="/me" { "Open my record" }
                        } @else {
                            a class="button" href="/login" { "Log in with your digital identity" }
                        }
                    }
                    section class="card" {
                        h2 { "The chain" }
                        p { "Chain " code { (status.chain_id) } " is at block " strong { (status.height) } ", view " (status.view) ", with " (status.validator_count) " validators." }
                        a class="button secondary" href="/explorer" { "Explore the chain" }
                    }
                }
            },
        )
        .into_string(),
    ))
}
