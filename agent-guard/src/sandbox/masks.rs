//! `deny` masks: paths hidden even inside an allowed tree. In the child's
//! private mount namespace, each denied file has an empty mode-000 file
//! bind-mounted over it, and each denied directory an empty mode-000
//! directory, both read-only, so that with no capabilities left nothing
//! can be read, listed or written there.

use std::{
    ffi::CString,
    fs,
    io,
    os::unix::{ffi::OsStrExt, fs::{DirBuilderExt, PermissionsExt}},
    path::{Path, PathBuf},
};

use super::cstring;

#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("preparing the mask source {path}: {source}")]
    Source { path: PathBuf, #[source] source: io::Error },
    #[error("{path} contains a NUL byte")]
    Nul { path: PathBuf },
}

/// One mount the child makes: `source` bind-mounted read-only over `target`.
#[derive(Debug)]
pub struct Mask {
    pub source: CString,
    pub target: CString,
}

/// The masks of a session, ready for the child.
#[derive(Debug, Default)]
pub struct Masks {
    pub mounts: Vec<Mask>,
    /// Denied paths that do not exist here: nothing to hide.
    pub absent: Vec<PathBuf>,
}

/// Creates (once) the empty mode-000 file and directory under `runtime_dir`
/// that masks are bind-mounted from.
fn sources(runtime_dir: &Path) -> Result<(PathBuf, PathBuf), MaskError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| MaskError::Source { path, source }
    };
    fs::DirBuilder::new().recursive(true).mode(0o755).create(runtime_dir).map_err(err(runtime_dir))?;
    let file = runtime_dir.join("mask-file");
    let dir = runtime_dir.join("mask-dir");
    // Concurrent sessions may race to create these: existing is fine.
    if !file.is_file() {
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(&file).map_err(err(&file))?;
    }
    match fs::create_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(err(&dir)(e)),
        _ => {}
    }
    for p in [&file, &dir] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o000)).map_err(err(p))?;
    }
    Ok((file, dir))
}

/// Plans the masks for `deny`.
pub fn plan(deny: &[PathBuf], runtime_dir: &Path) -> Result<Masks, MaskError> {
    let mut masks = Masks::default();
    if deny.is_empty() {
        return Ok(masks);
    }
    let (file, dir) = sources(runtime_dir)?;
    let c = |p: &Path| cstring("", p.as_os_str().as_bytes()).map_err(|_| MaskError::Nul { path: p.to_owned() });
    for target in deny {
        match fs::metadata(target) {
            Ok(meta) => {
                let source = if meta.is_dir() { &dir } else { &file };
                masks.mounts.push(Mask { source: c(source)?, target: c(target)? });
            }
            Err(_) => masks.absent.push(target.clone()),
        }
    }
    Ok(masks)
}
