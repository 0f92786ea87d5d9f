//! Arrow values as JSON: numbers stay numbers, timestamps become RFC 3339 strings,
//! string maps become objects, anything else its Arrow display text.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value, json};

/// JSON name of a column type for `{"name", "type"}` column descriptions.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "integer".into(),
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "number".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "time".into(),
        DataType::Map(..) => "map".into(),
        other => other.to_string().to_lowercase(),
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

/// The values of one column as JSON.
pub fn column_values(array: &dyn Array) -> Vec<Value> {
    let n = array.len();
    let nulls = |i: usize| array.is_null(i);
    macro_rules! prim {
        ($t:ty, $conv:expr) => {{
            let a = array.as_primitive::<$t>();
            (0..n).map(|i| if nulls(i) { Value::Null } else { $conv(a.value(i)) }).collect()
        }};
    }
    match array.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..n).map(|i| if nulls(i) { Value::Null } else { json!(a.value(i)) }).collect()
        }
        DataType::Int8 => prim!(Int8Type, |v| json!(v)),
        DataType::Int16 => prim!(Int16Type, |v| json!(v)),
        DataType::Int32 => prim!(Int32Type, |v| json!(v)),
        DataType::Int64 => prim!(Int64Type, |v| json!(v)),
        DataType::UInt8 => prim!(UInt8Type, |v| json!(v)),
        DataType::UInt16 => prim!(UInt16Type, |v| json!(v)),
        DataType::UInt32 => prim!(UInt32Type, |v| json!(v)),
        DataType::UInt64 => prim!(UInt64Type, |v| json!(v)),
        DataType::Float32 => prim!(Float32Type, |v: f32| float(f64::from(v))),
        DataType::Float64 => prim!(Float64Type, float),
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..n).map(|i| if nulls(i) { Value::Null } else { json!(a.value(i)) }).collect()
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            (0..n).map(|i| if nulls(i) { Value::Null } else { json!(a.value(i)) }).collect()
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            (0..n).map(|i| if nulls(i) { Value::Null } else { json!(a.value(i)) }).collect()
        }
        DataType::Map(..) => {
            let a = array.as_map();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        return Value::Null;
                    }
                    let entries = a.value(i);
                    let keys = column_values(entries.column(0));
                    let values = column_values(entries.column(1));
                    let mut obj = Map::new();
                    for (k, v) in keys.into_iter().zip(values) {
                        let key = match k {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        obj.insert(key, v);
                    }
                    Value::Object(obj)
                })
                .collect()
        }
        _ => {
            let options = FormatOptions::default().with_null("");
            match ArrayFormatter::try_new(array, &options) {
                Ok(formatter) => {
                    (0..n).map(|i| if nulls(i) { Value::Null } else { json!(formatter.value(i).to_string()) }).collect()
                }
                Err(_) => vec![Value::Null; n],
            }
        }
    }
}

/// Rows of batches as arrays of JSON values, in column order.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for batch in batches {
        let columns: Vec<Vec<Value>> = batch.columns().iter().map(|c| column_values(c.as_ref())).collect();
        for row in 0..batch.num_rows() {
            out.push(columns.iter().map(|c| c[row].clone()).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn values_keep_their_json_types() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into())), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN)])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(TimestampMillisecondArray::from(vec![Some(0), None]).with_timezone("UTC")),
            ],
        )
        .expect("batch");
        let rows = rows(&[batch]);
        assert_eq!(rows[0], vec![json!(1), json!(1.5), json!("a"), json!("1970-01-01T00:00:00Z")]);
        assert_eq!(rows[1], vec![Value::Null, Value::Null, Value::Null, Value::Null]);
    }
}
