//! The native code the corpus's techniques try to run: a minimal x86-64
//! ELF shared object whose initialiser writes [`SO_MARKER`] to stdout,
//! and a bare machine-code blob that returns 42.
//!
//! Both are assembled here, byte by byte, rather than built with a C
//! compiler: an installed `agent-guard` always carries its corpus, and
//! the build needs nothing beyond `cargo`. The object holds one
//! read/write/execute `PT_LOAD` segment, a `PT_DYNAMIC` with `DT_INIT`
//! and an empty symbol and string table, and a `PT_GNU_STACK` (without
//! it glibc would make the stack executable). glibc's loader takes it
//! with `dlopen` and `LD_PRELOAD`; the unit test below loads it.

/// What the shared object's initialiser writes to fd 1.
pub const SO_MARKER: &str = "AG-CORPUS-SHARED-OBJECT-RAN";

/// The value the code blob returns (`mov eax, 42; ret`).
pub const BLOB_RESULT: i32 = 42;

/// `mov eax, 42; ret`, padded to a page with `int3`.
pub fn code_blob() -> Vec<u8> {
    let mut code = vec![0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3];
    code.resize(4096, 0xcc);
    code
}

const EHDR: usize = 64;
const PHDR: usize = 56;
const PHNUM: usize = 3;
const DYN_AT: usize = EHDR + PHDR * PHNUM; // 232
const DYN_ENTRIES: usize = 6;
const STRTAB_AT: usize = DYN_AT + 16 * DYN_ENTRIES; // 328
const SYMTAB_AT: usize = STRTAB_AT + 8; // 336
const CODE_AT: usize = SYMTAB_AT + 24; // 360

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(bytes);
}

fn u16le(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}

fn u32le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn u64le(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// The initialiser: `write(1, msg, len)` with a raw system call, then `ret`.
fn init_code() -> Vec<u8> {
    let msg = format!("{SO_MARKER}\n");
    let mut code = Vec::new();
    code.extend_from_slice(&[0xb8, 0x01, 0x00, 0x00, 0x00]); // mov eax, 1 (write)
    code.extend_from_slice(&[0xbf, 0x01, 0x00, 0x00, 0x00]); // mov edi, 1
    // lea rsi, [rip + disp32]: the message follows the 13 bytes after this instruction.
    let after_lea_to_msg: u32 = 5 + 2 + 1; // mov edx (5), syscall (2), ret (1)
    code.extend_from_slice(&[0x48, 0x8d, 0x35]);
    code.extend_from_slice(&after_lea_to_msg.to_le_bytes());
    code.push(0xba); // mov edx, len
    code.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x05]); // syscall
    code.push(0xc3); // ret
    code.extend_from_slice(msg.as_bytes());
    code
}

/// The shared object's bytes.
pub fn shared_object() -> Vec<u8> {
    let code = init_code();
    let size = (CODE_AT + code.len()) as u64;
    let mut b = Vec::with_capacity(size as usize);
    // ELF header.
    put(&mut b, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    put(&mut b, &u16le(3)); // e_type: ET_DYN
    put(&mut b, &u16le(62)); // e_machine: EM_X86_64
    put(&mut b, &u32le(1)); // e_version
    put(&mut b, &u64le(0)); // e_entry
    put(&mut b, &u64le(EHDR as u64)); // e_phoff
    put(&mut b, &u64le(0)); // e_shoff
    put(&mut b, &u32le(0)); // e_flags
    put(&mut b, &u16le(EHDR as u16)); // e_ehsize
    put(&mut b, &u16le(PHDR as u16)); // e_phentsize
    put(&mut b, &u16le(PHNUM as u16)); // e_phnum
    put(&mut b, &u16le(64)); // e_shentsize
    put(&mut b, &u16le(0)); // e_shnum
    put(&mut b, &u16le(0)); // e_shstrndx
    let phdr = |b: &mut Vec<u8>, kind: u32, flags: u32, off: u64, len: u64, align: u64| {
        put(b, &u32le(kind));
        put(b, &u32le(flags));
        put(b, &u64le(off)); // p_offset
        put(b, &u64le(off)); // p_vaddr
        put(b, &u64le(off)); // p_paddr
        put(b, &u64le(len)); // p_filesz
        put(b, &u64le(len)); // p_memsz
        put(b, &u64le(align));
    };
    phdr(&mut b, 1, 7, 0, size, 0x1000); // PT_LOAD, R|W|X, the whole file
    phdr(&mut b, 2, 6, DYN_AT as u64, (16 * DYN_ENTRIES) as u64, 8); // PT_DYNAMIC
    put(&mut b, &u32le(0x6474_e551)); // PT_GNU_STACK, R|W: no executable stack
    put(&mut b, &u32le(6));
    put(&mut b, &[0; 48]);
    debug_assert_eq!(b.len(), DYN_AT);
    for (tag, val) in [(12u64, CODE_AT as u64), (5, STRTAB_AT as u64), (6, SYMTAB_AT as u64), (10, 1), (11, 24), (0, 0)] {
        put(&mut b, &u64le(tag)); // DT_INIT, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT, DT_NULL
        put(&mut b, &u64le(val));
    }
    put(&mut b, &[0; 8]); // the string table: "" (padded)
    put(&mut b, &[0; 24]); // the symbol table: the null symbol
    debug_assert_eq!(b.len(), CODE_AT);
    put(&mut b, &code);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside any sandbox, the object loads and its initialiser runs (in
    /// a forked child whose stdout is a pipe).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_shared_object_loads_and_its_initialiser_runs() {
        use std::{io::Read as _, os::fd::AsRawFd as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.so");
        std::fs::write(&path, shared_object()).unwrap();
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let (mut rd, wr) = std::io::pipe().unwrap();
        // SAFETY: the child only redirects stdout, calls dlopen and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: in the child: dup2 onto stdout, dlopen of a path we wrote, _exit.
            unsafe {
                libc::dup2(wr.as_raw_fd(), 1);
                let h = libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW);
                libc::_exit(if h.is_null() { 1 } else { 0 });
            }
        }
        drop(wr);
        let mut out = String::new();
        rd.read_to_string(&mut out).unwrap();
        let mut status = 0;
        // SAFETY: waiting for the child we forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "dlopen failed: status {status}");
        assert_eq!(out, format!("{SO_MARKER}\n"));
    }

    #[test]
    fn layout_is_consistent() {
        let so = shared_object();
        assert_eq!(&so[..4], b"\x7fELF");
        assert_eq!(so.len(), CODE_AT + init_code().len());
        assert_eq!(code_blob()[..6], [0xb8, 0x2a, 0, 0, 0, 0xc3]);
    }
}
