//! Turning a batch of records into a Produce request, in buffers that are reused.
//!
//! The record batch and the request around it come from `kafka-protocol`'s
//! encoders. What this file adds is where the bytes go: a batch is encoded
//! into a scratch buffer kept by the writer, and the request into a buffer
//! taken from a small pool and given back once the request is acknowledged.
//! A writer that keeps five requests in flight settles on about six buffers
//! of a batch's size and allocates nothing more for its requests; the
//! allocator (musl's in the static build) is not asked to map and unmap a
//! large buffer for every request.
//!
//! A buffer is cleared before it is used again, and the request's bytes are
//! exactly what was encoded into it this time, so a reused buffer never
//! carries one batch's bytes into the next.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression as WireCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
};

use super::Compression;

/// Buffers kept for reuse, at most; more are freed when given back.
const POOLED_BUFFERS: usize = 8;

/// Which producer a batch is from, as the broker knows it (InitProducerId).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProducerIdentity {
    pub(super) id: i64,
    pub(super) epoch: i16,
}

/// Where a request goes and how it is acknowledged.
#[derive(Debug, Clone)]
pub(super) struct RequestShape {
    pub(super) topic: TopicName,
    pub(super) partition: i32,
    pub(super) compression: Compression,
    /// How long the broker may wait for the in-sync replicas.
    pub(super) timeout_ms: i32,
    pub(super) client_id: StrBytes,
}

/// Numbers `records` as one batch of `identity` starting at `base_sequence`.
pub(super) fn number<'a>(
    records: impl Iterator<Item = &'a mut Record>,
    identity: ProducerIdentity,
    base_sequence: i32,
) {
    for (index, record) in records.enumerate() {
        record.producer_id = identity.id;
        record.producer_epoch = identity.epoch;
        record.offset = index as i64;
        record.sequence = base_sequence.wrapping_add(index as i32);
    }
}

/// Encodes Produce requests into reused buffers; see the module documentation.
#[derive(Default)]
pub(super) struct Encoder {
    scratch: BytesMut,
    pool: Vec<BytesMut>,
}

