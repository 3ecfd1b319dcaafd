//! Finds the ELF interpreter (dynamic loader) of an executable. The kernel
//! opens it for execution on every `execve` of a dynamic binary, so
//! landlock must grant it execute for any allowed program to start.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

const PT_INTERP: u32 = 3;

/// The `PT_INTERP` path of the 64-bit little-endian ELF file at `path`,
/// or `None` for static binaries, scripts, and anything unreadable.
pub fn interpreter(path: &Path) -> Option<PathBuf> {
    let mut f = File::open(path).ok()?;
    let mut hdr = [0u8; 64];
    f.read_exact(&mut hdr).ok()?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if hdr[..4] != *b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let phoff = u64_at(&hdr, 32);
    let phentsize = u64::from(u16_at(&hdr, 54));
    let phnum = u16_at(&hdr, 56);
    if phentsize < 56 {
        return None;
    }
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        f.seek(SeekFrom::Start(phoff + i * phentsize)).ok()?;
        f.read_exact(&mut ph).ok()?;
        if u32_at(&ph, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(&ph, 8), u64_at(&ph, 32));
        if size == 0 || size > 4096 {
            return None;
        }
        let mut buf = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut buf).ok()?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        use std::os::unix::ffi::OsStrExt;
        return Some(PathBuf::from(std::ffi::OsStr::from_bytes(&buf[..end])));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loader_of_sh() {
        let interp = interpreter(Path::new("/bin/sh")).expect("/bin/sh is a dynamic ELF binary");
        assert!(interp.to_string_lossy().contains("ld-linux"), "{}", interp.display());
        assert_eq!(interpreter(Path::new("/etc/passwd")), None);
    }
}
