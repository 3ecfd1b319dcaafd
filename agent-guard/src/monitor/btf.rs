//! Offsets of the kernel struct fields the eBPF programs read (aya-ebpf
//! has no CO-RE field relocations, so user space finds them in the
//! kernel's BTF and passes them as globals). Parsing the kernel's BTF
//! takes tens of milliseconds, so the result is cached per kernel build
//! in [`CACHE_DIR`].

use std::path::Path;

use btfparse::{Offset, Readable, TypeInformation};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading kernel BTF {path}: {source}")]
    Read { path: String, #[source] source: std::io::Error },
    #[error("parsing kernel BTF: {0}")]
    Parse(String),
    #[error("kernel BTF has no {0}")]
    Missing(&'static str),
}

/// Where the offsets found for a kernel build are cached (shared by all
/// sessions whatever their runtime directory: it depends on the kernel only).
pub const CACHE_DIR: &str = "/var/cache/agent-guard";

/// Byte offsets of the fields the programs follow, in this order:
/// `task_struct.files`, `files_struct.fdt`, `fdtable.fd`, `file.f_inode`,
/// `inode.i_mode`, `task_struct.exit_code`, `fdtable.max_fds`,
/// `task_struct.real_parent`, `task_struct.tgid`,
/// `bpf_sock_addr_kern.uaddr`, `bpf_sock_addr_kern.uaddrlen`.
/// The last two are [`ABSENT`] on kernels without them (before 6.7,
/// which also lack the unix socket hooks that read them).
pub type FieldOffsets = [u64; agent_guard_common::session::KERNEL_OFFSETS];

const FIELDS: [(&str, &str); agent_guard_common::session::KERNEL_OFFSETS] = [
    ("task_struct", "files"),
    ("files_struct", "fdt"),
    ("fdtable", "fd"),
    ("file", "f_inode"),
    ("inode", "i_mode"),
    ("task_struct", "exit_code"),
    ("fdtable", "max_fds"),
    ("task_struct", "real_parent"),
    ("task_struct", "tgid"),
    ("bpf_sock_addr_kern", "uaddr"),
    ("bpf_sock_addr_kern", "uaddrlen"),
];

/// Fields the monitor can do without (their hooks are then left out, a
/// gap `run` reports): the offset is [`ABSENT`].
const OPTIONAL: [&str; 2] = ["uaddr", "uaddrlen"];

/// The offset of a field this kernel's BTF does not have.
pub const ABSENT: u64 = u64::MAX;

struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(buffer.len()).and_then(|end| self.0.get(start..end)) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(btfparse::ErrorKind::InvalidOffset, "read past the end of the BTF data")),
        }
    }
}

/// Finds the offsets in the BTF at `vmlinux`, or in the cache under
/// `cache_dir` written for the same kernel build.
pub fn field_offsets(vmlinux: &Path, cache_dir: &Path) -> Result<FieldOffsets, BtfError> {
    let build = std::fs::read_to_string("/proc/sys/kernel/version").unwrap_or_default()
        + &std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let key: String = build.bytes().map(|b| if b.is_ascii_alphanumeric() { b as char } else { '_' }).collect();
    let cache = cache_dir.join(format!("btf-offsets-{key}"));
    if let Some(cached) = std::fs::read_to_string(&cache).ok().and_then(|t| parse_cache(&t)) {
        return Ok(cached);
    }
    let bytes = std::fs::read(vmlinux).map_err(|source| BtfError::Read { path: vmlinux.display().to_string(), source })?;
    let info = TypeInformation::new(&Bytes(bytes)).map_err(|e| BtfError::Parse(format!("{e:?}")))?;
    let mut out = [0u64; agent_guard_common::session::KERNEL_OFFSETS];
    for (i, (ty, field)) in FIELDS.iter().enumerate() {
        let optional = OPTIONAL.contains(field) && *ty == "bpf_sock_addr_kern";
        let Some(id) = info.id_of(ty) else {
            if optional {
                out[i] = ABSENT;
                continue;
            }
            return Err(BtfError::Missing(ty));
        };
        out[i] = match info.offset_of(id, field) {
            Ok((_, Offset::ByteOffset(b))) => u64::from(b),
            _ if optional => ABSENT,
            _ => return Err(BtfError::Missing(field)),
        };
    }
    // Written aside and renamed, so that a concurrent session never reads half of it.
    let _ = std::fs::create_dir_all(cache_dir);
    let tmp = cache_dir.join(format!(".btf-offsets-{}", std::process::id()));
    if std::fs::write(&tmp, out.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")).is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
    Ok(out)
}

fn parse_cache(text: &str) -> Option<FieldOffsets> {
    let v: Vec<u64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_this_kernel() {
        let dir = std::env::temp_dir().join(format!("ag-btf-test-{}", std::process::id()));
        let t = std::time::Instant::now();
        let offsets = field_offsets(Path::new("/sys/kernel/btf/vmlinux"), &dir).expect("kernel BTF");
        eprintln!("offsets {offsets:?} in {:?}", t.elapsed());
        // Every field exists and lies inside its struct; f_inode and i_mode are early fields.
        // (This kernel is 6.18: bpf_sock_addr_kern has uaddr and uaddrlen.)
        assert!(offsets.iter().all(|&o| o < 16384), "{offsets:?}");
        use agent_guard_common::session::{OFF_SOCK_ADDR_UADDR, OFF_SOCK_ADDR_UADDRLEN};
        assert_eq!((offsets[OFF_SOCK_ADDR_UADDR], offsets[OFF_SOCK_ADDR_UADDRLEN]), (8, 32), "struct bpf_sock_addr_kern as of 6.7: {offsets:?}");
        // The cache gives the same answer.
        assert_eq!(field_offsets(Path::new("/nonexistent"), &dir).expect("cached"), offsets);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
