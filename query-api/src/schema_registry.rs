//! The Confluent Schema Registry REST API for the built-in schemas, so that standard
//! Confluent Avro serializers pointed at the query API's URL learn the schema ids.
//! Read side: `GET /subjects`, `GET /subjects/{s}/versions[/{v|latest}]`,
//! `GET /schemas/ids/{id}[/schema]`. Lookup and (idempotent) registration of a built-in
//! schema (any version): `POST /subjects/{s}` and `POST /subjects/{s}/versions` answer with
//! its id and version;
//! any other schema is refused with 409, as a registry with compatibility checks would.

use crate::extract::ApiPath;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use callscope_schemas::avro::{RegisteredSchema, SchemaRegistry};
use serde::Deserialize;
use serde_json::{Value, json};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

/// Confluent-style error (`error_code`, `message`) plus callscope's `error` field.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    reply(status, json!({ "error_code": code, "message": message, "error": message }))
}

fn compact(registered: &RegisteredSchema) -> String {
    serde_json::from_str::<Value>(registered.text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| registered.text.to_string())
}

fn subject_not_found(subject: &str) -> Response {
    error(StatusCode::NOT_FOUND, 40401, &format!("Subject '{subject}' not found."))
}

fn version_body(registered: &RegisteredSchema) -> Value {
    json!({ "subject": registered.subject, "version": registered.version, "id": registered.id, "schemaType": "AVRO", "schema": compact(registered) })
}

pub async fn subjects() -> Response {
    let mut subjects: Vec<&str> = Vec::new();
    for s in SchemaRegistry::builtin().all() {
        if !subjects.contains(&s.subject) {
            subjects.push(s.subject);
        }
    }
    reply(StatusCode::OK, json!(subjects))
}

pub async fn versions(ApiPath(subject): ApiPath<String>) -> Response {
    let versions: Vec<i32> = SchemaRegistry::builtin().versions(&subject).iter().map(|s| s.version).collect();
    if versions.is_empty() {
        return subject_not_found(&subject);
    }
    reply(StatusCode::OK, json!(versions))
}

pub async fn subject_version(ApiPath((subject, version)): ApiPath<(String, String)>) -> Response {
    let registry = SchemaRegistry::builtin();
    let Some(latest) = registry.by_subject(&subject) else { return subject_not_found(&subject) };
    let found = match version.as_str() {
        "latest" | "-1" => Some(latest),
        other => {
            other.parse::<i32>().ok().and_then(|v| registry.versions(&subject).into_iter().find(|s| s.version == v))
        }
    };
    match found {
        Some(registered) => reply(StatusCode::OK, version_body(registered)),
        None => error(StatusCode::NOT_FOUND, 40402, &format!("Version {version} not found.")),
    }
}

pub async fn schema_by_id(ApiPath(id): ApiPath<String>) -> Response {
    match id.parse::<i32>().ok().and_then(|id| SchemaRegistry::builtin().by_id(id)) {
        Some(registered) => reply(StatusCode::OK, json!({ "schema": compact(registered), "schemaType": "AVRO" })),
        None => error(StatusCode::NOT_FOUND, 40403, &format!("Schema {id} not found")),
    }
}

pub async fn raw_schema_by_id(ApiPath(id): ApiPath<String>) -> Response {
    match id.parse::<i32>().ok().and_then(|id| SchemaRegistry::builtin().by_id(id)) {
        Some(registered) => reply(StatusCode::OK, serde_json::from_str(registered.text).unwrap_or(Value::Null)),
        None => error(StatusCode::NOT_FOUND, 40403, &format!("Schema {id} not found")),
    }
}

#[derive(Debug, Deserialize)]
pub struct SchemaBody {
    schema: String,
}

fn lookup(subject: &str, body: &[u8]) -> Result<&'static RegisteredSchema, Response> {
    let registry = SchemaRegistry::builtin();
    if registry.by_subject(subject).is_none() {
        return Err(subject_not_found(subject));
    }
    let body: SchemaBody = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, &format!("Invalid schema request: {e}")))?;
    registry.lookup(subject, &body.schema).ok_or_else(|| {
        error(
            StatusCode::CONFLICT,
            409,
            &format!("callscope serves fixed built-in schemas; this schema is not the one of '{subject}' (GET /subjects/{subject}/versions/latest shows it)"),
        )
    })
}

/// `POST /subjects/{subject}`: is this schema registered under the subject?
pub async fn lookup_schema(ApiPath(subject): ApiPath<String>, body: axum::body::Bytes) -> Response {
    match lookup(&subject, &body) {
        Ok(registered) => reply(StatusCode::OK, version_body(registered)),
        Err(response) => response,
    }
}

/// `POST /subjects/{subject}/versions`: registering the built-in schema again is idempotent.
pub async fn register_schema(ApiPath(subject): ApiPath<String>, body: axum::body::Bytes) -> Response {
    match lookup(&subject, &body) {
        Ok(registered) => reply(StatusCode::OK, version_body(registered)),
        Err(response) => response,
    }
}
