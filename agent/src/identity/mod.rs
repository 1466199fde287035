//! Identity and addressing (DESIGN.md §3).
//!
//! SHA-256 and ECDSA come from `ring`, which rtc-dtls and rcgen already link: the p256 and
//! sha2 crates named by the design card would be a second copy of the same primitives in a
//! binary with a size budget.

mod der;
mod node_id;
mod store;

pub use node_id::{
    ID_TEXT_LEN, NodeId, ParseNodeIdError, SHORT_ID_LEN, base32_decode, base32_encode,
};
pub use store::{CERT_FILE, IDENTITY_DIR, Identity, IdentityError, KEY_FILE};

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_load_creates_later_loads_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (a, created) = Identity::load_or_create(&state).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_create(&state).unwrap();
        assert!(!created);
        assert_eq!(a.id(), b.id());
        assert_eq!(Identity::load(&state).unwrap().id(), a.id());
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(IDENTITY_DIR).join(KEY_FILE)), 0o600);
        assert_eq!(a.id(), NodeId::of_certificate(a.cert_der()));
        let cert = a.dtls_certificate().unwrap();
        assert_eq!(cert.certificate[0].as_ref(), a.cert_der());
    }

    #[test]
    fn openssl_made_identity_loads() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join(IDENTITY_DIR);
        fs::create_dir(&id_dir).unwrap();
        fs::write(
            id_dir.join(KEY_FILE),
            include_str!("../../tests/data/test-key.pem"),
        )
        .unwrap();
        fs::write(
            id_dir.join(CERT_FILE),
            include_str!("../../tests/data/test-cert.pem"),
        )
        .unwrap();
        let (id, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(
            id.id().to_string(),
            "dtshbyysvkigbn4xe7flomaf7is5huagsq3qc4dngfdspc6q6jdq"
        );
    }

    fn broken(key: &[u8], cert: Option<&[u8]>) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join(IDENTITY_DIR);
        fs::create_dir(&id_dir).unwrap();
        fs::write(id_dir.join(KEY_FILE), key).unwrap();
        if let Some(cert) = cert {
            fs::write(id_dir.join(CERT_FILE), cert).unwrap();
        }
        let err = Identity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        // Never replaced: the broken files are still exactly what they were.
        assert_eq!(fs::read(id_dir.join(KEY_FILE)).unwrap(), key);
        (dir, err)
    }

    #[test]
    fn bad_identities_are_named_errors_never_replaced() {
        let key = include_bytes!("../../tests/data/test-key.pem");
        let cert = include_bytes!("../../tests/data/test-cert.pem");
        let p384 = include_bytes!("../../tests/data/p384-key.pem");

        let (_d, err) = broken(&key[..key.len() / 2], Some(cert));
        assert!(err.contains("key.pem is not a usable private key"), "{err}");
        assert!(err.contains("move"), "{err}");

        let (_d, err) = broken(p384, Some(cert));
        assert!(err.contains("ECDSA P-384"), "{err}");

        let (_d, err) = broken(key, Some(&cert[..cert.len() - 100]));
        assert!(
            err.contains("cert.pem is not a usable certificate"),
            "{err}"
        );

        let (_d, err) = broken(key, None);
        assert!(err.contains("cert.pem is missing"), "{err}");

        // A valid key with somebody else's certificate.
        let other = tempfile::tempdir().unwrap();
        let (_, _) = Identity::load_or_create(other.path()).unwrap();
        let other_cert = fs::read(other.path().join(IDENTITY_DIR).join(CERT_FILE)).unwrap();
        let (_d, err) = broken(key, Some(&other_cert));
        assert!(err.contains("its public key is not the one in"), "{err}");
    }

    #[test]
    fn leftover_tmp_dir_from_a_killed_start_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("identity.tmp");
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join(KEY_FILE), "-----BEGIN PRIVATE KEY-----\nMIG").unwrap();
        let (_, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        assert!(!tmp.exists());
    }

    #[test]
    fn concurrent_first_starts_make_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let ids: Vec<NodeId> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Identity::load_or_create(&path).unwrap().0.id()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    }
}
