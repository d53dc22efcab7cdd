//! The portal's pages: plain HTML first (every page reads without
//! JavaScript), one layout, and a clear page for every error.

pub mod assets;
pub mod citizen;
pub mod explorer;
pub mod home;
pub mod officer;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::sessions::Session;

/// Everything a page's frame needs to know about the visitor.
pub struct Frame<'a> {
    pub department: &'a str,
    pub session: Option<&'a Session>,
}

/// The frame of every page: a skip link, the service header with its
/// navigation, the main content and the footer.
pub fn layout(frame: &Frame<'_>, title: &str, content: Markup) -> Markup {
    let citizen = frame.session.and_then(|s| s.citizen.as_ref()).is_some();
    let officer = frame.session.and_then(|s| s.officer.as_ref()).is_some();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – govchain " (frame.department) }
                link rel="stylesheet" href="/assets/portal.css";
                script src="/assets/portal.js" defer {}
            }
            body {
                a class="skip-link" href="#main" { "Skip to main content" }
                header class="header" {
                    div class="width" {
                        a class="service" href="/" { "govchain" }
                        span class="department" { "Department: " (frame.department) }
                        nav aria-label="Main" {
                            ul {
                                li { a href="/explorer" { "Explorer" } }
                                @if citizen || officer {
                                    @if citizen { li { a href="/me" { "My record" } } }
                                    @if officer { li { a href="/officer" { "Case inbox" } } }
                                    li {
                                        form method="post" action="/logout" class="inline" {
                                            (csrf_field(frame.session))
                                            button type="submit" class="link" { "Log out" }
                                        }
                                    }
                                } @else {
                                    li { a href="/login" { "Log in" } }
                                    li { a href="/login?as=officer" { "Officers" } }
                                }
                            }
                        }
                    }
                }
                main id="main" class="width" tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
                footer class="footer width" {
                    p { "Served by department " (frame.department) "'s node. No cookies but the session cookie; no tracking." }
                }
            }
        }
    }
}

/// The hidden field every form posts back.
pub fn csrf_field(session: Option<&Session>) -> Markup {
    html! {
        @if let Some(session) = session {
            input type="hidden" name="csrf" value=(session.csrf);
        }
    }
}

/// A page that explains what went wrong, with its HTTP status.
pub struct ErrorPage {
    pub status: StatusCode,
    pub department: String,
    pub message: String,
}

impl ErrorPage {
    pub fn new(status: StatusCode, department: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            department: department.to_owned(),
            message: message.into(),
        }
    }

    /// The page for a failed call to the node, with the node's message.
    pub fn from_status(department: &str, status: &tonic::Status) -> Self {
        let http = match status.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::new(http, department, status.message())
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::NOT_FOUND => "Page not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            status if status.is_client_error() => "There is a problem",
            _ => "Sorry, there is a problem with the service",
        };
        let frame = Frame {
            department: &self.department,
            session: None,
        };
        let body = layout(
            &frame,
            title,
            html! {
                p class="error-message" role="alert" { (self.message) }
                p { a href="/" { "Go to the start page" } }
            },
        );
        (self.status, Html(body.into_string())).into_response()
    }
}

pub async fn not_found(
    axum::extract::State(portal): axum::extract::State<crate::AppState>,
) -> ErrorPage {
    ErrorPage::new(
        StatusCode::NOT_FOUND,
        &portal.config.department,
        "If you typed the web address, check it is correct.",
    )
}

/// Unix ms as UTC text, e.g. "2026-12-04 17:22:31 UTC".
pub fn format_time(ms: u64) -> String {
    if ms == 0 {
        return "–".into();
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replacen('T', " ", 1)
        .replacen('Z', " UTC", 1)
}

/// A hash or id in hex, shortened for tables (the full value in `title`).
pub fn short_hex(bytes: &[u8]) -> Markup {
    let full = hex::encode(bytes);
    let short = if full.len() > 16 {
        format!("{}…", &full[..16])
    } else {
        full.clone()
    };
    html! { code title=(full) { (short) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(format_time(1), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_796_405_751_000), "2026-12-04 17:35:51 UTC");
        // A leap day.
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(0), "–");
    }
}
