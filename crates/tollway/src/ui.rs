//! The admin UI: one page and its script and style sheet, compiled into the binary and served at
//! `/ui` (`server.admin_ui`, on by default). The files hold no data: the page asks for the master
//! key, keeps it in the tab's session storage, and reads and changes everything through the admin
//! API (`/admin/...`), which checks the key on every call. The headers keep the page to itself: a
//! content security policy allowing only its own script, style and API, no framing, no referrer.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(state: &AppState, content_type: &'static str, body: &'static str) -> Response {
    if !state.runtime().config.server.admin_ui {
        return crate::api::not_found_in(
            tollway_core::ApiFamily::OpenAi,
            "The admin UI is off (`server.admin_ui: false`).",
        );
    }
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // the files change with the binary: always ask
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /ui`: the page.
pub async fn index(State(state): State<AppState>) -> Response {
    file(&state, "text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`.
pub async fn script(State(state): State<AppState>) -> Response {
    file(&state, "text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`.
pub async fn style(State(state): State<AppState>) -> Response {
    file(&state, "text/css; charset=utf-8", STYLE)
}
