//! Vertex AI's publisher-model routes, `POST /{v1,v1beta1}/projects/{project}/locations/
//! {location}/publishers/{publisher}/models/{model}:{method}`: Gemini (`publishers/google`,
//! `generateContent` / `streamGenerateContent`, [`crate::gemini`]) and Claude
//! (`publishers/anthropic`, `rawPredict` / `streamRawPredict` and `count-tokens:rawPredict`,
//! [`crate::anthropic`]), all behind an OAuth access token from `POST /token` ([`crate::gcp`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri, Version};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use crate::anthropic::{self, OnVertex};
use crate::gemini::{self, Api, GoogleError};
use crate::knobs::base_model;
use crate::{gcp, sigv4, Route, Shared};

pub async fn predict(
    State(s): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let segments: Vec<&str> = path.split('/').collect();
    let decode = |i: usize| {
        segments
            .get(i)
            .map(|x| String::from_utf8_lossy(&sigv4::percent_decode(x)).into_owned())
            .unwrap_or_default()
    };
    // "", v1, projects, {project}, locations, {location}, publishers, {publisher}, models, {model}
    let (project, location, publisher) = (decode(3), decode(5), decode(7));
    let Some((model, method)) = gemini::model_and_method(path) else {
        return gemini::method_not_found();
    };
    let route = match (publisher.as_str(), method.as_str()) {
        ("google", "generateContent") => Route::VertexGenerateContent,
        ("google", "streamGenerateContent") => Route::VertexStreamGenerateContent,
        ("google", "predict") => Route::VertexPredict,
        ("anthropic", "rawPredict") if base_model(&model) == "count-tokens" => {
            Route::VertexCountTokens
        }
        ("anthropic", "rawPredict") => Route::VertexRawPredict,
        ("anthropic", "streamRawPredict") => Route::VertexStreamRawPredict,
        _ => return gemini::method_not_found(),
    };
    let auth = gcp::bearer(&s, &headers);
    let auth_json = match &auth {
        Ok(token) => json!({"scheme": "oauth2", "token": token}),
        Err(why) => json!({"scheme": "rejected", "error": "UNAUTHENTICATED", "reason": why}),
    };
    let alt = crate::query_param(&uri, "alt");
    let detail = json!({
        "model_id": model,
        "project": project,
        "location": location,
        "publisher": publisher,
        "method": method,
        "alt": alt,
        "auth": auth_json,
    });
    let (flight, seq) = s.begin_with(
        route,
        version,
        &headers,
        &body,
        Some((crate::path_and_query(&uri), detail)),
    );
    if auth.is_err() {
        return GoogleError::unauthenticated().into_response();
    }
    match route {
        Route::VertexPredict => {
            let api = Api::Vertex { project, location };
            gemini::embed_respond(flight, seq, &body, &model, &api).await
        }
        Route::VertexGenerateContent | Route::VertexStreamGenerateContent => {
            let stream = route == Route::VertexStreamGenerateContent;
            let sse = alt.as_deref() == Some("sse");
            let api = Api::Vertex { project, location };
            gemini::respond(flight, seq, &body, &model, stream, sse, &api).await
        }
        Route::VertexCountTokens => {
            let _flight = flight;
            anthropic::count_respond(seq, &body, None).await
        }
        _ => {
            let v = OnVertex {
                model,
                stream_method: route == Route::VertexStreamRawPredict,
            };
            anthropic::respond(flight, seq, &body, &headers, Some(&v)).await
        }
    }
}
