//! The node's image store: verified content-addressed blobs, one record per image
//! reference, and layers unpacked once.
//!
//! Layout under the store root:
//! - `blobs/sha256/<hex>`: manifests, configs, layers and Wasm components, each checked
//!   against its digest before it is renamed into place;
//! - `images/<key>.json`: an [`Image`] record per reference (what `wk image ls` lists);
//! - `layers/<hex>/`: a layer unpacked in overlayfs form (`unpack::Form::Overlay`),
//!   shared read-only by every container of every image that has it;
//! - `leases/<container>`: the reference a container was created from; leased images are
//!   never removed or collected;
//! - `tmp/`: downloads and unpacks in progress.
//!
//! Every change lands by rename, so the agent and `wk image` can use one store at the
//! same time; `store.lock` (an advisory file lock) serialises removal and collection
//! against new leases.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::unpack;

/// Media type of a Wasm component layer (the wasm-oci convention).
pub const WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// Image store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Pull(String),
    #[error("image {0:?} is not in the store")]
    NotFound(String),
    #[error("image {reference:?} is in use by container {container}")]
    InUse {
        reference: String,
        container: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Container,
    Wasm,
}

/// One layer (or the Wasm component) of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// The parts of an image's configuration a container starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageConfig {
    /// Reads the `config` object of an OCI (or Docker) image configuration.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, StoreError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Invalid(format!("image configuration: {e}")))?;
        if let Some(os) = v.get("os").and_then(Value::as_str) {
            if os != "linux" {
                return Err(StoreError::Invalid(format!(
                    "the image is for {os}, not linux"
                )));
            }
        }
        let c = v.get("config").cloned().unwrap_or(Value::Null);
        let strs = |k: &str| -> Vec<String> {
            c.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(ImageConfig {
            entrypoint: strs("Entrypoint"),
            cmd: strs("Cmd"),
            env: strs("Env"),
            working_dir: text("WorkingDir"),
            user: text("User"),
        })
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The manifest digest (the config digest for `docker save` archives, as Docker's
    /// image ID).
    pub digest: String,
    pub kind: ImageKind,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    /// Bytes of its blobs.
    pub size: u64,
    /// Unix seconds when it was stored, and when a container last used it.
    pub created: i64,
    pub last_used: i64,
}

/// Progress of a pull, for a progress bar.
#[derive(Debug, Clone)]
pub struct Progress {
    pub layer: usize,
    pub layers: usize,
    pub digest: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// The normalised form of a reference: `busybox` is `docker.io/library/busybox:latest`.
pub fn normalize(reference: &str) -> Result<String, StoreError> {
    let r: oci_client::Reference = reference.parse().map_err(|e| {
        StoreError::Invalid(format!("{reference:?} is not an image reference: {e}"))
    })?;
    Ok(r.whole())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `sha256:<hex>` of some bytes: a content digest.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// This host's architecture as OCI platforms name it (`amd64`, `arm64`, …).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// `id` with every character but ASCII letters, digits, `-` and `.` replaced by `_`: a
/// file name (and a runc container id) of one path component.
pub(crate) fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn hex_of(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(StoreError::Invalid(format!(
            "unsupported digest {digest:?} (sha256 only)"
        ))),
    }
}

/// The image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore, StoreError> {
        let root = root.into();
        for d in ["blobs/sha256", "images", "layers", "leases", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(ImageStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Holds the store's lock until dropped.
    fn lock(&self) -> Result<std::fs::File, StoreError> {
        let p = self.root.join("store.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        f.lock().map_err(io_err(&p))?;
        Ok(f)
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        self.root.join("tmp").join(format!(
            "{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Stores bytes that must have `digest`.
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let actual = self::digest(bytes);
        if actual != digest {
            return Err(StoreError::Digest {
                what: "blob".into(),
                expected: digest.into(),
                actual,
            });
        }
        let dst = self.blob_path(digest)?;
        if dst.exists() {
            return Ok(dst);
        }
        let tmp = self.tmp_path("blob");
        std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        Ok(dst)
    }

    /// Copies a file in as a blob, computing its digest (checked against `expected`).
    pub fn put_blob_file(
        &self,
        src: &Path,
        expected: Option<&str>,
    ) -> Result<(String, u64), StoreError> {
        let mut f = std::fs::File::open(src).map_err(io_err(src))?;
        let tmp = self.tmp_path("blob");
        let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io_err(src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&tmp))?;
            size += n as u64;
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(want) = expected {
            if want != digest {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::Digest {
                    what: src.display().to_string(),
                    expected: want.into(),
                    actual: digest,
                });
            }
        }
        let dst = self.blob_path(&digest)?;
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        Ok((digest, size))
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let key = hex::encode(&Sha256::digest(reference.as_bytes())[..16]);
        self.root.join("images").join(format!("{key}.json"))
    }

    fn save(&self, image: &Image) -> Result<(), StoreError> {
        let tmp = self.tmp_path("image");
        let bytes = serde_json::to_vec_pretty(image).expect("image serialises");
        std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        let dst = self.record_path(&image.reference);
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))
    }

    /// The image stored under `reference` (normalised first).
    pub fn get(&self, reference: &str) -> Result<Option<Image>, StoreError> {
        let reference = normalize(reference)?;
        let p = self.record_path(&reference);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Every image, by reference.
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let p = e.map_err(io_err(&dir))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Ok(img) = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Image>(&b).ok())
                    .ok_or(())
                {
                    out.push(img);
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Records `container` as using `reference` (also its last use).
    pub fn lease(&self, container: &str, reference: &str) -> Result<Image, StoreError> {
        let _lock = self.lock()?;
        let mut image = self
            .get(reference)?
            .ok_or_else(|| StoreError::NotFound(reference.into()))?;
        image.last_used = now();
        self.save(&image)?;
        let p = self.lease_path(container);
        std::fs::write(&p, &image.reference).map_err(io_err(&p))?;
        Ok(image)
    }

    /// Ends a lease (no-op if there is none).
    pub fn release(&self, container: &str) {
        let _ = std::fs::remove_file(self.lease_path(container));
    }

    fn lease_path(&self, container: &str) -> PathBuf {
        self.root.join("leases").join(file_safe(container))
    }

    /// Leased references, with one container using each.
    fn leases(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("leases")) {
            for e in rd.flatten() {
                if let Ok(r) = std::fs::read_to_string(e.path()) {
                    out.insert(r, e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    /// Removes an image (refused while a container uses it) and the blobs and layers no
    /// other image needs.
    pub fn remove(&self, reference: &str) -> Result<Image, StoreError> {
        let _lock = self.lock()?;
        let image = self
            .get(reference)?
            .ok_or_else(|| StoreError::NotFound(reference.into()))?;
        if let Some(c) = self.leases().get(&image.reference) {
            return Err(StoreError::InUse {
                reference: image.reference,
                container: c.clone(),
            });
        }
        let p = self.record_path(&image.reference);
        std::fs::remove_file(&p).map_err(io_err(&p))?;
        self.prune()?;
        Ok(image)
    }

    /// Removes blobs and unpacked layers no image refers to. Call with the lock held.
    fn prune(&self) -> Result<(), StoreError> {
        let mut keep: HashSet<String> = HashSet::new();
        for img in self.list()? {
            keep.insert(hex_of(&img.digest)?.to_string());
            for l in &img.layers {
                keep.insert(hex_of(&l.digest)?.to_string());
            }
            // The config and manifest blobs are kept through the record's own files.
            if let Ok(rd) = std::fs::read(
                self.root
                    .join("images")
                    .join(format!("{}.refs", hex_of(&img.digest)?)),
            ) {
                for l in String::from_utf8_lossy(&rd).lines() {
                    keep.insert(l.to_string());
                }
            }
        }
        for dir in ["blobs/sha256", "layers", "images"] {
            let d = self.root.join(dir);
            for e in std::fs::read_dir(&d).map_err(io_err(&d))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // In `images`, only the `.refs` of digests no record has any more.
                let name = match (dir, name.strip_suffix(".refs")) {
                    ("images", Some(digest)) => digest.to_string(),
                    ("images", None) => continue,
                    _ => name,
                };
                if !keep.contains(&name) {
                    let p = e.path();
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    r.map_err(io_err(&p))?;
                }
            }
        }
        Ok(())
    }

    /// Frees at least `bytes` (if it can) by removing the images used least recently
    /// that no container uses; returns the references removed. The kubelet's image GC.
    pub fn evict(&self, bytes: u64) -> Result<Vec<String>, StoreError> {
        let _lock = self.lock()?;
        let leased = self.leases();
        let mut images = self.list()?;
        images.sort_by_key(|i| i.last_used.max(i.created));
        let mut freed = 0u64;
        let mut removed = Vec::new();
        for img in images {
            if freed >= bytes {
                break;
            }
            if leased.contains_key(&img.reference) {
                continue;
            }
            let p = self.record_path(&img.reference);
            std::fs::remove_file(&p).map_err(io_err(&p))?;
            freed += img.size;
            removed.push(img.reference);
        }
        // One sweep for all of them.
        if !removed.is_empty() {
            self.prune()?;
        }
        Ok(removed)
    }

    /// Records an image whose blobs are all stored; `extra` are other blobs it owns
    /// (manifest, config) kept alive with it.
    fn commit(&self, mut image: Image, extra: &[String]) -> Result<Image, StoreError> {
        // Under the lock: a prune (image GC, `wk image rm`) running while the blobs came
        // in may have swept them, as no record held them yet; then this pull fails
        // instead of recording an image with missing layers.
        let _lock = self.lock()?;
        let blobs = image.layers.iter().map(|l| &l.digest).chain(extra);
        if let Some(missing) = blobs.into_iter().find(|d| !self.has_blob(d)) {
            return Err(StoreError::Invalid(format!(
                "blob {missing} is missing (removed while the image was pulled?)"
            )));
        }
        if let Some(old) = self.get(&image.reference)? {
            image.last_used = old.last_used;
        }
        let refs: Vec<String> = extra
            .iter()
            .filter_map(|d| hex_of(d).ok().map(String::from))
            .collect();
        let p = self
            .root
            .join("images")
            .join(format!("{}.refs", hex_of(&image.digest)?));
        std::fs::write(&p, refs.join("\n")).map_err(io_err(&p))?;
        self.save(&image)?;
        Ok(image)
    }

    /// The directory of a layer unpacked in overlayfs form, unpacking it on first use.
    pub fn layer_dir(&self, layer: &Layer) -> Result<PathBuf, StoreError> {
        let dst = self.root.join("layers").join(hex_of(&layer.digest)?);
        if dst.exists() {
            return Ok(dst);
        }
        let tmp = self.tmp_path("layer");
        let blob = self.blob_path(&layer.digest)?;
        let f = std::fs::File::open(&blob).map_err(io_err(&blob))?;
        unpack::unpack(f, &tmp, unpack::Form::Overlay).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            StoreError::Io {
                path: blob.clone(),
                source: e,
            }
        })?;
        if std::fs::rename(&tmp, &dst).is_err() {
            // Another unpack of the same layer won.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(dst)
    }

    /// Applies an image's layers, in order, into `dst` (the copy fallback).
    pub fn apply_layers(&self, image: &Image, dst: &Path) -> Result<(), StoreError> {
        for l in &image.layers {
            let blob = self.blob_path(&l.digest)?;
            let f = std::fs::File::open(&blob).map_err(io_err(&blob))?;
            unpack::unpack(f, dst, unpack::Form::Apply).map_err(io_err(&blob))?;
        }
        Ok(())
    }
}

/// Picks the manifest for this host's platform from an image index.
fn pick_platform(index: &Value) -> Option<&Value> {
    let arch = host_arch();
    let manifests = index.get("manifests")?.as_array()?;
    manifests
        .iter()
        .find(|m| {
            m.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
                && m.pointer("/platform/architecture").and_then(Value::as_str) == Some(arch)
        })
        .or_else(|| {
            // Single-image layouts often carry no platform.
            (manifests.len() == 1 && manifests[0].get("platform").is_none()).then(|| &manifests[0])
        })
}

fn is_index(v: &Value) -> bool {
    let mt = v.get("mediaType").and_then(Value::as_str).unwrap_or("");
    mt.contains("index") || mt.contains("manifest.list") || v.get("manifests").is_some()
}

fn layers_of(manifest: &Value) -> Result<(Vec<Layer>, ImageKind), StoreError> {
    let mut layers = Vec::new();
    let mut kind = ImageKind::Container;
    for l in manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| StoreError::Invalid("the manifest has no layers".into()))?
    {
        let media_type = l
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if media_type == WASM_LAYER {
            kind = ImageKind::Wasm;
        }
        layers.push(Layer {
            digest: l
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| StoreError::Invalid("a layer has no digest".into()))?
                .to_string(),
            media_type,
            size: l.get("size").and_then(Value::as_u64).unwrap_or(0),
        });
    }
    Ok((layers, kind))
}

impl ImageStore {
    /// Imports an `oci-archive` (an OCI image layout in a tar) or a `docker save` tarball.
    /// `name` names the image when the archive does not (or renames a single image).
    pub fn import(&self, archive: &Path, name: Option<&str>) -> Result<Vec<Image>, StoreError> {
        let dir = self.tmp_path("import");
        let f = std::fs::File::open(archive).map_err(io_err(archive))?;
        let mut tar = tar::Archive::new(std::io::BufReader::new(f));
        let r = tar
            .unpack(&dir)
            .map_err(|e| StoreError::Invalid(format!("{}: not a tar archive: {e}", archive.display())))
            .and_then(|()| {
                if dir.join("index.json").exists() {
                    self.import_oci_layout(&dir, name)
                } else if dir.join("manifest.json").exists() {
                    self.import_docker(&dir, name)
                } else {
                    Err(StoreError::Invalid(format!(
                        "{}: neither an OCI layout (index.json) nor a docker save archive (manifest.json)",
                        archive.display()
                    )))
                }
            });
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn read_layout_blob(&self, dir: &Path, digest: &str) -> Result<Vec<u8>, StoreError> {
        let p = dir.join("blobs/sha256").join(hex_of(digest)?);
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        self.put_blob(digest, &bytes)?;
        Ok(bytes)
    }

    fn import_oci_layout(&self, dir: &Path, name: Option<&str>) -> Result<Vec<Image>, StoreError> {
        let p = dir.join("index.json");
        let index: Value = serde_json::from_slice(&std::fs::read(&p).map_err(io_err(&p))?)
            .map_err(|e| StoreError::Invalid(format!("index.json: {e}")))?;
        let entries = index
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if entries.is_empty() {
            return Err(StoreError::Invalid("index.json lists no images".into()));
        }
        let mut out = Vec::new();
        for entry in &entries {
            let ann = |k: &str| entry.pointer(&format!("/annotations/{}", k.replace('/', "~1")));
            let named = ann("io.containerd.image.name")
                .or_else(|| ann("org.opencontainers.image.ref.name"))
                .and_then(Value::as_str)
                .map(String::from);
            // `ref.name` is a whole reference (`busybox:1`, `host/app:2`) or, per the
            // image spec, often only a tag (`1.0`), which needs a name to go with it.
            let bare_tag = |n: &str| !n.contains(':') && !n.contains('/');
            let untagged = |n: &str| {
                let last = n.rsplit('/').next().unwrap_or(n);
                !last.contains(':') && !last.contains('@')
            };
            let reference = match (name, named) {
                (Some(base), Some(tag)) if bare_tag(&tag) && untagged(base) => {
                    format!("{base}:{tag}")
                }
                (Some(n), _) if entries.len() == 1 => n.to_string(),
                (_, Some(n)) if !bare_tag(&n) => n,
                (Some(base), Some(tag)) => format!("{base}:{tag}"),
                (None, Some(tag)) => {
                    return Err(StoreError::Invalid(format!(
                        "the archive names its image only by the tag {tag:?}; give a name"
                    )));
                }
                (_, None) => {
                    return Err(StoreError::Invalid(
                        "the archive does not name every image; give a name".into(),
                    ));
                }
            };
            let mut digest = entry
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| StoreError::Invalid("an index entry has no digest".into()))?
                .to_string();
            let mut owned = Vec::new();
            let mut manifest: Value = serde_json::from_slice(&self.read_layout_blob(dir, &digest)?)
                .map_err(|e| StoreError::Invalid(format!("manifest {digest}: {e}")))?;
            if is_index(&manifest) {
                owned.push(digest.clone());
                let m = pick_platform(&manifest).ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "{reference}: no image for linux/{}",
                        std::env::consts::ARCH
                    ))
                })?;
                digest = m["digest"].as_str().unwrap_or("").to_string();
                manifest = serde_json::from_slice(&self.read_layout_blob(dir, &digest)?)
                    .map_err(|e| StoreError::Invalid(format!("manifest {digest}: {e}")))?;
            }
            let config_digest = manifest
                .pointer("/config/digest")
                .and_then(Value::as_str)
                .ok_or_else(|| StoreError::Invalid("the manifest has no config".into()))?
                .to_string();
            let config_bytes = self.read_layout_blob(dir, &config_digest)?;
            owned.push(config_digest.clone());
            let (layers, kind) = layers_of(&manifest)?;
            let config = match kind {
                ImageKind::Container => ImageConfig::parse(&config_bytes)?,
                ImageKind::Wasm => ImageConfig::default(),
            };
            let mut size = config_bytes.len() as u64;
            for l in &layers {
                let src = dir.join("blobs/sha256").join(hex_of(&l.digest)?);
                let (_, n) = self.put_blob_file(&src, Some(&l.digest))?;
                size += n;
            }
            let image = Image {
                reference: normalize(&reference)?,
                digest,
                kind,
                config,
                layers,
                size,
                created: now(),
                last_used: 0,
            };
            out.push(self.commit(image, &owned)?);
        }
        Ok(out)
    }

    fn import_docker(&self, dir: &Path, name: Option<&str>) -> Result<Vec<Image>, StoreError> {
        let p = dir.join("manifest.json");
        let list: Vec<Value> = serde_json::from_slice(&std::fs::read(&p).map_err(io_err(&p))?)
            .map_err(|e| StoreError::Invalid(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for m in &list {
            let cfg_file = dir.join(m.get("Config").and_then(Value::as_str).unwrap_or(""));
            let (config_digest, mut size) = self.put_blob_file(&cfg_file, None)?;
            let config = ImageConfig::parse(&std::fs::read(&cfg_file).map_err(io_err(&cfg_file))?)?;
            let mut layers = Vec::new();
            for l in m
                .get("Layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let src = dir.join(l.as_str().unwrap_or(""));
                let (digest, n) = self.put_blob_file(&src, None)?;
                size += n;
                layers.push(Layer {
                    digest,
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    size: n,
                });
            }
            let tags: Vec<String> = match name {
                Some(n) if list.len() == 1 => vec![n.to_string()],
                _ => m
                    .get("RepoTags")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            if tags.is_empty() {
                return Err(StoreError::Invalid(
                    "the archive does not name its image; give a name".into(),
                ));
            }
            for t in tags {
                let image = Image {
                    reference: normalize(&t)?,
                    digest: config_digest.clone(),
                    kind: ImageKind::Container,
                    config: config.clone(),
                    layers: layers.clone(),
                    size,
                    created: now(),
                    last_used: 0,
                };
                out.push(self.commit(image, std::slice::from_ref(&config_digest))?);
            }
        }
        Ok(out)
    }

    /// Pulls an image from its registry into the store.
    pub async fn pull(
        &self,
        client: &oci_client::Client,
        reference: &str,
        auth: &oci_client::secrets::RegistryAuth,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Image, StoreError> {
        use futures::StreamExt;
        let r: oci_client::Reference = reference.parse().map_err(|e| {
            StoreError::Invalid(format!("{reference:?} is not an image reference: {e}"))
        })?;
        let (manifest, digest) = client
            .pull_image_manifest(&r, auth)
            .await
            .map_err(|e| StoreError::Pull(e.to_string()))?;
        let mut config_bytes = Vec::new();
        client
            .pull_blob(&r, &manifest.config, &mut config_bytes)
            .await
            .map_err(|e| StoreError::Pull(format!("config: {e}")))?;
        self.put_blob(&manifest.config.digest, &config_bytes)?;
        let manifest_json = serde_json::to_value(&manifest).expect("manifest serialises");
        let (layers, kind) = layers_of(&manifest_json)?;
        let config = match kind {
            ImageKind::Container => ImageConfig::parse(&config_bytes)?,
            ImageKind::Wasm => ImageConfig::default(),
        };
        let mut size = config_bytes.len() as u64;
        for (i, (l, desc)) in layers.iter().zip(&manifest.layers).enumerate() {
            size += l.size;
            if self.has_blob(&l.digest) {
                progress(Progress {
                    layer: i,
                    layers: layers.len(),
                    digest: l.digest.clone(),
                    done: l.size,
                    total: Some(l.size),
                });
                continue;
            }
            let mut stream = client
                .pull_blob_stream(&r, desc)
                .await
                .map_err(|e| StoreError::Pull(format!("layer {}: {e}", l.digest)))?;
            let total = stream.content_length.or(Some(l.size));
            let tmp = self.tmp_path("pull");
            let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            let mut hasher = Sha256::new();
            let mut done = 0u64;
            while let Some(chunk) = stream.stream.next().await {
                let chunk =
                    chunk.map_err(|e| StoreError::Pull(format!("layer {}: {e}", l.digest)))?;
                hasher.update(&chunk);
                out.write_all(&chunk).map_err(io_err(&tmp))?;
                done += chunk.len() as u64;
                progress(Progress {
                    layer: i,
                    layers: layers.len(),
                    digest: l.digest.clone(),
                    done,
                    total,
                });
            }
            drop(out);
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != l.digest {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::Digest {
                    what: format!("layer of {reference}"),
                    expected: l.digest.clone(),
                    actual,
                });
            }
            let dst = self.blob_path(&l.digest)?;
            std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        }
        let image = Image {
            reference: r.whole(),
            digest,
            kind,
            config,
            layers,
            size,
            created: now(),
            last_used: 0,
        };
        self.commit(image, std::slice::from_ref(&manifest.config.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer_tar(file: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, file, body).unwrap();
        b.into_inner().unwrap()
    }

    /// Writes a tar of `files` (name → bytes).
    fn tar_of(path: &Path, files: &[(String, Vec<u8>)]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            b.append_data(&mut h, name, &bytes[..]).unwrap();
        }
        b.finish().unwrap();
    }

    fn config(arch: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"os": "linux", "architecture": arch,
            "config": {"Cmd": ["sh"], "Env": ["A=1"], "User": "7:8", "WorkingDir": "/w"}}))
        .unwrap()
    }

    #[test]
    fn docker_save_archives_import_with_their_tags() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let layer = layer_tar("hello.txt", b"hi");
        let cfg = config("amd64");
        let manifest = json!([{"Config": "cfg.json", "RepoTags": ["example/app:1", "example/app:latest"], "Layers": ["l1/layer.tar"]}]);
        let archive = dir.path().join("save.tar");
        tar_of(
            &archive,
            &[
                (
                    "manifest.json".into(),
                    serde_json::to_vec(&manifest).unwrap(),
                ),
                ("cfg.json".into(), cfg.clone()),
                ("l1/layer.tar".into(), layer.clone()),
            ],
        );
        let images = store.import(&archive, None).unwrap();
        let refs: Vec<&str> = images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(
            refs,
            ["docker.io/example/app:1", "docker.io/example/app:latest"]
        );
        let img = store.get("example/app:1").unwrap().unwrap();
        assert_eq!(
            img.digest,
            digest(&cfg),
            "a docker save image is known by its config digest"
        );
        assert_eq!(img.config.cmd, ["sh"]);
        assert_eq!(img.config.user, "7:8");
        assert_eq!(img.layers[0].digest, digest(&layer));
        // The layer unpacks, and applies.
        let unpacked = store.layer_dir(&img.layers[0]).unwrap();
        assert_eq!(std::fs::read(unpacked.join("hello.txt")).unwrap(), b"hi");
        let root = dir.path().join("root");
        store.apply_layers(&img, &root).unwrap();
        assert_eq!(std::fs::read(root.join("hello.txt")).unwrap(), b"hi");
        // Garbage is refused with a clear error.
        std::fs::write(dir.path().join("junk.tar"), b"not a tar at all").unwrap();
        assert!(store.import(&dir.path().join("junk.tar"), None).is_err());
    }

    #[test]
    fn oci_layouts_pick_this_platform_and_verify_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let here = host_arch();
        let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut entries = Vec::new();
        for arch in ["s390x", here] {
            let layer = layer_tar("arch", arch.as_bytes());
            let cfg = config(arch);
            let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&cfg), "size": cfg.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}]})).unwrap();
            entries.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
                "platform": {"os": "linux", "architecture": arch}}));
            blobs.extend([
                (digest(&layer), layer),
                (digest(&cfg), cfg),
                (digest(&manifest), manifest),
            ]);
        }
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})).unwrap();
        let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest(&index), "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "2.0"}}]});
        blobs.push((digest(&index), index));
        let mut files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), serde_json::to_vec(&top).unwrap()),
        ];
        for (d, b) in &blobs {
            files.push((format!("blobs/sha256/{}", &d[7..]), b.clone()));
        }
        let archive = dir.path().join("multi.tar");
        tar_of(&archive, &files);
        // Only a tag in the archive: a name is needed.
        let err = store.import(&archive, None).unwrap_err();
        assert!(err.to_string().contains("give a name"), "{err}");
        let img = store
            .import(&archive, Some("example/multi"))
            .unwrap()
            .remove(0);
        assert_eq!(img.reference, "docker.io/example/multi:2.0");
        let root = dir.path().join("root");
        store.apply_layers(&img, &root).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("arch")).unwrap(), here);

        // A blob whose bytes do not match its digest is refused.
        // The layer of this platform (the second manifest's first blob).
        let (d, _) = &blobs[3];
        let mut bad = files.clone();
        for f in bad.iter_mut() {
            if f.0.ends_with(&d[7..]) {
                f.1 = b"tampered".to_vec();
            }
        }
        let tampered = dir.path().join("tampered.tar");
        tar_of(&tampered, &bad);
        let other = ImageStore::open(dir.path().join("other")).unwrap();
        assert!(other.import(&tampered, Some("x/y")).is_err());
    }

    #[test]
    fn leased_images_stay_and_eviction_takes_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        for (name, body) in [("old", "1"), ("mid", "2"), ("new", "3")] {
            let layer = layer_tar("f", body.as_bytes());
            let cfg = config("amd64");
            let manifest = json!([{"Config": "c.json", "RepoTags": [format!("example/{name}:1")], "Layers": ["l.tar"]}]);
            let archive = dir.path().join(format!("{name}.tar"));
            tar_of(
                &archive,
                &[
                    (
                        "manifest.json".into(),
                        serde_json::to_vec(&manifest).unwrap(),
                    ),
                    ("c.json".into(), cfg),
                    ("l.tar".into(), layer),
                ],
            );
            store.import(&archive, None).unwrap();
        }
        // Last use: mid, then old (leased, in use), then new.
        store.lease("c-mid", "example/mid:1").unwrap();
        store.release("c-mid");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        store.lease("c-old", "example/old:1").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        store.lease("c-new", "example/new:1").unwrap();
        store.release("c-new");
        let err = store.remove("example/old:1").unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        // Freeing one byte removes the least recently used image not in use.
        assert_eq!(store.evict(1).unwrap(), ["docker.io/example/mid:1"]);
        assert_eq!(store.evict(u64::MAX).unwrap(), ["docker.io/example/new:1"]);
        let left: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.reference)
            .collect();
        assert_eq!(left, ["docker.io/example/old:1"]);
        // Unreferenced blobs went with the removed images: the old image's layer, its
        // config and nothing else remain.
        let blobs = std::fs::read_dir(dir.path().join("store/blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(blobs, 2);
        store.release("c-old");
        store.remove("example/old:1").unwrap();
        assert!(store.list().unwrap().is_empty());
        // Nothing of the images is left: no blobs, and no records or their `.refs`.
        for d in ["blobs/sha256", "images"] {
            let left: Vec<_> = std::fs::read_dir(dir.path().join("store").join(d))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty(), "{d}: {left:?}");
        }
    }
}