impl Encoder {
    /// One Produce request (`acks=all`) carrying `records` as one batch;
    /// they are numbered already ([`number`]).
    pub(super) fn produce_request<'a, I>(
        &mut self,
        shape: &RequestShape,
        version: i16,
        records: I,
    ) -> Result<Bytes, String>
    where
        I: Iterator<Item = &'a Record> + Clone,
    {
        let options = RecordEncodeOptions {
            version: 2,
            compression: match shape.compression {
                Compression::None => WireCompression::None,
                Compression::Gzip => WireCompression::Gzip,
                Compression::Snappy => WireCompression::Snappy,
            },
        };
        self.scratch.clear();
        RecordBatchEncoder::encode(&mut self.scratch, records, &options)
            .map_err(|e| format!("cannot encode a record batch: {e}"))?;
        let batch = std::mem::take(&mut self.scratch).freeze();
        let request = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(shape.timeout_ms)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(shape.topic.clone())
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(shape.partition)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(version)
            .with_client_id(Some(shape.client_id.clone()));
        let mut message = self.pool.pop().unwrap_or_default();
        message.clear();
        let encoded = header
            .encode(&mut message, ProduceRequest::header_version(version))
            .and_then(|_| request.encode(&mut message, version));
        // The request held the batch's only other handle: the scratch buffer comes back whole.
        let batch = request
            .topic_data
            .into_iter()
            .flat_map(|t| t.partition_data)
            .find_map(|p| p.records);
        if let Some(Ok(scratch)) = batch.map(Bytes::try_into_mut) {
            self.scratch = scratch;
        }
        match encoded {
            Ok(()) => Ok(message.freeze()),
            Err(e) => {
                self.recycle(message.freeze());
                Err(format!("cannot encode a produce request: {e}"))
            }
        }
    }

    /// Gives a request's buffer back once nothing else holds it.
    pub(super) fn recycle(&mut self, request: Bytes) {
        if self.pool.len() < POOLED_BUFFERS
            && let Ok(buffer) = request.try_into_mut()
        {
            self.pool.push(buffer);
        }
    }

    /// Buffers waiting to be used again.
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.pool.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Buf;
    use kafka_protocol::protocol::Decodable;
    use kafka_protocol::records::RecordBatchDecoder;

    use super::*;

    fn shape() -> RequestShape {
        RequestShape {
            topic: TopicName(StrBytes::from_static_str("readings")),
            partition: 3,
            compression: Compression::None,
            timeout_ms: 30_000,
            client_id: StrBytes::from_static_str("test"),
        }
    }

    fn records(values: &[&str]) -> Vec<Record> {
        values
            .iter()
            .map(|v| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: 0,
                sequence: 0,
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from_static(b"device")),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
            })
            .collect()
    }

    /// A request for `values`, numbered from `base_sequence`.
    fn request(
        encoder: &mut Encoder,
        shape: &RequestShape,
        version: i16,
        identity: ProducerIdentity,
        base_sequence: i32,
        values: &[&str],
    ) -> Bytes {
        let mut batch = records(values);
        number(batch.iter_mut(), identity, base_sequence);
        encoder
            .produce_request(shape, version, batch.iter())
            .unwrap()
    }

    /// The records a request carries, as a broker would read them.
    fn carried(request: &Bytes, version: i16) -> Vec<Record> {
        let mut bytes = request.clone();
        RequestHeader::decode(&mut bytes, ProduceRequest::header_version(version)).unwrap();
        let request = ProduceRequest::decode(&mut bytes, version).unwrap();
        assert!(!bytes.has_remaining(), "nothing after the request");
        let mut batch = request.topic_data[0].partition_data[0]
            .records
            .clone()
            .unwrap();
        RecordBatchDecoder::decode(&mut batch).unwrap().records
    }

    fn values(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_request_carries_its_records_numbered_from_the_base_sequence() {
        let mut encoder = Encoder::default();
        let identity = ProducerIdentity { id: 42, epoch: 7 };
        let request = request(&mut encoder, &shape(), 12, identity, 10, &["a", "b", "c"]);
        let read = carried(&request, 12);
        assert_eq!(values(&read), ["a", "b", "c"]);
        assert!(
            read.iter()
                .all(|r| r.producer_id == 42 && r.producer_epoch == 7)
        );
        let sequences: Vec<i32> = read.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [10, 11, 12]);
    }

    #[test]
    fn a_reused_buffer_never_carries_one_batchs_bytes_into_the_next() {
        let mut encoder = Encoder::default();
        let identity = ProducerIdentity { id: 1, epoch: 0 };
        let long: Vec<String> = (0..200)
            .map(|i| format!("long-record-{i:04}-{}", "x".repeat(100)))
            .collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let first = request(&mut encoder, &shape(), 12, identity, 0, &long);
        let first_len = first.len();
        let first_at = first.as_ptr();
        encoder.recycle(first);
        assert_eq!(
            encoder.pooled(),
            1,
            "an acknowledged request's buffer is kept"
        );
        let second = request(&mut encoder, &shape(), 12, identity, 200, &["short"]);
        assert_eq!(second.as_ptr(), first_at, "the same buffer, used again");
        assert!(second.len() < first_len / 10);
        let read = carried(&second, 12);
        assert_eq!(values(&read), ["short"], "only the second batch's record");
        assert_eq!(read[0].sequence, 200);
    }

    #[test]
    fn a_buffer_still_held_elsewhere_is_not_reused() {
        let mut encoder = Encoder::default();
        let identity = ProducerIdentity { id: 1, epoch: 0 };
        let first = request(&mut encoder, &shape(), 12, identity, 0, &["a"]);
        let in_flight = first.clone();
        encoder.recycle(first);
        assert_eq!(encoder.pooled(), 0, "the connection still writes it");
        let second = request(&mut encoder, &shape(), 12, identity, 1, &["b"]);
        assert_eq!(values(&carried(&in_flight, 12)), ["a"], "untouched");
        assert_eq!(values(&carried(&second, 12)), ["b"]);
    }

    #[test]
    fn compressed_batches_read_back_the_same() {
        let mut encoder = Encoder::default();
        let identity = ProducerIdentity { id: 5, epoch: 1 };
        for compression in [Compression::Gzip, Compression::Snappy] {
            let shape = RequestShape {
                compression,
                ..shape()
            };
            let request = request(&mut encoder, &shape, 9, identity, 0, &["x", "y"]);
            assert_eq!(values(&carried(&request, 9)), ["x", "y"], "{compression}");
            encoder.recycle(request);
        }
    }
}
