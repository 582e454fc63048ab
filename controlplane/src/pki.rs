//! The cluster's TLS material: a self-signed CA and a serving certificate, generated at
//! first start in `<data-dir>/pki/`. Clients trust the CA through the client config's
//! `certificate-authority-data` (kubectl only sends bearer tokens over TLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Paths of the PEM files.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Pki {
    /// Loads the PKI from `dir`, generating it (CA + serving certificate for `sans`) the
    /// first time.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        if pki.ca_cert.exists() && pki.server_cert.exists() && pki.server_key.exists() {
            return Ok(pki);
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let ca_params = || -> Result<CertificateParams, PkiError> {
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.distinguished_name.push(DnType::CommonName, "wk-ca");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            Ok(ca)
        };
        // A server joining a cluster receives the cluster's CA and issues its own serving
        // certificate with it; the first server creates the CA.
        let ca_key_path = dir.join("ca.key");
        let (ca, ca_key, new_ca) = if pki.ca_cert.exists() && ca_key_path.exists() {
            let pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
            (ca_params()?, KeyPair::from_pem(&pem)?, None)
        } else {
            let key = KeyPair::generate()?;
            let params = ca_params()?;
            let cert = params.self_signed(&key)?;
            (params, key, Some(cert))
        };
        let issuer = Issuer::from_params(&ca, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "wk-apiserver");
        let server_cert = params.signed_by(&server_key, &issuer)?;

        let write = |p: &Path, s: &str| crate::auth::write_private(p, s.as_bytes()).map_err(io(p));
        write(&pki.server_key, &server_key.serialize_pem())?;
        write(&pki.server_cert, &server_cert.pem())?;
        if let Some(ca_cert) = new_ca {
            write(&ca_key_path, &ca_key.serialize_pem())?;
            write(&pki.ca_cert, &ca_cert.pem())?;
        }
        Ok(pki)
    }

    /// The CA certificate in PEM form.
    pub fn ca_pem(&self) -> Result<String, PkiError> {
        std::fs::read_to_string(&self.ca_cert).map_err(io(&self.ca_cert))
    }

    /// A rustls server configuration serving the certificate (HTTP/1.1 and HTTP/2).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| PkiError::Pem {
                path: self.server_cert.clone(),
                message: e.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_file(&self.server_key).map_err(|e| PkiError::Pem {
            path: self.server_key.clone(),
            message: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
