//! Just enough DER to find a certificate's subjectPublicKeyInfo (RFC 5280 §4.1), so that a
//! cert.pem whose key is not key.pem is refused at start instead of failing every handshake.

/// One TLV: its tag and contents; `rest` follows it.
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    rest: &'a [u8],
}

fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let len = input[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &input[n..])
    };
    if input.len() < len {
        return None;
    }
    Some(Tlv {
        tag,
        contents: &input[..len],
        rest: &input[len..],
    })
}

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const CONTEXT_0: u8 = 0xa0;

/// The subjectPublicKey bits of an X.509 certificate (for EC keys: the SEC1 point), or `None`
/// if `cert_der` is not shaped like a certificate.
pub(crate) fn certificate_public_key(cert_der: &[u8]) -> Option<&[u8]> {
    let cert = tlv(cert_der).filter(|t| t.tag == SEQUENCE && t.rest.is_empty())?;
    let tbs = tlv(cert.contents).filter(|t| t.tag == SEQUENCE)?;
    let mut fields = tbs.contents;
    let mut field = tlv(fields)?;
    if field.tag == CONTEXT_0 {
        // explicit version
        fields = field.rest;
        field = tlv(fields)?;
    }
    // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for _ in 0..5 {
        fields = field.rest;
        field = tlv(fields)?;
    }
    let spki = field;
    if spki.tag != SEQUENCE {
        return None;
    }
    let algorithm = tlv(spki.contents).filter(|t| t.tag == SEQUENCE)?;
    let key = tlv(algorithm.rest).filter(|t| t.tag == BIT_STRING)?;
    // A BIT STRING starts with its count of unused bits, 0 for keys.
    match key.contents.split_first() {
        Some((0, bits)) => Some(bits),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_key_of_an_openssl_certificate() {
        let cert = pem::parse(include_str!("../../tests/data/test-cert.pem")).unwrap();
        let key = rcgen::KeyPair::from_pem(include_str!("../../tests/data/test-key.pem")).unwrap();
        assert_eq!(
            certificate_public_key(cert.contents()),
            Some(key.public_key_raw())
        );
    }

    #[test]
    fn every_truncation_is_none_not_a_panic() {
        let cert = pem::parse(include_str!("../../tests/data/test-cert.pem")).unwrap();
        let der = cert.contents();
        for n in 0..der.len() {
            assert_eq!(
                certificate_public_key(&der[..n]),
                None,
                "prefix of {n} bytes"
            );
        }
        let mut flipped = der.to_vec();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = certificate_public_key(&flipped);
            flipped[i] ^= 0xff;
        }
    }
}
