//! Which build of ours a benchmark measures, and what the report says about it.
//!
//! Users deploy the static musl binary (the scratch image, the edge box), so
//! that is the build measured as ours by default; a dynamic glibc build may be
//! measured beside it. Which kind a file is, is read from the file itself.

use std::path::Path;

use super::BenchSettings;

/// What the producer benchmark's report should say about the clients it had.
pub(super) fn producer_notes(settings: &BenchSettings) -> Vec<String> {
    let mut notes = Vec::new();
    if settings.binary_label != "static musl" {
        notes.push(format!(
            "Ours is the {} build at {}: no static musl build was found (`cargo build --release --target x86_64-unknown-linux-musl` makes the one users deploy).",
            settings.binary_label,
            settings.binary.display()
        ));
    }
    if settings.kcat.is_none() {
        notes.push(
            "kcat (librdkafka) is not installed here, so its rows are left out (Debian: `apt-get install kcat`).".to_string(),
        );
    }
    notes
}

/// What kind of build the program at `path` is: "static musl" for a static
/// executable (no ELF interpreter), else "dynamic (glibc)".
pub fn build_label(path: &Path) -> String {
    match std::fs::read(path)
        .ok()
        .and_then(|elf| has_interpreter(&elf))
    {
        Some(false) => "static musl".to_string(),
        Some(true) => "dynamic (glibc)".to_string(),
        None => "unknown build".to_string(),
    }
}

/// Whether a 64-bit little-endian ELF file names a program interpreter
/// (a `PT_INTERP` program header); `None` when it is not such a file.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let table = usize::try_from(u64_at(0x20)?).ok()?;
    let entry = usize::from(u16_at(0x36)?);
    let count = usize::from(u16_at(0x38)?);
    for index in 0..count {
        let at = table + index * entry;
        let kind = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        if kind == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}
