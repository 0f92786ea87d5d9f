//! `POST /monitoring/sql`: read-only SQL over the callscope tables.
//!
//! The guard is DataFusion's own plan check: DDL (`CREATE …`, including
//! `CREATE EXTERNAL TABLE`), DML (`INSERT`, `COPY`) and statements (`SET`, transactions)
//! are refused before anything runs. The session knows no table functions that read files
//! and has URL tables off, so only the registered tables are reachable. Results stop at a
//! row limit (the reply says it truncated) and a query is cancelled at the time limit.

use axum::Json;
use axum::extract::State;
use datafusion::execution::context::SQLOptions;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::json_rows::{column_values, type_name};
use crate::{AppState, SqlLimits};

#[derive(Debug, Deserialize)]
pub struct SqlRequest {
    pub sql: String,
    /// Lower the row limit for this query (never above the server's).
    #[serde(default)]
    pub max_rows: Option<usize>,
}

/// The result of a query as JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SqlResult {
    pub columns: Vec<Value>,
    pub rows: Vec<Vec<Value>>,
    pub row_count: usize,
    pub truncated: bool,
    pub elapsed_ms: u128,
}

/// Options that refuse anything but queries.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// A query error, classified by cause ([`ApiError`]'s `From`); the asker's mistakes name
/// the `sql` field.
fn sql_error(e: datafusion::error::DataFusionError) -> ApiError {
    match ApiError::from(e) {
        ApiError::BadRequest { message, .. } => ApiError::bad_field("sql", message),
        other => other,
    }
}

/// Runs one read-only query with limits.
pub async fn run_query(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    limits: SqlLimits,
) -> ApiResult<SqlResult> {
    let started = std::time::Instant::now();
    let work = async {
        let df = ctx.sql_with_options(sql, read_only()).await.map_err(sql_error)?;
        let schema = df.schema().as_arrow().clone();
        let mut stream = df.execute_stream().await.map_err(sql_error)?;
        let columns: Vec<Value> =
            schema.fields().iter().map(|f| json!({ "name": f.name(), "type": type_name(f.data_type()) })).collect();
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(sql_error)?;
            let values: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
            for row in 0..batch.num_rows() {
                if rows.len() >= limits.max_rows {
                    truncated = true;
                    break;
                }
                rows.push(values.iter().map(|c| c[row].clone()).collect());
            }
            if truncated {
                break;
            }
        }
        Ok::<_, ApiError>((columns, rows, truncated))
    };
    let (columns, rows, truncated) =
        tokio::time::timeout(limits.timeout, work).await.map_err(|_| ApiError::Timeout(limits.timeout))??;
    Ok(SqlResult { columns, row_count: rows.len(), rows, truncated, elapsed_ms: started.elapsed().as_millis() })
}

pub async fn post_sql(State(state): State<AppState>, body: axum::body::Bytes) -> ApiResult<Json<SqlResult>> {
    let request: SqlRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body must be {{\"sql\": \"...\"}}: {e}")))?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::bad_field("sql", "empty query"));
    }
    let mut limits = state.sql_limits;
    if let Some(n) = request.max_rows {
        limits.max_rows = limits.max_rows.min(n);
    }
    Ok(Json(run_query(&state.engine.session(), &request.sql, limits).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ctx() -> datafusion::prelude::SessionContext {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            .await
            .expect("create")
            .collect()
            .await
            .expect("run");
        ctx
    }

    #[tokio::test]
    async fn queries_run_and_rows_are_limited() {
        let ctx = ctx().await;
        let r = run_query(&ctx, "SELECT column1 AS n FROM t ORDER BY n", SqlLimits::default()).await.expect("query");
        assert_eq!(r.row_count, 3);
        assert_eq!(r.columns[0]["name"], "n");
        assert_eq!(r.rows[2][0], json!(3));
        let r =
            run_query(&ctx, "SELECT * FROM t", SqlLimits { max_rows: 2, ..Default::default() }).await.expect("query");
        assert_eq!(r.row_count, 2);
        assert!(r.truncated);
    }

    #[tokio::test]
    async fn anything_but_queries_is_refused() {
        let ctx = ctx().await;
        // Each refusal names the `sql` field and says why (the kind of statement refused).
        for (sql, reason) in [
            ("CREATE TABLE x AS VALUES (1)", "DDL not supported"),
            ("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'", "DDL not supported"),
            ("INSERT INTO t VALUES (4, 'd')", "DML not supported"),
            ("COPY t TO '/tmp/callscope-copy-test.parquet'", "DML not supported"),
            ("DROP TABLE t", "DDL not supported"),
            ("SET datafusion.execution.batch_size = 1", "Statement not supported"),
            ("SELECT * FROM '/etc/passwd'", "not found"),
            ("SELECT 1; SELECT 2", "single SQL statement"),
        ] {
            let err = run_query(&ctx, sql, SqlLimits::default()).await.expect_err(sql);
            let ApiError::BadRequest { message, field } = &err else { panic!("{sql}: not a 400: {err}") };
            assert_eq!(field.as_deref(), Some("sql"), "{sql}: {err}");
            assert!(message.contains(reason), "{sql}: {message:?} does not say {reason:?}");
        }
        assert!(!std::path::Path::new("/tmp/callscope-copy-test.parquet").exists());
    }

    #[tokio::test]
    async fn errors_are_classified_by_cause() {
        let ctx = ctx().await;
        let err = run_query(&ctx, "SELECT nope FROM t", SqlLimits::default()).await.expect_err("unknown column");
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{err}");
        let err = run_query(&ctx, "SELECT column1 / 0 FROM t", SqlLimits::default()).await.expect_err("divide by zero");
        assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    }
}
