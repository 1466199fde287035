//! systemd's service notification protocol (sd_notify(3)), spoken directly: each message is one
//! datagram of `KEY=VALUE` lines sent to the unix socket named by `$NOTIFY_SOCKET`. No
//! libsystemd: the protocol is a datagram, and a static musl binary cannot count on the library.
//!
//! With `Type=notify` systemd waits for `READY=1` before it calls the unit started, and with
//! `WatchdogSec=` it sets `$WATCHDOG_USEC` and restarts us if `WATCHDOG=1` stops coming.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager, if we were started by one that listens.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Where `$NOTIFY_SOCKET` pointed, for error messages.
    name: String,
}

/// Why `$NOTIFY_SOCKET` or `$WATCHDOG_USEC` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "NOTIFY_SOCKET={0:?} is neither a socket path (/...) nor an abstract socket (@...); \
         unset it, or run under a service manager that sets it"
    )]
    BadSocket(String),
    #[error("NOTIFY_SOCKET={name:?}: {source}")]
    Socket { name: String, source: io::Error },
    #[error(
        "WATCHDOG_USEC={0:?} is not a positive number of microseconds; fix WatchdogSec= in the \
         unit, or unset it"
    )]
    BadWatchdog(String),
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; `Ok(None)` when it is unset or empty (not started
    /// by systemd, or a unit that is not `Type=notify`).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Self::connect(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket named as in `$NOTIFY_SOCKET`: a path, or `@name` for an
    /// abstract socket.
    pub fn connect(name: &OsStr) -> Result<Self, NotifyError> {
        let shown = name.to_string_lossy().into_owned();
        let bytes = name.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(name),
            // "@name" is the abstract socket "\0name" (sd_notify(3)).
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
            _ => return Err(NotifyError::BadSocket(shown)),
        }
        .map_err(|source| NotifyError::Socket {
            name: shown.clone(),
            source,
        })?;
        let socket = UnixDatagram::unbound()
            // Never block the main loop on a full service-manager queue: a lost datagram is
            // logged, a stalled loop would trip the watchdog.
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| NotifyError::Socket {
                name: shown.clone(),
                source,
            })?;
        Ok(Self {
            socket,
            addr,
            name: shown,
        })
    }

    /// Sends one message, e.g. `"READY=1\nSTATUS=serving"`.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(message.as_bytes(), &self.addr)?;
        if sent == message.len() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "short write to NOTIFY_SOCKET {} ({sent} of {} bytes)",
                self.name,
                message.len()
            )))
        }
    }
}

/// Sends `message` if there is a service manager to send it to; a failure is logged, never
/// fatal: the node serves its peers whether or not systemd hears about it.
pub fn notify(notifier: Option<&Notifier>, message: &str) {
    if let Some(n) = notifier
        && let Err(e) = n.send(message)
    {
        let first = message.lines().next().unwrap_or_default();
        tracing::warn!("sd_notify {first} to {} failed: {e}", n.name);
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends. `None` when there is no watchdog, or it is meant for another process.
pub fn watchdog_interval_from_env() -> Result<Option<Duration>, NotifyError> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The pure part of [`watchdog_interval_from_env`].
pub fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    // A WATCHDOG_PID that is not ours was inherited from a parent: the watchdog is not ours.
    if let Some(pid) = pid.filter(|p| !p.is_empty())
        && pid.trim().parse::<u32>().ok() != Some(my_pid)
    {
        return Ok(None);
    }
    match usec.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(
            Duration::from_micros(n / 2).max(Duration::from_millis(1)),
        )),
        _ => Err(NotifyError::BadWatchdog(usec.to_owned())),
    }
}

/// Waits for the next watchdog tick; forever when there is no watchdog (for `select!`).
pub async fn watchdog_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn watchdog_interval_is_half_and_respects_pid() {
        assert_eq!(watchdog_interval(None, None, 7).unwrap(), None);
        assert_eq!(watchdog_interval(Some(""), None, 7).unwrap(), None);
        assert_eq!(
            watchdog_interval(Some("200000"), None, 7).unwrap(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            watchdog_interval(Some("200000"), Some("7"), 7).unwrap(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            watchdog_interval(Some("200000"), Some("8"), 7).unwrap(),
            None
        );
        assert!(matches!(
            watchdog_interval(Some("0"), None, 7),
            Err(NotifyError::BadWatchdog(_))
        ));
        assert!(matches!(
            watchdog_interval(Some("soon"), None, 7),
            Err(NotifyError::BadWatchdog(_))
        ));
    }

    #[test]
    fn bad_socket_names_are_refused() {
        for name in ["relative/path", "vsock:2:1234"] {
            assert!(matches!(
                Notifier::connect(OsStr::new(name)),
                Err(NotifyError::BadSocket(_))
            ));
        }
        // Too long for sun_path: named as such, not as a bad form.
        let long = format!("/{}", "x".repeat(200));
        let err = Notifier::connect(OsStr::new(&long)).unwrap_err();
        assert!(matches!(err, NotifyError::Socket { .. }), "{err}");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.as_os_str()).unwrap();
        n.send("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("meshgate-sdnotify-unit-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::connect(OsStr::new(&format!("@{name}"))).unwrap();
        n.send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }
}
