//! The first-byte demultiplexer of the shared port (RFC 7983 §7, updated by RFC 9443 §3).
//!
//! A pure function over one datagram; the socket loop calls it inline for every datagram.

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// First byte 0-3: STUN (Binding, and the TURN methods).
    Stun,
    /// First byte 20-63: a DTLS record.
    Dtls,
    /// First byte 64-127: TURN ChannelData, channels 0x4000-0x7FFF.
    ///
    /// RFC 8656 §12 and RFC 9443 narrowed channels to 0x4000-0x4FFF (first byte 64-79) to give
    /// 80-127 to QUIC, but RFC 5766 clients, coturn's own `turnutils_uclient` among them, still
    /// pick numbers up to 0x7FFF. We speak no QUIC, so taking 80-127 costs nothing and keeps
    /// those clients working.
    ChannelData,
}

/// Why a datagram was dropped at the door. Each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Zero bytes.
    Empty,
    /// Its first byte names a kind, but it is shorter than that kind's fixed header.
    Truncated(Kind),
    /// 16-19: ZRTP. We speak no ZRTP.
    Zrtp,
    /// 128-191: RTP/RTCP. meshgate carries no media.
    Rtp,
    /// 192-255 (QUIC since RFC 9443) and the unassigned 4-15.
    Other,
}

/// Smallest well-formed datagram of each kind: the STUN header (RFC 8489 §5), the DTLS record
/// header (RFC 6347 §4.1), the ChannelData header (RFC 8656 §12.4).
pub const STUN_HEADER: usize = 20;
pub const DTLS_RECORD_HEADER: usize = 13;
pub const CHANNEL_DATA_HEADER: usize = 4;

/// Classifies one datagram by its first byte; checks only the length the kind's header needs.
pub fn classify(datagram: &[u8]) -> Result<Kind, Drop> {
    let Some(&first) = datagram.first() else {
        return Err(Drop::Empty);
    };
    let (kind, min) = match first {
        0..=3 => (Kind::Stun, STUN_HEADER),
        20..=63 => (Kind::Dtls, DTLS_RECORD_HEADER),
        64..=127 => (Kind::ChannelData, CHANNEL_DATA_HEADER),
        16..=19 => return Err(Drop::Zrtp),
        128..=191 => return Err(Drop::Rtp),
        _ => return Err(Drop::Other),
    };
    if datagram.len() < min {
        return Err(Drop::Truncated(kind));
    }
    Ok(kind)
}

/// Splits a ChannelData message (RFC 8656 §12.4) into its channel number and data; `None` if
/// the length field says more than the datagram holds. Over UDP the padding is optional, so
/// trailing bytes after the data are ignored.
pub fn channel_data(datagram: &[u8]) -> Option<(u16, &[u8])> {
    let header = datagram.get(..CHANNEL_DATA_HEADER)?;
    let number = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    Some((
        number,
        datagram.get(CHANNEL_DATA_HEADER..CHANNEL_DATA_HEADER + len)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table, written out from RFC 9443 §3 rather than derived from the code, with
    /// one deliberate difference: 80-127 (QUIC there) is ChannelData here, as in RFC 5766.
    fn expected(first: u8) -> Result<Kind, Drop> {
        match first {
            0..=3 => Ok(Kind::Stun),
            4..=15 => Err(Drop::Other),
            16..=19 => Err(Drop::Zrtp),
            20..=63 => Ok(Kind::Dtls),
            64..=79 => Ok(Kind::ChannelData),
            80..=127 => Ok(Kind::ChannelData),
            128..=191 => Err(Drop::Rtp),
            192..=255 => Err(Drop::Other),
        }
    }

    #[test]
    fn all_256_first_bytes_full_length() {
        for b in 0..=255u8 {
            let mut datagram = [0u8; 64];
            datagram[0] = b;
            assert_eq!(classify(&datagram), expected(b), "first byte {b}");
        }
    }

    #[test]
    fn all_256_first_bytes_short() {
        for b in 0..=255u8 {
            for len in 1..STUN_HEADER {
                let mut datagram = vec![0u8; len];
                datagram[0] = b;
                let want = match expected(b) {
                    Ok(Kind::Stun) => Err(Drop::Truncated(Kind::Stun)),
                    Ok(Kind::Dtls) if len < DTLS_RECORD_HEADER => Err(Drop::Truncated(Kind::Dtls)),
                    Ok(Kind::ChannelData) if len < CHANNEL_DATA_HEADER => {
                        Err(Drop::Truncated(Kind::ChannelData))
                    }
                    other => other,
                };
                assert_eq!(classify(&datagram), want, "first byte {b}, {len} bytes");
            }
        }
        assert_eq!(classify(&[]), Err(Drop::Empty));
    }

    #[test]
    fn channel_data_lengths() {
        assert_eq!(
            channel_data(&[0x40, 0, 0, 2, 9, 9]),
            Some((0x4000, &[9u8, 9][..]))
        );
        assert_eq!(
            channel_data(&[0x40, 0, 0, 2, 9, 9, 0, 0]),
            Some((0x4000, &[9u8, 9][..]))
        );
        assert_eq!(channel_data(&[0x40, 0, 0, 3, 9, 9]), None);
        assert_eq!(channel_data(&[0x40, 0, 0]), None);
        assert_eq!(channel_data(&[0x40, 1, 0, 0]), Some((0x4001, &[][..])));
    }
}
