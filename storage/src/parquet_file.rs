//! Parquet encoding of record batches.

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::Result;

/// Encodes batches (all of one schema) into one Parquet file in memory.
pub fn encode(batches: &[RecordBatch]) -> Result<Bytes> {
    encode_with_metadata(batches, Vec::new())
}

/// Like [`encode`], with key-value metadata in the file footer.
pub fn encode_with_metadata(batches: &[RecordBatch], metadata: Vec<(String, String)>) -> Result<Bytes> {
    let Some(first) = batches.first() else {
        return Err(arrow::error::ArrowError::InvalidArgumentError("no batches".into()).into());
    };
    let props = WriterProperties::builder()
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
