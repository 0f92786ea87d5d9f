//! `callscope sql`: one read-only query over a data directory or object-store URL, printed
//! as a table, JSON lines or CSV.

use arrow::record_batch::RecordBatch;
use callscope_query_api::QueryEngine;
use callscope_query_api::engine::EngineOptions;
use callscope_query_api::sql::read_only;

use crate::cli::{QueryArgs, SqlConfig, SqlFormat};

pub async fn run(config: SqlConfig) -> anyhow::Result<()> {
    let tiers = config.storage.tiers()?;
    // The query API's limits, at their defaults.
    let query: QueryArgs = crate::cli::defaults()?;
    let engine = QueryEngine::new(&tiers, EngineOptions::from(&query))?;
    let df = engine.session().sql_with_options(&config.query, read_only()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let batches = df.collect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    match config.format {
        SqlFormat::Json => print_json(&batches),
        SqlFormat::Csv => print_csv(&batches),
        SqlFormat::Table => println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?),
    }
    Ok(())
}

fn column_names(batches: &[RecordBatch]) -> Vec<String> {
    batches.first().map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect()).unwrap_or_default()
}

/// One JSON object per row.
fn print_json(batches: &[RecordBatch]) {
    let names = column_names(batches);
    for row in callscope_query_api::json_rows::rows(batches) {
        let object: serde_json::Map<String, serde_json::Value> = names.iter().cloned().zip(row).collect();
        println!("{}", serde_json::Value::Object(object));
    }
}

/// A header line (when there is a batch), then one line per row; text with a comma, quote
/// or newline is quoted.
fn print_csv(batches: &[RecordBatch]) {
    if !batches.is_empty() {
        println!("{}", column_names(batches).join(","));
    }
    for row in callscope_query_api::json_rows::rows(batches) {
        let cells: Vec<String> = row
            .into_iter()
            .map(|v| match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) if s.contains([',', '"', '\n']) => {
                    format!("\"{}\"", s.replace('"', "\"\""))
                }
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join(","));
    }
}
