//! Turning records into record batches, and batches into Produce requests,
//! in buffers that are reused.
//!
//! The record batch and the request around it come from `kafka-protocol`'s
//! encoders. What this file adds is where the bytes go: each batch, and each
//! request, is encoded into a buffer taken from a small pool and given back
//! once nothing holds it any more (the batch once it is acknowledged, the
//! request once it is written). A partition writer with five batches in
//! flight settles on about six buffers of a batch's size and allocates
//! nothing more for them; the allocator (musl's in the static build) is not
//! asked to map and unmap a large buffer for every request.
//!
//! A buffer is cleared before it is used again, and what is handed out is
//! exactly what was encoded into it this time, so a reused buffer never
//! carries one batch's bytes into the next.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression as WireCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

use super::Compression;
use crate::kafka::headers::Headers;

/// Buffers kept for reuse, at most; more are freed when given back.
const POOLED_BUFFERS: usize = 8;

/// Which producer a batch is from, as the broker knows it (InitProducerId).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProducerIdentity {
    pub(super) id: i64,
    pub(super) epoch: i16,
}

/// What every Produce request of a producer carries besides its batches.
#[derive(Debug, Clone)]
pub(super) struct RequestShape {
    pub(super) topic: TopicName,
    /// How long the broker may wait for the in-sync replicas.
    pub(super) timeout_ms: i32,
    pub(super) client_id: StrBytes,
}

impl RequestShape {
    /// Requests to `topic` from client `client_id`, waiting up to `timeout` for the in-sync replicas.
    pub(super) fn new(topic: &str, timeout: std::time::Duration, client_id: &'static str) -> Self {
        RequestShape {
            topic: TopicName(StrBytes::from_string(topic.to_string())),
            timeout_ms: timeout.as_millis().min(i32::MAX as u128) as i32,
            client_id: StrBytes::from_static_str(client_id),
        }
    }
}

/// How batches are encoded: record format 2, with `compression`.
fn options(compression: Compression) -> RecordEncodeOptions {
    RecordEncodeOptions {
        version: 2,
        compression: match compression {
            Compression::None => WireCompression::None,
            Compression::Gzip => WireCompression::Gzip,
            Compression::Snappy => WireCompression::Snappy,
        },
    }
}

/// Numbers `record`, the `index`th of a batch of `identity` from `base_sequence`.
fn number(record: &mut Record, index: usize, identity: ProducerIdentity, base_sequence: i32) {
    record.producer_id = identity.id;
    record.producer_epoch = identity.epoch;
    record.offset = index as i64;
    record.sequence = base_sequence.wrapping_add(index as i32);
}

/// A record to be filled in by [`Encoder::record_batch`].
fn blank_record() -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 0,
        key: None,
        value: None,
        headers: Default::default(),
    }
}

/// A record as it waits for its batch: what the batch is encoded from. Once
/// it is, the record lets go of its bytes ([`Self::release`]); a batch
/// numbered anew is read back from its encoded form ([`Encoder::renumbered`]).
#[derive(Debug)]
pub(super) struct QueuedRecord {
    pub(super) key: Bytes,
    pub(super) value: Bytes,
    pub(super) headers: Headers,
    pub(super) timestamp_ms: i64,
}

/// Bytes of a record batch's header (record format 2), with room to spare.
const BATCH_HEADER_BYTES: usize = 128;

impl QueuedRecord {
    /// The most bytes the record takes in an uncompressed batch: its key,
    /// value and headers, and the varints around them.
    fn encoded_size_at_most(&self) -> usize {
        // Length, attributes, timestamp and offset deltas, key and value
        // lengths, header count: at most 36 bytes; each header's name and
        // value lengths at most 10.
        36 + self.key.len() + self.value.len() + self.headers.byte_len() + 10 * self.headers.len()
    }

    /// Lets go of the record's bytes, once its batch is encoded.
    pub(super) fn release(&mut self) {
        self.key = Bytes::new();
        self.value = Bytes::new();
        self.headers = Headers::new();
    }
}

/// Encodes batches and requests into reused buffers; see the module documentation.
#[derive(Default)]
pub(super) struct Encoder {
    pool: Vec<BytesMut>,
    /// The records of the batch being encoded, in the form the batch encoder
    /// reads. They are used again for every batch (a header map keeps its
    /// allocation), and hold none of a batch's bytes once it is encoded.
    records: Vec<Record>,
}

