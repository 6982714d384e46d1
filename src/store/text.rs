//! Text columns held compactly until their row group is written.
//!
//! A store keeps a row group of readings in memory for every partition it
//! writes, 16,384 rows each. Held as one `ByteArray` a value, a text column
//! costs 32 bytes a row and, for a value of its own, an allocation. Here a
//! column of values that differ row by row (device ids) is one buffer and an
//! end offset a row, and a column of few distinct values (type, unit, site,
//! run) is a 4-byte code a row into a dictionary the columns share. Values
//! become `ByteArray`s only while their column is written, as slices of the
//! buffer or clones of the dictionary's values: no value is copied.

use std::collections::HashMap;

use bytes::Bytes;
use parquet::data_type::ByteArray;

/// Distinct values a dictionary keeps from one row group to the next, at
/// most; one that grew beyond is emptied once its row group is written.
const KEPT_VALUES: usize = 4_096;

/// A column of values that differ from row to row, one after the other.
#[derive(Debug, Default)]
pub(super) struct TextColumn {
    bytes: Vec<u8>,
    /// Where each row's value ends in `bytes`.
    ends: Vec<u32>,
}

impl TextColumn {
    /// Appends a row's value.
    pub(super) fn push(&mut self, value: &str) {
        self.bytes.extend_from_slice(value.as_bytes());
        self.ends
            .push(u32::try_from(self.bytes.len()).expect("a row group's text is under 4 GiB"));
    }

    /// The rows' values in order, in `values` (emptied first); the column is
    /// left empty.
    pub(super) fn take_into(&mut self, values: &mut Vec<ByteArray>) {
        values.clear();
        let bytes = Bytes::from(std::mem::take(&mut self.bytes));
        let mut start = 0;
        for end in self.ends.drain(..) {
            let end = end as usize;
            values.push(ByteArray::from(bytes.slice(start..end)));
            start = end;
        }
    }
}

/// Values shared by the coded columns, each kept once.
#[derive(Debug, Default)]
pub(super) struct Dictionary {
    values: Vec<ByteArray>,
    codes: HashMap<Box<str>, u32>,
}

impl Dictionary {
    /// The code of `value`, given it now if it has none.
    fn code(&mut self, value: &str) -> u32 {
        if let Some(&code) = self.codes.get(value) {
            return code;
        }
        let code = u32::try_from(self.values.len()).expect("fewer values than rows");
        self.values.push(ByteArray::from(value));
        self.codes.insert(value.into(), code);
        code
    }

    /// Called once every column coded with it has been written: forgets its
    /// values if there are more than are worth keeping.
    pub(super) fn written(&mut self) {
        if self.values.len() > KEPT_VALUES {
            *self = Dictionary::default();
        }
    }
}

/// A column of few distinct values: a code a row.
#[derive(Debug, Default)]
pub(super) struct CodedColumn {
    codes: Vec<u32>,
}

impl CodedColumn {
    /// Appends a row's value.
    pub(super) fn push(&mut self, value: &str, dictionary: &mut Dictionary) {
        self.codes.push(dictionary.code(value));
    }

    /// The rows' values in order, in `values` (emptied first); the column is
    /// left empty.
    pub(super) fn take_into(&mut self, dictionary: &Dictionary, values: &mut Vec<ByteArray>) {
        values.clear();
        values.extend(
            self.codes
                .drain(..)
                .map(|code| dictionary.values[code as usize].clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(values: &[ByteArray]) -> Vec<&str> {
        values.iter().map(|v| v.as_utf8().unwrap()).collect()
    }

    #[test]
    fn a_text_column_gives_back_each_rows_value_in_order_and_starts_again_empty() {
        let mut column = TextColumn::default();
        for id in ["temperature-000001", "", "humidity-000002"] {
            column.push(id);
        }
        let mut values = vec![ByteArray::from("left over")];
        column.take_into(&mut values);
        assert_eq!(
            texts(&values),
            ["temperature-000001", "", "humidity-000002"]
        );
        column.push("pressure-000003");
        column.take_into(&mut values);
        assert_eq!(
            texts(&values),
            ["pressure-000003"],
            "none of the first group's"
        );
    }

    #[test]
    fn coded_columns_share_one_copy_of_a_value_and_give_back_their_own_rows() {
        let mut dictionary = Dictionary::default();
        let (mut unit, mut site) = (CodedColumn::default(), CodedColumn::default());
        for (u, s) in [
            ("celsius", "plant-a"),
            ("percent", "plant-a"),
            ("celsius", "plant-b"),
        ] {
            unit.push(u, &mut dictionary);
            site.push(s, &mut dictionary);
        }
        assert_eq!(
            dictionary.values.len(),
            4,
            "celsius, plant-a, percent, plant-b"
        );
        let mut values = Vec::new();
        unit.take_into(&dictionary, &mut values);
        assert_eq!(texts(&values), ["celsius", "percent", "celsius"]);
        site.take_into(&dictionary, &mut values);
        assert_eq!(texts(&values), ["plant-a", "plant-a", "plant-b"]);
        unit.take_into(&dictionary, &mut values);
        assert!(values.is_empty(), "taken once");
    }

    #[test]
    fn a_dictionary_grown_past_its_bound_is_emptied_once_written() {
        let mut dictionary = Dictionary::default();
        let mut column = CodedColumn::default();
        for n in 0..KEPT_VALUES + 1 {
            column.push(&format!("value-{n}"), &mut dictionary);
        }
        let mut values = Vec::new();
        column.take_into(&dictionary, &mut values);
        assert_eq!(values.len(), KEPT_VALUES + 1);
        dictionary.written();
        assert!(dictionary.values.is_empty() && dictionary.codes.is_empty());
        column.push("celsius", &mut dictionary);
        dictionary.written();
        assert_eq!(dictionary.values.len(), 1, "a small one is kept");
    }
}
