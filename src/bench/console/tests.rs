//! The console benchmark's own arithmetic.

use super::*;

#[test]
fn a_metric_is_read_from_the_exposition() {
    let text = b"# HELP x\nmetrocloud_console_records_read_total 1234\nmetrocloud_console_records_read_total_other 5\n";
    assert_eq!(
        metric(text, "metrocloud_console_records_read_total"),
        Some(1234.0)
    );
    assert_eq!(metric(text, "metrocloud_missing"), None);
}

#[test]
fn runs_with_and_without_a_console_alternate_which_goes_first() {
    assert_eq!(console_order(0), [false, true]);
    assert_eq!(console_order(1), [true, false]);
    assert_eq!(console_order(2), [false, true]);
}

#[test]
fn percentiles_are_nearest_rank() {
    let times = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
    assert_eq!(percentile(&times, 0.5), 5.0);
    assert_eq!(percentile(&times, 0.95), 10.0);
    assert_eq!(percentile(&[3.0], 0.95), 3.0);
}
