//! A record's headers as fetched.
//!
//! Names and values are slices of the fetch response they came in, so a
//! consumer reading a million records with a header each copies no header.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;

/// Header names and values of one record, in the order they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(IndexMap<StrBytes, Option<Bytes>>);

impl Headers {
    /// The headers as decoded from a record batch.
    pub fn from_wire(headers: IndexMap<StrBytes, Option<Bytes>>) -> Self {
        Headers(headers)
    }

    /// The value of the header `name` (a header written with no value reads as empty).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, value)| value.as_deref().unwrap_or_default())
    }

    /// Whether there is a header `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every header, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref().unwrap_or_default()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers as owned strings and bytes (to write them into another record).
    pub fn to_map(&self) -> BTreeMap<String, Vec<u8>> {
        self.iter()
            .map(|(key, value)| (key.to_string(), value.to_vec()))
            .collect()
    }
}

impl<K: Into<String>, V: Into<Vec<u8>>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(headers: I) -> Self {
        Headers(
            headers
                .into_iter()
                .map(|(key, value)| {
                    (
                        StrBytes::from_string(key.into()),
                        Some(Bytes::from(value.into())),
                    )
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_by_name_in_the_order_written() {
        let headers: Headers = [("schema", "1"), ("trace", "abc")].into_iter().collect();
        assert_eq!(headers.get("trace"), Some(&b"abc"[..]));
        assert_eq!(headers.get("missing"), None);
        assert!(headers.contains_key("schema"));
        let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["schema", "trace"]);
        assert_eq!(headers.to_map()["schema"], b"1");
    }

    #[test]
    fn a_header_without_a_value_reads_as_empty() {
        let mut wire = IndexMap::new();
        wire.insert(StrBytes::from_static_str("flag"), None);
        let headers = Headers::from_wire(wire);
        assert_eq!(headers.get("flag"), Some(&b""[..]));
        assert_eq!(headers.len(), 1);
    }
}
