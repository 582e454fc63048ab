//! Writing images as `oci-archive` tarballs (an OCI image layout in a tar), the form
//! `wk image import` reads; used to build test and sample images without a registry.

use std::io::Write;
use std::path::Path;

use crate::store::{ImageConfig, digest, host_arch};
use serde_json::json;

/// A tar header owned by root, dated 0 (reproducible archives).
fn header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size as u64);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, bytes.len());
    b.append_data(&mut h, path, bytes)
}

/// An image's blobs: its configuration and its gzip-compressed layers.
#[derive(Debug, Clone)]
pub struct ImageParts {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
}

/// Media type of the layers [`ImageParts`] holds.
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of an image configuration.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Builds the configuration blob and compresses the layers (uncompressed tars).
pub fn image_parts(config: &ImageConfig, layers: &[Vec<u8>]) -> std::io::Result<ImageParts> {
    let mut gz_layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(digest(l));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l)?;
        gz_layers.push(gz.finish()?);
    }
    let arch = host_arch();
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Entrypoint": config.entrypoint, "Cmd": config.cmd, "Env": config.env,
                   "WorkingDir": config.working_dir, "User": config.user},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    Ok(ImageParts {
        config,
        layers: gz_layers,
    })
}

/// Writes an archive holding one image named `reference`, whose layers are the given
/// uncompressed tars (stored gzip-compressed). Returns the manifest digest.
pub fn write_oci_archive(
    path: &Path,
    reference: &str,
    config: &ImageConfig,
    layers: &[Vec<u8>],
) -> std::io::Result<String> {
    let parts = image_parts(config, layers)?;
    let layer_descs: Vec<_> = parts
        .layers
        .iter()
        .map(|l| json!({"mediaType": LAYER_GZIP, "digest": digest(l), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": CONFIG, "digest": digest(&parts.config), "size": parts.config.len()},
        "layers": layer_descs,
    }))?;
    let manifest_digest = digest(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                       "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": reference}}],
    }))?;
    let mut blobs: Vec<&[u8]> = parts.layers.iter().map(Vec::as_slice).collect();
    blobs.push(&parts.config);
    blobs.push(&manifest);
    let mut b = tar::Builder::new(std::fs::File::create(path)?);
    append(
        &mut b,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append(&mut b, "index.json", 0o644, &index)?;
    for bytes in blobs {
        let d = digest(bytes);
        append(
            &mut b,
            &format!("blobs/sha256/{}", &d["sha256:".len()..]),
            0o644,
            bytes,
        )?;
    }
    b.into_inner()?.sync_all()?;
    Ok(manifest_digest)
}

/// A root file system layer with a static busybox and links for `applets`, plus `/etc`
/// basics: enough for small test and sample containers.
pub fn busybox_layer(busybox: &Path, applets: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (d, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("proc", 0o755),
        ("sys", 0o755),
        ("dev", 0o755),
        ("www", 0o755),
        ("root", 0o755),
        ("tmp", 0o1777),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, d, &[][..])?;
    }
    append(&mut b, "bin/busybox", 0o755, &std::fs::read(busybox)?)?;
    for a in applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")?;
    }
    append(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    append(&mut b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    b.into_inner()
}
