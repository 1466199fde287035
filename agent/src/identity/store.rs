//! The node's identity on disk: `<state_dir>/identity/{key.pem,cert.pem}` (DESIGN.md §3).
//!
//! A router can lose power at any instant, and a torn identity is a new identity. So the first
//! start writes both files into `identity.tmp/`, fsyncs them and the directory, renames the
//! directory to `identity/` and fsyncs the state dir: `identity/` either exists complete or does
//! not exist. A leftover `identity.tmp/` was never loaded by anyone and is discarded. Creation
//! and loading happen under an exclusive `flock` on `identity.lock`, so two processes starting
//! at once on a fresh state dir end up with one identity.
//!
//! An `identity/` that exists but cannot be loaded is an error naming the file, never replaced:
//! replacing it would silently change the node's ID, and with it every pin that names it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::NodeId;
use super::der::certificate_public_key;

pub const IDENTITY_DIR: &str = "identity";
pub const KEY_FILE: &str = "key.pem";
pub const CERT_FILE: &str = "cert.pem";
const TMP_DIR: &str = "identity.tmp";
const LOCK_FILE: &str = "identity.lock";

/// A node's persistent key and certificate, validated to belong together.
pub struct Identity {
    id: NodeId,
    key: KeyPair,
    cert_der: Vec<u8>,
    dir: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why an identity could not be loaded or made. Every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: io::Error },
    #[error("cannot lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{} is missing from the identity directory; restore it from a backup, or move {} away \
         to make a new identity (the node ID will change)",
        path.display(), dir.display()
    )]
    Missing { path: PathBuf, dir: PathBuf },
    #[error(
        "{} is not a usable private key: {reason}; restore it from a backup, or move {} away to \
         make a new identity (the node ID will change)",
        path.display(), dir.display()
    )]
    BadKey {
        path: PathBuf,
        dir: PathBuf,
        reason: String,
    },
    #[error(
        "{} is not a usable certificate: {reason}; restore it from a backup, or move {} away to \
         make a new identity (the node ID will change)",
        path.display(), dir.display()
    )]
    BadCert {
        path: PathBuf,
        dir: PathBuf,
        reason: String,
    },
    #[error("cannot make a new key pair or certificate: {0}")]
    Generate(String),
}

