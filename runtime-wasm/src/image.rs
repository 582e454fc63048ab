//! Image references for Wasm: where the component's bytes come from.
//!
//! Accepted forms:
//! - a local path (`./app.wasm`, `/srv/app.wasm`) or `file:///srv/app.wasm`;
//! - an `http://` or `https://` URL to a `.wasm`;
//! - any of these followed by `@sha256:<hex>`: the bytes must have that digest.
//!
//! - an OCI reference (`registry.example/app:1.0`, `…@sha256:<manifest digest>`) whose
//!   image has a `application/vnd.wasm.content.layer.v1+wasm` layer, pulled with
//!   oci-client (registries listed as insecure are reached over plain HTTP).

use wk_api::runtime::{PullOptions, RuntimeError};
use wk_runtime_oci::store::{ImageStore, WASM_LAYER};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    File(std::path::PathBuf),
    Http(String),
    Oci(String),
}

/// An image reference with its optional expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub source: ImageSource,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<ImageRef, RuntimeError> {
        let invalid = |message: &str| RuntimeError::InvalidImage {
            image: image.to_string(),
            message: message.to_string(),
        };
        let is_location = image.starts_with("file://")
            || image.starts_with("http://")
            || image.starts_with("https://")
            || image.starts_with('/')
            || image.starts_with("./")
            || image.starts_with("../")
            || image
                .split('@')
                .next()
                .is_some_and(|l| l.ends_with(".wasm"));
        if !is_location && !image.is_empty() {
            // An OCI reference; a digest in it names the manifest, checked by the client.
            return Ok(ImageRef {
                source: ImageSource::Oci(image.to_string()),
                digest: None,
            });
        }
        let (location, digest) = match image.rsplit_once("@sha256:") {
            Some((loc, hex)) => {
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        "the digest must be sha256: followed by 64 hex digits",
                    ));
                }
                (loc, Some(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            None => (image, None),
        };
        if location.is_empty() {
            return Err(invalid("empty image reference"));
        }
        let source = if let Some(p) = location.strip_prefix("file://") {
            ImageSource::File(p.into())
        } else if location.starts_with("http://") || location.starts_with("https://") {
            ImageSource::Http(location.to_string())
        } else if location.starts_with('/')
            || location.starts_with("./")
            || location.starts_with("../")
            || location.ends_with(".wasm")
        {
            ImageSource::File(location.into())
        } else {
            ImageSource::Oci(location.to_string())
        };
        Ok(ImageRef { source, digest })
    }
}

pub use wk_runtime_oci::store::digest;

/// Clients for fetching images, and the node's image store that OCI references are pulled
/// into (the one the container runtime uses, so `wk image ls` lists Wasm images too).
pub struct Fetcher {
    pub http: reqwest::Client,
    pub oci: wk_runtime_oci::RegistryClients,
    pub store: ImageStore,
}

