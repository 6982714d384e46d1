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
///
/// A record usually carries one header or none (the schema version of a
/// reading), and records wait by the ten thousand in the producer's buffer
/// and a consumer's queue: one header is held inline, with no allocation,
/// and only a second name makes a map.
#[derive(Debug, Clone, Default)]
pub struct Headers(Repr);

#[derive(Debug, Clone, Default)]
enum Repr {
    #[default]
    Empty,
    One(StrBytes, Option<Bytes>),
    Many(IndexMap<StrBytes, Option<Bytes>>),
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }

    /// One header, named by a constant.
    pub fn one(name: &'static str, value: impl Into<Bytes>) -> Self {
        Headers(Repr::One(
            StrBytes::from_static_str(name),
            Some(value.into()),
        ))
    }

    /// The headers as decoded from a record batch. A single header is taken
    /// out of its map, which is let go: a consumer's queue holds thousands of
    /// records, most with one header.
    pub(crate) fn from_wire(headers: IndexMap<StrBytes, Option<Bytes>>) -> Self {
        match headers.len() {
            0 => Headers(Repr::Empty),
            1 => {
                let (name, value) = headers.into_iter().next().expect("one header");
                Headers(Repr::One(name, value))
            }
            _ => Headers(Repr::Many(headers)),
        }
    }

    /// Writes the headers into `wire`, a record's map as a record batch
    /// takes it, emptied first: a map used again keeps its allocation.
    pub(crate) fn write_wire(&self, wire: &mut IndexMap<StrBytes, Option<Bytes>>) {
        wire.clear();
        wire.extend(
            self.entries()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
    }

    /// Sets header `name` to `value`, replacing one of that name; a new name
    /// goes last. A `&'static str` name is not copied.
    pub fn insert(&mut self, name: impl Into<HeaderName>, value: impl Into<Bytes>) {
        let (name, value) = (name.into().0, Some(value.into()));
        match &mut self.0 {
            Repr::Empty => self.0 = Repr::One(name, value),
            Repr::One(first, first_value) if *first == name => *first_value = value,
            Repr::One(..) => {
                let Repr::One(first, first_value) = std::mem::take(&mut self.0) else {
                    unreachable!("matched above")
                };
                let mut map = IndexMap::with_capacity(2);
                map.insert(first, first_value);
                map.insert(name, value);
                self.0 = Repr::Many(map);
            }
            Repr::Many(map) => {
                map.insert(name, value);
            }
        }
    }

    /// Every header as stored: name, and value if it has one.
    fn entries(&self) -> impl Iterator<Item = (&StrBytes, &Option<Bytes>)> {
        let (one, many) = match &self.0 {
            Repr::Empty => (None, None),
            Repr::One(name, value) => (Some((name, value)), None),
            Repr::Many(map) => (None, Some(map.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Bytes of names and values together.
    pub fn byte_len(&self) -> usize {
        self.entries()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, Bytes::len))
            .sum()
    }

    /// The value of the header `name` (a header written with no value reads as empty).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, value)| value.as_deref().unwrap_or_default())
    }

    /// Whether there is a header `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every header, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries()
            .map(|(key, value)| (key.as_str(), value.as_deref().unwrap_or_default()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Empty => 0,
            Repr::One(..) => 1,
            Repr::Many(map) => map.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Equal when they hold the same names with the same values, in any order
/// (as two records' header maps compare), however each is stored.
impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .entries()
                .all(|(name, value)| other.entries().any(|(n, v)| n == name && v == value))
    }
}

impl Eq for Headers {}

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
    fn one_header_or_many_the_same_headers_compare_equal_and_write_the_same_map() {
        let one = Headers::one("schema", "2");
        let mut wire = IndexMap::new();
        wire.insert(
            StrBytes::from_static_str("schema"),
            Some(Bytes::from_static(b"2")),
        );
        let decoded = Headers::from_wire(wire.clone());
        assert_eq!(one, decoded);
        let mut written = IndexMap::new();
        written.insert(StrBytes::from_static_str("stale"), None);
        one.write_wire(&mut written);
        assert_eq!(written, wire, "emptied, then the one header");
        let mut two = one.clone();
        two.insert("trace", "abc");
        assert_ne!(one, two);
        assert_eq!(two.len(), 2);
        assert_eq!(two.get("schema"), Some(&b"2"[..]));
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
