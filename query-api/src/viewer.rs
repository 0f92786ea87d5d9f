//! The built-in viewer: `GET /` serves a small web UI embedded in the binary (no separate
//! server, no build step): the dashboard list, any dashboard rendered with live data, the
//! active alerts with silence and acknowledge, service health and a trace view. Its files
//! are under `query-api/viewer/`; charts are drawn by uPlot (MIT, vendored with its licence
//! in `viewer/vendor/`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::extract::ApiPath;

/// Name, content type and contents of every file the viewer serves under `/ui/`.
const FILES: [(&str, &str, &str); 5] = [
    ("app.js", "text/javascript; charset=utf-8", include_str!("../viewer/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../viewer/app.css")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_str!("../viewer/vendor/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_str!("../viewer/vendor/uPlot.min.css")),
    ("uPlot.LICENSE", "text/plain; charset=utf-8", include_str!("../viewer/vendor/uPlot.LICENSE")),
];

const INDEX: &str = include_str!("../viewer/index.html");

fn serve(content_type: &str, body: &'static str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{file}`.
pub async fn file(ApiPath(name): ApiPath<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => ApiError::NotFound(format!("the viewer has no file {name:?}")).into_response(),
    }
}
