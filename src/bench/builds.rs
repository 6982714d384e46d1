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
    for build in &settings.other_builds {
        if let Some(emulator) = emulator(build) {
            notes.push(format!(
                "The build at {} ran under {emulator} (emulated, on this machine's processor): its figures only show that nothing in it is pathological, not its speed on its own hardware.",
                build.display()
            ));
        }
    }
    if settings.kcat.is_none() {
        notes.push(
            "kcat (librdkafka) is not installed here, so its rows are left out (Debian: `apt-get install kcat`).".to_string(),
        );
    }
    notes
}

/// What kind of build the program at `path` is: "static musl" for a static
/// executable (no ELF interpreter), else "dynamic (glibc)"; a build for
/// another processor says which, and that it runs under qemu.
pub fn build_label(path: &Path) -> String {
    let elf = std::fs::read(path).ok();
    let kind = match elf.as_deref().and_then(has_interpreter) {
        Some(false) => "static musl",
        Some(true) => "dynamic (glibc)",
        None => return "unknown build".to_string(),
    };
    match elf.as_deref().and_then(foreign_arch) {
        Some(arch) => format!("{kind} {arch} (qemu)"),
        None => kind.to_string(),
    }
}

/// The emulator that runs the program at `path` when it is built for
/// another processor than this one: `qemu-aarch64` (Debian's qemu-user) for
/// an aarch64 build on x86_64, or `qemu-aarch64-static` (qemu-user-static)
/// when only that one is installed; `None` for a native program.
pub fn emulator(path: &Path) -> Option<String> {
    // The ELF header alone says which processor: no need to read the program.
    let mut header = [0u8; 0x14];
    std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
        .ok()?;
    let arch = foreign_arch(&header)?;
    let dynamic = format!("qemu-{arch}");
    let fixed = format!("{dynamic}-static");
    if crate::cluster::which(&dynamic).is_none() && crate::cluster::which(&fixed).is_some() {
        return Some(fixed);
    }
    Some(dynamic)
}

/// The processor a 64-bit little-endian ELF file is built for, when it is
/// not this one.
fn foreign_arch(elf: &[u8]) -> Option<&'static str> {
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let arch = match u16::from_le_bytes(elf.get(0x12..0x14)?.try_into().ok()?) {
        EM_X86_64 => "x86_64",
        EM_AARCH64 => "aarch64",
        _ => return None,
    };
    (arch != std::env::consts::ARCH).then_some(arch)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of a 64-bit little-endian ELF executable for `machine`
    /// with no program headers.
    fn elf_header(machine: u16) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf
    }

    #[test]
    fn a_build_for_another_processor_is_named_and_run_under_qemu() {
        let other = if std::env::consts::ARCH == "aarch64" {
            62
        } else {
            183
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrocloud");
        std::fs::write(&path, elf_header(other)).unwrap();
        let label = build_label(&path);
        assert!(label.starts_with("static musl "), "{label}");
        assert!(label.ends_with("(qemu)"), "{label}");
        let emulator = emulator(&path).expect("a foreign build needs an emulator");
        assert!(emulator.starts_with("qemu-"), "{emulator}");
    }

    #[test]
    fn this_processors_builds_run_as_they_are() {
        let this = std::env::current_exe().unwrap();
        assert_eq!(emulator(&this), None);
        assert_eq!(build_label(&this), "dynamic (glibc)");
    }

    #[test]
    fn a_file_that_is_not_a_program_is_an_unknown_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script.sh");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        assert_eq!(build_label(&path), "unknown build");
        assert_eq!(emulator(&path), None);
    }
}
