//! `callscope sql`: one read-only query over a data directory or object-store URL.

use callscope_query_api::QueryEngine;
use callscope_query_api::engine::EngineOptions;
use callscope_query_api::sql::read_only;

use crate::cli::SqlConfig;

pub async fn run(config: SqlConfig) -> anyhow::Result<()> {
    let hot = config.storage.hot_tier()?;
    let engine = QueryEngine::new(&hot, EngineOptions::default())?;
    let df = engine.context().sql_with_options(&config.query, read_only()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let batches = df.collect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    match config.format.as_str() {
        "json" => {
            let schema = batches.first().map(|b| b.schema());
            for row in callscope_query_api::json_rows::rows(&batches) {
                let object: serde_json::Map<String, serde_json::Value> = schema
                    .iter()
                    .flat_map(|s| s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>())
                    .zip(row)
                    .collect();
                println!("{}", serde_json::Value::Object(object));
            }
        }
        "csv" => {
            if let Some(schema) = batches.first().map(|b| b.schema()) {
                println!("{}", schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(","));
            }
            for row in callscope_query_api::json_rows::rows(&batches) {
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
        _ => println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?),
    }
    Ok(())
}
