//! TLS for the gRPC servers and the orchestrator's agent client (rustls via
//! tonic). Certificates and keys are PEM files named by settings; they are
//! read once, at start-up, and a missing or unreadable file stops the binary.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ConfigError, Settings};

/// A certificate chain, its key and, for mutual TLS, the CA that signs the
/// peer's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn existing_file(v: &str) -> Result<Option<PathBuf>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(v);
    if path.is_file() {
        Ok(Some(path))
    } else {
        Err("no such file".to_owned())
    }
}

/// Reads settings `cert`, `key` and `ca` (ids of the binary's arguments;
/// `ca` is optional):
/// `None` when neither certificate nor key is set; an error naming the
/// setting when only one is, or when a file does not exist.
pub fn resolve(
    settings: &Settings<'_>,
    cert: &str,
    key: &str,
    ca: Option<&str>,
) -> Result<Option<TlsFiles>, ConfigError> {
    const FORMS: &str = "a PEM file path";
    let cert_path = settings.get(cert, "", FORMS, existing_file)?;
    let key_path = settings.get(key, "", FORMS, existing_file)?;
    let ca_path = match ca {
        Some(ca) => settings.get(ca, "", FORMS, existing_file)?,
        None => None,
    };
    match (cert_path, key_path) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            ca: ca_path,
        })),
        (None, None) => {
            let Some(ca) = ca else { return Ok(None) };
            // A CA alone would silently do nothing: refuse it.
            settings.get(ca, "", FORMS, |v| {
                if v.trim().is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "needs {} and {} as well",
                        settings.display_name(cert),
                        settings.display_name(key)
                    ))
                }
            })?;
            Ok(None)
        }
        (Some(_), None) => settings
            .get(key, "", FORMS, |_| {
                Err(format!("required with {}", settings.display_name(cert)))
            })
            .map(|()| None),
        (None, Some(_)) => settings
            .get(cert, "", FORMS, |_| {
                Err(format!("required with {}", settings.display_name(key)))
            })
            .map(|()| None),
    }
}

/// Server TLS; with `ca`, clients must present a certificate it signed.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let identity = Identity::from_pem(
        read(&files.cert, "certificate")?,
        read(&files.key, "private key")?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    Ok(config)
}

/// Client TLS trusting `ca`, presenting `identity` (cert, key) if given,
/// expecting the server's certificate to name `server_name`.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    server_name: &str,
) -> anyhow::Result<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?))
        .domain_name(server_name);
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(
            read(cert, "certificate")?,
            read(key, "private key")?,
        ));
    }
    Ok(config)
}