impl Identity {
    /// Loads the identity in `state_dir`, making one first if there is none.
    /// Returns whether it was made now.
    pub fn load_or_create(state_dir: &Path) -> Result<(Self, bool), IdentityError> {
        create_private_dir(state_dir)?;
        let _lock = lock(state_dir)?;
        let dir = state_dir.join(IDENTITY_DIR);
        match fs::symlink_metadata(&dir) {
            Ok(_) => return Ok((Self::load_dir(&dir)?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(IdentityError::Read { path: dir, source }),
        }
        create(state_dir)?;
        Ok((Self::load_dir(&dir)?, true))
    }

    /// Loads an existing identity; never makes one.
    pub fn load(state_dir: &Path) -> Result<Self, IdentityError> {
        let _lock = lock(state_dir)?;
        Self::load_dir(&state_dir.join(IDENTITY_DIR))
    }

    fn load_dir(dir: &Path) -> Result<Self, IdentityError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let key_text = read_existing(&key_path, dir)?;
        let cert_text = read_existing(&cert_path, dir)?;

        let bad_key = |reason: String| IdentityError::BadKey {
            path: key_path.clone(),
            dir: dir.to_owned(),
            reason,
        };
        let key_pem = pem::parse(&key_text)
            .map_err(|e| bad_key(format!("not PEM ({e}); truncated or corrupt?")))?;
        match key_pem.tag() {
            "PRIVATE KEY" => {}
            "EC PRIVATE KEY" => {
                return Err(bad_key(
                    "it is a SEC1 'EC PRIVATE KEY'; meshgate reads PKCS#8 \
                     (convert with `openssl pkcs8 -topk8 -nocrypt`)"
                        .into(),
                ));
            }
            other => return Err(bad_key(format!("PEM block is {other:?}, not PRIVATE KEY"))),
        }
        let key = KeyPair::try_from(key_pem.contents()).map_err(|e| {
            bad_key(format!(
                "not a PKCS#8 key meshgate can read ({e}); truncated or corrupt?"
            ))
        })?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(bad_key(format!(
                "it is a {} key; meshgate identities are ECDSA P-256",
                algorithm_name(key.algorithm())
            )));
        }
        if let Ok(meta) = fs::metadata(&key_path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by others (mode {mode:o}); chmod 600 it",
                    key_path.display()
                );
            }
        }

        let bad_cert = |reason: String| IdentityError::BadCert {
            path: cert_path.clone(),
            dir: dir.to_owned(),
            reason,
        };
        let blocks = pem::parse_many(&cert_text)
            .map_err(|e| bad_cert(format!("not PEM ({e}); truncated or corrupt?")))?;
        let cert_der = match blocks.as_slice() {
            [one] if one.tag() == "CERTIFICATE" => one.contents().to_vec(),
            [one] => return Err(bad_cert(format!("PEM block is {:?}", one.tag()))),
            [] => return Err(bad_cert("no PEM block; truncated or corrupt?".into())),
            _ => return Err(bad_cert("more than one PEM block".into())),
        };
        let public = certificate_public_key(&cert_der)
            .ok_or_else(|| bad_cert("not an X.509 certificate".into()))?;
        if public != key.public_key_raw() {
            return Err(bad_cert(format!(
                "its public key is not the one in {}",
                key_path.display()
            )));
        }
        Ok(Self {
            id: NodeId::of_certificate(&cert_der),
            key,
            cert_der,
            dir: dir.to_owned(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The same key and certificate in the form rtc-dtls takes.
    pub fn dtls_certificate(&self) -> Result<rtc_dtls::crypto::Certificate, IdentityError> {
        let crypto = rtc_dtls::crypto_provider::providers::RingCrypto;
        let private_key = rtc_dtls::crypto::CryptoPrivateKey::from_key_pair(&self.key, &crypto)
            .map_err(|e| IdentityError::Generate(format!("rtc-dtls refused the key: {e}")))?;
        Ok(rtc_dtls::crypto::Certificate {
            certificate: vec![rustls_pki_types::CertificateDer::from(
                self.cert_der.clone(),
            )],
            private_key,
        })
    }

    /// The PKCS#8 DER of the private key (for signing tokens with the node key).
    pub fn key_pkcs8_der(&self) -> Arc<[u8]> {
        self.key.serialize_der().into()
    }
}

fn algorithm_name(alg: &rcgen::SignatureAlgorithm) -> &'static str {
    if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA P-384"
    } else if alg == &rcgen::PKCS_ED25519 {
        "Ed25519"
    } else if alg == &rcgen::PKCS_RSA_SHA256
        || alg == &rcgen::PKCS_RSA_SHA384
        || alg == &rcgen::PKCS_RSA_SHA512
    {
        "RSA"
    } else {
        "non-P-256"
    }
}

fn read_existing(path: &Path, dir: &Path) -> Result<String, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(IdentityError::Missing {
            path: path.to_owned(),
            dir: dir.to_owned(),
        }),
        Err(source) => Err(IdentityError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn create_private_dir(path: &Path) -> Result<(), IdentityError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| IdentityError::StateDir {
            path: path.to_owned(),
            source,
        })
}

fn lock(state_dir: &Path) -> Result<Flock<File>, IdentityError> {
    let path = state_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| IdentityError::Lock {
            path: path.clone(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| IdentityError::Lock {
        path,
        source: errno.into(),
    })
}

/// Makes a key and certificate and publishes them atomically as `identity/`.
/// Called with the lock held and no `identity/` present.
fn create(state_dir: &Path) -> Result<(), IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    let cert = self_signed(&key)?;

    let tmp = state_dir.join(TMP_DIR);
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| IdentityError::Write { path, source }
    };
    if tmp.exists() {
        // Left by a first start that was killed before the rename: never an identity.
        fs::remove_dir_all(&tmp).map_err(write_err(&tmp))?;
    }
    DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(write_err(&tmp))?;
    let key_path = tmp.join(KEY_FILE);
    write_synced(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(write_err(&key_path))?;
    let cert_path = tmp.join(CERT_FILE);
    write_synced(&cert_path, cert.pem().as_bytes(), 0o644).map_err(write_err(&cert_path))?;
    sync_dir(&tmp).map_err(write_err(&tmp))?;
    let dir = state_dir.join(IDENTITY_DIR);
    fs::rename(&tmp, &dir).map_err(write_err(&dir))?;
    sync_dir(state_dir).map_err(write_err(state_dir))?;
    Ok(())
}

/// A self-signed certificate valid from 1970 to 9999: routers often have no clock, and the pin
/// (the fingerprint) is what makes a peer trusted, never the validity period.
fn self_signed(key: &KeyPair) -> Result<rcgen::Certificate, IdentityError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "meshgate");
    params.distinguished_name = name;
    params.not_before = rcgen::date_time_ymd(1970, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    params
        .self_signed(key)
        .map_err(|e| IdentityError::Generate(e.to_string()))
}

fn write_synced(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}
