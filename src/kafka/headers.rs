//! A record's headers, as produced and as fetched.
//!
//! They are kept the way a record batch holds them, so neither direction
//! converts them: a produced record's headers go into its batch as they are,
//! and a fetched record's names and values are slices of the fetch response
//! they came in (a consumer reading a million records with a header each
//! copies no header). A record passed on, as a dead letter say, keeps its
//! headers without copying them.

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;

/// Header names and values of one record, in the order they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(IndexMap<StrBytes, Option<Bytes>>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }

    /// One header, named by a constant.
    pub fn one(name: &'static str, value: impl Into<Bytes>) -> Self {
        let mut headers = Headers::new();
        headers.insert(name, value);
        headers
    }

    /// The headers as decoded from a record batch.
    pub(crate) fn from_wire(headers: IndexMap<StrBytes, Option<Bytes>>) -> Self {
        Headers(headers)
    }

    /// The headers as a record batch takes them.
    pub(crate) fn into_wire(self) -> IndexMap<StrBytes, Option<Bytes>> {
        self.0
    }

    /// Sets header `name` to `value`, replacing one of that name; a new name
    /// goes last. A `&'static str` name is not copied.
    pub fn insert(&mut self, name: impl Into<HeaderName>, value: impl Into<Bytes>) {
        self.0.insert(name.into().0, Some(value.into()));
    }

    /// Bytes of names and values together.
    pub fn byte_len(&self) -> usize {
        self.0
            .iter()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, Bytes::len))
            .sum()
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
}

/// A header's name: a constant is taken as it is, anything else is owned.
pub struct HeaderName(StrBytes);

impl From<&'static str> for HeaderName {
    fn from(name: &'static str) -> Self {
        HeaderName(StrBytes::from_static_str(name))
    }
}

impl From<String> for HeaderName {
    fn from(name: String) -> Self {
        HeaderName(StrBytes::from_string(name))
    }
}

impl<K: Into<HeaderName>, V: Into<Bytes>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(headers: I) -> Self {
        let mut all = Headers::new();
        for (name, value) in headers {
            all.insert(name, value);
        }
        all
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
    }

    #[test]
    fn a_header_set_again_keeps_its_place_and_takes_the_new_value() {
        let mut headers: Headers = [("schema", "1"), ("trace", "abc")].into_iter().collect();
        headers.insert("schema", "2");
        headers.insert(String::from("added"), "x");
        let all: Vec<(&str, &[u8])> = headers.iter().collect();
        assert_eq!(
            all,
            [
                ("schema", &b"2"[..]),
                ("trace", &b"abc"[..]),
                ("added", &b"x"[..])
            ]
        );
        assert_eq!(headers.byte_len(), "schema2traceabcaddedx".len());
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