impl Fetcher {
    /// `insecure_registries` (`host:port`) are reached over plain HTTP.
    pub fn new(insecure_registries: Vec<String>, store: ImageStore) -> Fetcher {
        Fetcher {
            http: reqwest::Client::builder()
                .connect_timeout(wk_runtime_oci::FETCH_CONNECT_TIMEOUT)
                .read_timeout(wk_runtime_oci::FETCH_STALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
            oci: wk_runtime_oci::RegistryClients::new(insecure_registries),
            store,
        }
    }
}

/// A fetched component: its bytes, or where the image store keeps them (read only when
/// the digest is not compiled already).
pub enum Fetched {
    Bytes(Vec<u8>),
    Stored(std::path::PathBuf),
}

impl Fetched {
    /// The component's bytes (`image` names it in errors).
    pub async fn read(self, image: &str) -> Result<Vec<u8>, RuntimeError> {
        match self {
            Fetched::Bytes(b) => Ok(b),
            Fetched::Stored(path) => tokio::fs::read(&path)
                .await
                .map_err(|e| RuntimeError::Pull {
                    image: image.to_string(),
                    message: format!("{}: {e}", path.display()),
                }),
        }
    }
}

/// The component of an OCI image and its digest (the store verified it): from the store
/// unless the pull policy says to pull, or it is not there yet.
async fn pull_oci(
    fetcher: &Fetcher,
    image: &str,
    reference: &str,
    pull: &PullOptions,
) -> Result<(Fetched, String), RuntimeError> {
    let failed = |message: String| RuntimeError::Pull {
        image: image.to_string(),
        message,
    };
    let (img, _) =
        wk_runtime_oci::ensure_image(&fetcher.store, &fetcher.oci, reference, pull).await?;
    let layer = img
        .layers
        .iter()
        .find(|l| l.media_type == WASM_LAYER)
        .ok_or_else(|| RuntimeError::InvalidImage {
            image: image.to_string(),
            message: format!(
                "the image has no {WASM_LAYER} layer (a container image? use runtimeClassName: oci)"
            ),
        })?;
    let path = fetcher
        .store
        .blob_path(&layer.digest)
        .map_err(|e| failed(e.to_string()))?;
    Ok((Fetched::Stored(path), layer.digest.clone()))
}

/// Fetches an image and checks the digest if one was given: the component and its digest.
pub async fn fetch(
    image: &str,
    fetcher: &Fetcher,
    pull: &PullOptions,
) -> Result<(Fetched, String), RuntimeError> {
    let http = &fetcher.http;
    let r = ImageRef::parse(image)?;
    let failed = |message: String| RuntimeError::Pull {
        image: image.to_string(),
        message,
    };
    let bytes = match &r.source {
        // Blobs in the store were verified when they were stored.
        ImageSource::Oci(reference) => return pull_oci(fetcher, image, reference, pull).await,
        ImageSource::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| failed(format!("{}: {e}", path.display())))?,
        ImageSource::Http(url) => {
            let resp = http
                .get(url)
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(failed(format!("server answered {}", resp.status())));
            }
            resp.bytes()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_vec()
        }
    };
    let d = digest(&bytes);
    if let Some(want) = &r.digest {
        if *want != d {
            return Err(RuntimeError::InvalidImage {
                image: image.to_string(),
                message: format!("digest mismatch: expected {want}, got {d}"),
            });
        }
    }
    Ok((Fetched::Bytes(bytes), d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            ImageRef::parse("/srv/a.wasm").unwrap().source,
            ImageSource::File("/srv/a.wasm".into())
        );
        assert_eq!(
            ImageRef::parse("file:///srv/a.wasm").unwrap().source,
            ImageSource::File("/srv/a.wasm".into())
        );
        assert_eq!(
            ImageRef::parse("app.wasm").unwrap().source,
            ImageSource::File("app.wasm".into())
        );
        assert_eq!(
            ImageRef::parse("http://h/a.wasm").unwrap().source,
            ImageSource::Http("http://h/a.wasm".into())
        );
        assert_eq!(
            ImageRef::parse("ghcr.io/x/app:1").unwrap().source,
            ImageSource::Oci("ghcr.io/x/app:1".into())
        );
        let pinned = format!("ghcr.io/x/app@sha256:{}", "b".repeat(64));
        assert_eq!(
            ImageRef::parse(&pinned).unwrap().source,
            ImageSource::Oci(pinned.clone())
        );
        let d = "a".repeat(64);
        let r = ImageRef::parse(&format!("/a.wasm@sha256:{d}")).unwrap();
        assert_eq!(r.digest, Some(format!("sha256:{d}")));
        assert!(ImageRef::parse("/a.wasm@sha256:xyz").is_err());
        assert!(ImageRef::parse("").is_err());
    }

    #[tokio::test]
    async fn digest_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wasm");
        std::fs::write(&p, b"abc").unwrap();
        let http = Fetcher::new(vec![], ImageStore::open(dir.path().join("store")).unwrap());
        let none = PullOptions::default();
        let (_, d) = fetch(p.to_str().unwrap(), &http, &none).await.unwrap();
        assert_eq!(
            d,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let bad = format!("{}@sha256:{}", p.display(), "0".repeat(64));
        assert!(matches!(
            fetch(&bad, &http, &none).await,
            Err(RuntimeError::InvalidImage { .. })
        ));
        assert!(matches!(
            fetch("/nonexistent.wasm", &http, &none).await,
            Err(RuntimeError::Pull { .. })
        ));
    }
}
