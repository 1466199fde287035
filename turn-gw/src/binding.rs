//! STUN Binding (RFC 8489 §6.3): the reflexive address, and the same for RFC 3489 clients.

use std::net::SocketAddr;

use crate::stun::{self, Builder, Class, Message};

const SOFTWARE: &[u8] = concat!("meshgate ", env!("CARGO_PKG_VERSION")).as_bytes();

/// The Binding success response to `request` from `from`. FINGERPRINT is added when the
/// request carried one (RFC 8489 §7.3.3).
pub fn respond(request: &Message<'_>, from: SocketAddr) -> Vec<u8> {
    let b = Builder::response(request, Class::Success)
        .xor_address(stun::XOR_MAPPED_ADDRESS, from)
        .mapped_address(from)
        .attr(stun::SOFTWARE, SOFTWARE);
    if request.has_fingerprint() {
        b.fingerprint().finish()
    } else {
        b.finish()
    }
}

/// An RFC 3489 ("classic") Binding request has no magic cookie and a 16-byte transaction ID;
/// the answer carries MAPPED-ADDRESS only. `None` for anything else.
pub fn respond_classic(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let header = datagram.get(..stun::HEADER_LEN)?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header[0..2] != [0x00, 0x01] || datagram.len() != stun::HEADER_LEN + len {
        return None;
    }
    let mut out = Vec::with_capacity(stun::HEADER_LEN + 24);
    out.extend_from_slice(&[0x01, 0x01, 0, 0]);
    out.extend_from_slice(&header[4..20]);
    // MAPPED-ADDRESS: reserved, family, port, address.
    let (family, ip): (u8, Vec<u8>) = match from.ip() {
        std::net::IpAddr::V4(v4) => (1, v4.octets().to_vec()),
        std::net::IpAddr::V6(v6) => (2, v6.octets().to_vec()),
    };
    let value_len = 4 + ip.len();
    out.extend_from_slice(&stun::MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&from.port().to_be_bytes());
    out.extend_from_slice(&ip);
    let body = (out.len() - stun::HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&body.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_response_carries_the_reflexive_address() {
        let req = Builder::new(stun::BINDING, Class::Request, [3; 12])
            .fingerprint()
            .finish();
        let req = Message::parse(&req).unwrap();
        let from: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let raw = respond(&req, from);
        let resp = Message::parse(&raw).unwrap();
        assert_eq!((resp.method, resp.class), (stun::BINDING, Class::Success));
        assert_eq!(resp.transaction_id, [3; 12]);
        assert_eq!(resp.xor_address(stun::XOR_MAPPED_ADDRESS), Ok(Some(from)));
        assert!(resp.has_fingerprint());
    }

    #[test]
    fn classic_binding() {
        let mut req = vec![0x00, 0x01, 0x00, 0x00];
        req.extend_from_slice(&[9u8; 16]);
        let from: SocketAddr = "192.0.2.5:1234".parse().unwrap();
        let resp = respond_classic(&req, from).unwrap();
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(&resp[4..20], &[9u8; 16]);
        assert_eq!(&resp[20..22], &[0x00, 0x01]);
        assert_eq!(&resp[26..28], &1234u16.to_be_bytes());
        assert_eq!(&resp[28..32], &[192, 0, 2, 5]);
        assert_eq!(respond_classic(&req[..19], from), None);
        req[1] = 0x03;
        assert_eq!(respond_classic(&req, from), None);
    }
}
