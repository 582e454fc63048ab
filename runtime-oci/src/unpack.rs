//! Layer tars into directories, following the image-spec whiteout rules.
//!
//! A layer is unpacked in one of two forms:
//! - [`Form::Overlay`]: the layer on its own, as an overlayfs lower directory: a whiteout
//!   `.wh.<name>` becomes a 0/0 character device `<name>`, an opaque marker `.wh..wh..opq`
//!   sets `trusted.overlay.opaque=y` on its directory;
//! - [`Form::Apply`]: the layer applied on top of the layers below it in the same
//!   directory (the copy fallback when overlayfs is unavailable): whiteouts delete, an
//!   opaque marker empties its directory of what lower layers put there.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// How a layer is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Overlay,
    Apply,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The path of an entry relative to the layer root, or `None` if it would escape it.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether `dir` (a directory under the layer root) resolves inside `root` (canonical).
/// A symlink an entry planted, or an absolute one a lower layer holds (`lib -> /usr/lib`),
/// would otherwise lead a removal, an opaque directory's emptying or a device node onto
/// the host's files. What does not exist yet resolves as its deepest existing ancestor.
/// (The node agent checks `subPath` mounts with it too.)
pub fn resolves_inside(root: &Path, dir: &Path) -> bool {
    let mut p = dir;
    loop {
        match p.canonicalize() {
            Ok(c) => return c.starts_with(root),
            Err(_) => match p.parent() {
                Some(up) => p = up,
                None => return false,
            },
        }
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unpacks a layer (a plain, gzip- or zstd-compressed tar, told apart by its first
/// bytes, as containerd does) into `dst`.
pub fn unpack(reader: impl Read, dst: &Path, form: Form) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        unpack_tar(flate2::read::GzDecoder::new(reader), dst, form)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        unpack_tar(zstd::stream::read::Decoder::with_buffer(reader)?, dst, form)
    } else {
        unpack_tar(reader, dst, form)
    }
}

fn unpack_tar(reader: impl Read, dst: &Path, form: Form) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    let root = dst.canonicalize()?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    // What this layer itself wrote: an opaque marker hides only what lower layers put
    // in its directory.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(rel) = relative(&entry.path()?) else {
            continue; // a path escaping the layer (`..`) is skipped, as tar itself does
        };
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself
        };
        let parent = dst.join(rel.parent().unwrap_or(Path::new("")));
        if !resolves_inside(&root, &parent) {
            // tar's own unpacking refuses these paths too.
            tracing::debug!(path = %rel.display(), "layer entry through a symlink leaving the root; skipped");
            continue;
        }
        if name == OPAQUE {
            std::fs::create_dir_all(&parent)?;
            match form {
                Form::Overlay => xattr::set(&parent, "trusted.overlay.opaque", b"y")?,
                Form::Apply => {
                    let dir_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
                    for child in std::fs::read_dir(&parent)? {
                        let child = child?;
                        if !written.contains(&dir_rel.join(child.file_name())) {
                            remove_any(&child.path())?;
                        }
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                // `.wh..` or `.wh...` would name the directory itself or its parent.
                tracing::debug!(path = %rel.display(), "whiteout of no file; skipped");
                continue;
            }
            let target = parent.join(hidden);
            match form {
                Form::Overlay => {
                    std::fs::create_dir_all(&parent)?;
                    remove_any(&target)?;
                    nix::sys::stat::mknod(
                        &target,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::empty(),
                        0,
                    )
                    .map_err(std::io::Error::from)?;
                }
                Form::Apply => remove_any(&target)?,
            }
            continue;
        }
        let target = dst.join(&rel);
        // A file replacing a directory (or the other way round) replaces it whole.
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            let is_dir = entry.header().entry_type().is_dir();
            if !(is_dir && m.is_dir()) {
                remove_any(&target)?;
            }
        }
        entry.unpack_in(dst)?;
        if form == Form::Apply {
            written.insert(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if path.contains("..") {
                // The builder refuses such paths; a hostile layer would not.
                let d = data.unwrap_or_default();
                h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, d).unwrap();
                continue;
            }
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_directories_apply() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lower = layer(&[
            ("etc/", None),
            ("etc/a", Some(b"a")),
            ("etc/b", Some(b"b")),
            ("var/", None),
            ("var/old", Some(b"old")),
            ("gone", Some(b"x")),
        ]);
        unpack(&lower[..], root, Form::Apply).unwrap();
        let upper = layer(&[
            ("etc/.wh.a", Some(b"")),
            ("var/new", Some(b"new")),
            ("var/.wh..wh..opq", Some(b"")),
            (".wh.gone", Some(b"")),
            ("../escape", Some(b"no")),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &upper).unwrap();
        unpack(&gz.finish().unwrap()[..], root, Form::Apply).unwrap();
        assert!(!root.join("etc/a").exists());
        assert_eq!(std::fs::read(root.join("etc/b")).unwrap(), b"b");
        assert!(
            !root.join("var/old").exists(),
            "hidden by the opaque marker"
        );
        assert_eq!(std::fs::read(root.join("var/new")).unwrap(), b"new");
        assert!(!root.join("gone").exists());
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }

    /// A layer unpacks to the same files whether its tar is plain, gzip- or
    /// zstd-compressed; a corrupt zstd stream is an error, not a partial layer passed off
    /// as whole.
    #[test]
    fn plain_gzip_and_zstd_layers_unpack_alike() {
        let tar = layer(&[
            ("etc/", None),
            ("etc/motd", Some(b"hello")),
            ("bin", Some(b"x")),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        assert!(zst.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        for (what, bytes) in [
            ("plain", tar.clone()),
            ("gzip", gz.finish().unwrap()),
            ("zstd", zst.clone()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            unpack(&bytes[..], dir.path(), Form::Apply).unwrap();
            assert_eq!(
                std::fs::read(dir.path().join("etc/motd")).unwrap(),
                b"hello",
                "{what}"
            );
            assert_eq!(
                std::fs::read(dir.path().join("bin")).unwrap(),
                b"x",
                "{what}"
            );
        }
        let mut corrupt = zst;
        let n = corrupt.len();
        corrupt.truncate(n / 2);
        let dir = tempfile::tempdir().unwrap();
        assert!(unpack(&corrupt[..], dir.path(), Form::Apply).is_err());
    }

    /// Entries that go through a symlink to outside the root touch nothing there:
    /// neither a whiteout, nor an opaque marker, nor a file replacing what is there.
    #[test]
    fn symlinks_out_of_the_root_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, host) = (dir.path().join("root"), dir.path().join("host"));
        std::fs::create_dir_all(&host).unwrap();
        for f in ["shadow", "passwd", "kept"] {
            std::fs::write(host.join(f), b"host").unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&host, root.join("etc")).unwrap();
        let hostile = layer(&[
            ("etc/.wh.shadow", Some(b"")),
            ("etc/passwd", Some(b"mine")),
            ("etc/.wh..wh..opq", Some(b"")),
        ]);
        for form in [Form::Apply, Form::Overlay] {
            let _ = unpack(&hostile[..], &root, form);
            // A whiteout whose hidden name is `..` at the top would empty what holds the
            // root (here, `host`'s siblings); inside `sub`, `sub` itself.
            let dots = layer(&[
                ("sub/", None),
                ("sub/kept", Some(b"k")),
                (".wh...", Some(b"")),
                ("sub/.wh...", Some(b"")),
                ("sub/.wh..", Some(b"")),
            ]);
            unpack(&dots[..], &root, form).unwrap();
            assert_eq!(
                std::fs::read(root.join("sub/kept")).unwrap(),
                b"k",
                "{form:?}"
            );
            for f in ["shadow", "passwd", "kept"] {
                assert_eq!(
                    std::fs::read(host.join(f)).unwrap(),
                    b"host",
                    "{form:?}: {f}"
                );
            }
        }
    }

    #[test]
    fn overlay_form_marks_whiteouts() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let upper = layer(&[("etc/.wh.a", Some(b"")), ("var/.wh..wh..opq", Some(b""))]);
        match unpack(&upper[..], dir.path(), Form::Overlay) {
            Ok(()) => {}
            // Not root, or a file system without trusted xattrs: nothing to check here.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return,
            Err(e) if e.raw_os_error() == Some(95) => return,
            Err(e) => panic!("{e}"),
        }
        let m = std::fs::symlink_metadata(dir.path().join("etc/a")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(
            xattr::get(dir.path().join("var"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
    }
}
