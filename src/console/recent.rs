//! A device's last values for its chart, held inline: a fleet of a hundred
//! thousand devices costs no allocation per device for its charts.

/// Values kept per device for its chart.
pub const RECENT_VALUES: usize = 24;

/// The last [`RECENT_VALUES`] values of a device, held inline: a device costs
/// no allocation for its chart.
#[derive(Debug, Clone, Copy)]
pub struct RecentValues {
    values: [f32; RECENT_VALUES],
    /// Where the oldest value is, once the ring is full.
    start: u8,
    len: u8,
}

impl Default for RecentValues {
    fn default() -> Self {
        RecentValues {
            values: [0.0; RECENT_VALUES],
            start: 0,
            len: 0,
        }
    }
}

impl RecentValues {
    /// Adds the newest value, dropping the oldest when full.
    pub fn push(&mut self, value: f32) {
        let len = usize::from(self.len);
        if len < RECENT_VALUES {
            self.values[len] = value;
            self.len += 1;
        } else {
            self.values[usize::from(self.start)] = value;
            self.start = ((usize::from(self.start) + 1) % RECENT_VALUES) as u8;
        }
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        let (newer, older) = self.values[..usize::from(self.len)].split_at(usize::from(self.start));
        older.iter().chain(newer).copied()
    }

    /// Values held.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no value is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(recent: &RecentValues) -> Vec<f32> {
        recent.iter().collect()
    }

    #[test]
    fn values_come_back_oldest_first_before_the_ring_is_full() {
        let mut recent = RecentValues::default();
        assert!(recent.is_empty());
        for v in [1.0, 2.0, 3.0] {
            recent.push(v);
        }
        assert_eq!(held(&recent), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_full_ring_drops_the_oldest_and_keeps_the_order() {
        let mut recent = RecentValues::default();
        let pushed = RECENT_VALUES + 5;
        for v in 0..pushed {
            recent.push(v as f32);
        }
        assert_eq!(recent.len(), RECENT_VALUES);
        let expected: Vec<f32> = (pushed - RECENT_VALUES..pushed).map(|v| v as f32).collect();
        assert_eq!(held(&recent), expected);
    }
}
