//! Parquet encoding of record batches.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::Result;

/// Every 64-bit integer and time column (and, with `decimals`, every decimal column)
/// delta-encoded rather than in dictionary pages: Kafka offsets, times and counts step by
/// small amounts in file order, and a dictionary of distinct offsets took more bytes than
/// the values themselves (6 bytes a sample in the workers' files).
pub fn delta_encode_integers(
    mut builder: WriterPropertiesBuilder,
    schema: &Schema,
    decimals: bool,
) -> WriterPropertiesBuilder {
    let delta = schema.fields().iter().filter(|f| match f.data_type() {
        DataType::Int64 | DataType::Timestamp(..) => true,
        DataType::Decimal128(..) => decimals,
        _ => false,
    });
    for field in delta {
        let column = ColumnPath::from(field.name().as_str());
        builder = builder
            .set_column_dictionary_enabled(column.clone(), false)
            .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
    }
    builder
}

/// Encodes batches (all of one schema) into one Parquet file in memory.
pub fn encode(batches: &[RecordBatch]) -> Result<Bytes> {
    encode_with_metadata(batches, Vec::new())
}

/// Like [`encode`], with key-value metadata in the file footer.
pub fn encode_with_metadata(batches: &[RecordBatch], metadata: Vec<(String, String)>) -> Result<Bytes> {
    let Some(first) = batches.first() else {
        return Err(arrow::error::ArrowError::InvalidArgumentError("no batches".into()).into());
    };
    let builder = delta_encode_integers(WriterProperties::builder(), &first.schema(), false);
    let props = builder
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_created_by(format!("callscope {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(
            (!metadata.is_empty())
                .then(|| metadata.into_iter().map(|(k, v)| parquet::file::metadata::KeyValue::new(k, v)).collect()),
        )
        .build();
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut writer = ArrowWriter::try_new(&mut buffer, first.schema(), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// Decodes a Parquet file held in memory (tests, tools).
pub fn decode(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// Decodes a Parquet file held in memory together with its key-value metadata.
pub fn decode_with_metadata(bytes: Bytes) -> Result<(Vec<RecordBatch>, Vec<(String, String)>)> {
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let reader = builder.build()?;
    Ok((reader.collect::<Result<Vec<_>, _>>()?, metadata))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::Field;
    use parquet::file::reader::FileReader;

    use super::*;

    #[test]
    fn offsets_are_delta_encoded_and_read_back() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("kafka_offset", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]));
        let offsets: Vec<i64> = (1_000_000..1_050_000).collect();
        let values: Vec<f64> = offsets.iter().map(|o| (o % 977) as f64 / 4.0).collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(offsets.clone())), Arc::new(Float64Array::from(values))],
        )
        .expect("batch");
        let bytes = encode(std::slice::from_ref(&batch)).expect("encode");
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(bytes.clone()).expect("reader");
        let column = reader.metadata().row_group(0).column(0);
        assert!(
            column.encodings().any(|e| e == Encoding::DELTA_BINARY_PACKED),
            "{:?}",
            column.encodings().collect::<Vec<_>>()
        );
        // Consecutive offsets: a few bytes a page, not 8 a row (plain) or ~6 (dictionary).
        assert!(column.compressed_size() < 2_000, "{} bytes for 50 000 offsets", column.compressed_size());
        let back = decode(bytes).expect("decode");
        assert_eq!(arrow::compute::concat_batches(&batch.schema(), &back).expect("concat"), batch);
    }
}