impl Encoder {
    /// `records` as one record batch of `identity`, numbered from `base_sequence`.
    pub(super) fn record_batch<'a>(
        &mut self,
        compression: Compression,
        identity: ProducerIdentity,
        base_sequence: i32,
        records: impl Iterator<Item = &'a QueuedRecord>,
    ) -> Result<Bytes, String> {
        let options = options(compression);
        let mut count = 0;
        let mut size = BATCH_HEADER_BYTES;
        for (index, queued) in records.enumerate() {
            size += queued.encoded_size_at_most();
            if index == self.records.len() {
                self.records.push(blank_record());
            }
            let record = &mut self.records[index];
            number(record, index, identity, base_sequence);
            record.timestamp = queued.timestamp_ms;
            record.key = Some(queued.key.clone());
            record.value = Some(queued.value.clone());
            queued.headers.write_wire(&mut record.headers);
            count = index + 1;
        }
        let mut buffer = self.buffer_for(size);
        let encoded =
            RecordBatchEncoder::encode(&mut buffer, self.records[..count].iter(), &options);
        for record in &mut self.records[..count] {
            record.key = None;
            record.value = None;
            record.headers.clear();
        }
        self.finished(buffer, encoded)
    }

    /// The batch encoded into `buffer`, or why it could not be (the buffer
    /// then goes back to the pool).
    fn finished(
        &mut self,
        buffer: BytesMut,
        encoded: Result<(), impl std::fmt::Display>,
    ) -> Result<Bytes, String> {
        match encoded {
            Ok(()) => Ok(buffer.freeze()),
            Err(e) => {
                self.recycle(buffer.freeze());
                Err(format!("cannot encode a record batch: {e}"))
            }
        }
    }

    /// `encoded`, a batch made by [`Self::record_batch`], as the same records
    /// in a batch of `identity` numbered from `base_sequence`. Decoding it
    /// gives back the records as they were sent (slices of `encoded` when it
    /// is not compressed); this is the rare path of a batch whose producer id
    /// changed while it was on its way.
    pub(super) fn renumbered(
        &mut self,
        compression: Compression,
        encoded: &Bytes,
        identity: ProducerIdentity,
        base_sequence: i32,
    ) -> Result<Bytes, String> {
        let mut batch = encoded.clone();
        let mut records = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| format!("cannot read back a record batch to renumber it: {e}"))?
            .records;
        for (index, record) in records.iter_mut().enumerate() {
            number(record, index, identity, base_sequence);
        }
        // Numbered anew, the batch is the same size, give or take the varints.
        let mut buffer = self.buffer_for(encoded.len() + BATCH_HEADER_BYTES);
        let result = RecordBatchEncoder::encode(&mut buffer, records.iter(), &options(compression));
        self.finished(buffer, result)
    }

    /// One Produce request (`acks=all`) carrying one batch for each of `batches`' partitions.
    pub(super) fn produce_request(
        &mut self,
        shape: &RequestShape,
        version: i16,
        batches: &[(i32, Bytes)],
    ) -> Result<Bytes, String> {
        let partitions = batches
            .iter()
            .map(|(partition, batch)| {
                PartitionProduceData::default()
                    .with_index(*partition)
                    .with_records(Some(batch.clone()))
            })
            .collect();
        let request = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(shape.timeout_ms)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(shape.topic.clone())
                    .with_partition_data(partitions),
            ]);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(version)
            .with_client_id(Some(shape.client_id.clone()));
        // The batches, and at most 64 bytes of framing each and 256 around them.
        let size = batches
            .iter()
            .map(|(_, batch)| batch.len() + 64)
            .sum::<usize>()
            + 256
            + shape.topic.0.len()
            + shape.client_id.len();
        let mut message = self.buffer_for(size);
        let encoded = header
            .encode(&mut message, ProduceRequest::header_version(version))
            .and_then(|_| request.encode(&mut message, version));
        match encoded {
            Ok(()) => Ok(message.freeze()),
            Err(e) => {
                self.recycle(message.freeze());
                Err(format!("cannot encode a produce request: {e}"))
            }
        }
    }

    /// An empty buffer, from the pool when it has one.
    fn buffer(&mut self) -> BytesMut {
        let mut buffer = self.pool.pop().unwrap_or_default();
        buffer.clear();
        buffer
    }

    /// An empty buffer with room for `size` bytes: from the pool when its
    /// buffer has the room, else a new one of that size. A buffer that grew
    /// while a batch was encoded into it would double: a batch just over
    /// 512 KiB would sit in 1 MiB until it is acknowledged.
    fn buffer_for(&mut self, size: usize) -> BytesMut {
        let buffer = self.buffer();
        if buffer.capacity() >= size {
            buffer
        } else {
            BytesMut::with_capacity(size)
        }
    }

    /// Gives a batch's or a request's buffer back once nothing else holds it.
    pub(super) fn recycle(&mut self, bytes: Bytes) {
        if self.pool.len() < POOLED_BUFFERS
            && let Ok(buffer) = bytes.try_into_mut()
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
        RequestShape::new("readings", std::time::Duration::from_secs(30), "test")
    }

    /// Records as the producer queues them: key "device", one value each.
    fn records(values: &[&str]) -> Vec<QueuedRecord> {
        values
            .iter()
            .map(|v| QueuedRecord {
                key: Bytes::from_static(b"device"),
                value: Bytes::copy_from_slice(v.as_bytes()),
                headers: Headers::one("schema", "2"),
                timestamp_ms: 1_700_000_000_000,
            })
            .collect()
    }

    /// A batch of `values`, numbered from `base_sequence`.
    fn batch(
        encoder: &mut Encoder,
        compression: Compression,
        identity: ProducerIdentity,
        base_sequence: i32,
        values: &[&str],
    ) -> Bytes {
        let records = records(values);
        encoder
            .record_batch(compression, identity, base_sequence, records.iter())
            .unwrap()
    }

    /// Each partition's records in a request, as a broker would read them.
    fn carried(request: &Bytes, version: i16) -> Vec<(i32, Vec<Record>)> {
        let mut bytes = request.clone();
        RequestHeader::decode(&mut bytes, ProduceRequest::header_version(version)).unwrap();
        let request = ProduceRequest::decode(&mut bytes, version).unwrap();
        assert!(!bytes.has_remaining(), "nothing after the request");
        request.topic_data[0]
            .partition_data
            .iter()
            .map(|p| {
                let mut batch = p.records.clone().unwrap();
                (
                    p.index,
                    RecordBatchDecoder::decode(&mut batch).unwrap().records,
                )
            })
            .collect()
    }

    /// `count` distinct values of `fill` bytes and a number each.
    fn long_values(count: usize, fill: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("long-record-{i:05}-{}", "x".repeat(fill)))
            .collect()
    }

    fn values(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    const ID: ProducerIdentity = ProducerIdentity { id: 42, epoch: 7 };

    #[test]
    fn a_request_carries_each_partitions_batch_numbered_from_its_base_sequence() {
        let mut encoder = Encoder::default();
        let first = batch(&mut encoder, Compression::None, ID, 10, &["a", "b", "c"]);
        let second = batch(&mut encoder, Compression::None, ID, 0, &["d"]);
        let request = encoder
            .produce_request(&shape(), 12, &[(3, first), (5, second)])
            .unwrap();
        let read = carried(&request, 12);
        assert_eq!(read.len(), 2);
        let (partition, records) = &read[0];
        assert_eq!(
            (*partition, values(records)),
            (3, vec!["a".into(), "b".into(), "c".into()])
        );
        assert!(
            records
                .iter()
                .all(|r| r.producer_id == 42 && r.producer_epoch == 7)
        );
        let sequences: Vec<i32> = records.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [10, 11, 12]);
        assert_eq!((read[1].0, values(&read[1].1)), (5, vec!["d".to_string()]));
    }

    #[test]
    fn a_reused_buffer_never_carries_one_batchs_bytes_into_the_next() {
        let mut encoder = Encoder::default();
        let long = long_values(200, 100);
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let first = batch(&mut encoder, Compression::None, ID, 0, &long);
        let (first_len, first_at) = (first.len(), first.as_ptr());
        encoder.recycle(first);
        assert_eq!(
            encoder.pooled(),
            1,
            "an acknowledged batch's buffer is kept"
        );
        let second = batch(&mut encoder, Compression::None, ID, 200, &["short"]);
        assert_eq!(second.as_ptr(), first_at, "the same buffer, used again");
        assert!(second.len() < first_len / 10);
        let request = encoder
            .produce_request(&shape(), 12, &[(0, second)])
            .unwrap();
        let read = carried(&request, 12);
        assert_eq!(
            values(&read[0].1),
            ["short"],
            "only the second batch's record"
        );
        assert_eq!(read[0].1[0].sequence, 200);
    }

    #[test]
    fn records_encoded_before_leave_nothing_in_the_next_batch_and_hold_no_bytes() {
        let mut encoder = Encoder::default();
        let first = records(&["a", "b", "c"]);
        encoder
            .record_batch(Compression::None, ID, 0, first.iter())
            .unwrap();
        assert!(
            first.iter().all(|r| r.value.is_unique()),
            "the encoder keeps no reference to an encoded record's bytes"
        );
        let plain = QueuedRecord {
            key: Bytes::from_static(b"other"),
            value: Bytes::from_static(b"d"),
            headers: Headers::new(),
            timestamp_ms: 1,
        };
        let second = encoder
            .record_batch(Compression::None, ID, 3, std::iter::once(&plain))
            .unwrap();
        let request = encoder
            .produce_request(&shape(), 12, &[(0, second)])
            .unwrap();
        let read = carried(&request, 12);
        let records = &read[0].1;
        assert_eq!(
            values(records),
            ["d"],
            "one record, not the first batch's three"
        );
        assert!(
            records[0].headers.is_empty(),
            "no header of the first batch"
        );
        assert_eq!(records[0].key.as_deref(), Some(&b"other"[..]));
        assert_eq!((records[0].sequence, records[0].timestamp), (3, 1));
    }

    #[test]
    fn a_batch_renumbered_from_its_encoded_form_carries_the_same_records_under_the_new_numbering() {
        let mut encoder = Encoder::default();
        for compression in [Compression::None, Compression::Snappy] {
            let sent = records(&["a", "b", "c"]);
            let first = encoder
                .record_batch(compression, ID, 0, sent.iter())
                .unwrap();
            let next = ProducerIdentity { id: 43, epoch: 0 };
            let again = encoder.renumbered(compression, &first, next, 0).unwrap();
            let request = encoder
                .produce_request(&shape(), 12, &[(0, again)])
                .unwrap();
            let read = carried(&request, 12);
            let records = &read[0].1;
            assert_eq!(values(records), ["a", "b", "c"], "{compression}");
            for (index, record) in records.iter().enumerate() {
                assert_eq!((record.producer_id, record.producer_epoch), (43, 0));
                assert_eq!(record.sequence, index as i32);
                assert_eq!(record.key.as_deref(), Some(&b"device"[..]));
                assert_eq!(record.timestamp, 1_700_000_000_000);
                assert_eq!(
                    record.headers.get(&StrBytes::from_static_str("schema")),
                    Some(&Some(Bytes::from_static(b"2")))
                );
            }
        }
    }

    #[test]
    fn a_batch_is_encoded_into_a_buffer_it_fits_without_growing() {
        let mut encoder = Encoder::default();
        let long = long_values(3_000, 150);
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let sent = records(&long);
        let estimate = BATCH_HEADER_BYTES
            + sent
                .iter()
                .map(QueuedRecord::encoded_size_at_most)
                .sum::<usize>();
        let batch = encoder
            .record_batch(Compression::None, ID, 0, sent.iter())
            .unwrap();
        assert!(batch.len() <= estimate, "{} > {estimate}", batch.len());
        let buffer = batch.try_into_mut().expect("nothing else holds it");
        assert_eq!(
            buffer.capacity(),
            estimate,
            "allocated once, at the estimate"
        );
    }

    #[test]
    fn a_buffer_still_held_elsewhere_is_not_reused() {
        let mut encoder = Encoder::default();
        let first = batch(&mut encoder, Compression::None, ID, 0, &["a"]);
        let in_flight = first.clone();
        encoder.recycle(first);
        assert_eq!(encoder.pooled(), 0, "the batch is still on its way");
        let second = batch(&mut encoder, Compression::None, ID, 1, &["b"]);
        let request = encoder
            .produce_request(&shape(), 12, &[(0, in_flight), (1, second)])
            .unwrap();
        let read = carried(&request, 12);
        assert_eq!(values(&read[0].1), ["a"], "untouched");
        assert_eq!(values(&read[1].1), ["b"]);
    }

    #[test]
    fn compressed_batches_read_back_the_same() {
        let mut encoder = Encoder::default();
        for compression in [Compression::Gzip, Compression::Snappy] {
            let batch = batch(&mut encoder, compression, ID, 0, &["x", "y"]);
            let request = encoder.produce_request(&shape(), 9, &[(0, batch)]).unwrap();
            assert_eq!(
                values(&carried(&request, 9)[0].1),
                ["x", "y"],
                "{compression}"
            );
            encoder.recycle(request);
        }
    }
}
