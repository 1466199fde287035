//! Configuration (DESIGN.md §9, names in §11).
//!
//! Two layers: [`RawConfig`] is exactly the TOML (every key optional, unknown keys refused), and
//! [`Config`] is the validated, typed value the rest of the agent uses. Every error names the key
//! it is about and says what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use turn_gw::Cidr;

use crate::identity::{NodeId, SHORT_ID_LEN};

/// The configuration a node runs on when it is given none. `meshgate config default` prints it.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Where `meshgate run` looks for a config file when `--config` is not given.
pub const SYSTEM_CONFIG: &str = "/etc/meshgate/meshgate.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Node,
    Gateway,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Node => "node",
            Role::Gateway => "gateway",
        })
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub state_dir: Option<PathBuf>,
    pub mesh: String,
    pub role: Role,
    /// The shared UDP port's addresses: one socket (and task) each.
    pub listen: Vec<SocketAddr>,
    /// `listen` was not given: the dual-stack default, where a host without IPv6 serves IPv4 only.
    pub listen_default: bool,
    /// The local API's address; `None` when off (`api = "off"`).
    pub api: Option<SocketAddr>,
    /// Let `api` be a non-loopback address (the API has no authentication).
    pub api_allow_remote: bool,
    /// HTTP signaling; `None` when off (the default for nodes).
    pub signal: Option<SocketAddr>,
    /// A tracing filter directive such as `info` or `meshgate=debug,turn=warn`.
    pub log: String,
    /// How far peers' clocks may be off ours when checking time-limited credentials (REST TURN
    /// usernames, JWTs): routers often have no battery-backed clock (DESIGN.md §3).
    pub clock_skew_s: u64,
    pub admission: Admission,
    pub turn: Turn,
    pub discovery: Discovery,
    pub services: Vec<Service>,
    pub forwards: Vec<Forward>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Admission {
    /// Empty: any node of this mesh.
    pub allow: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub enabled: bool,
    pub realm: String,
    pub users: BTreeMap<String, String>,
    /// REST-style shared secret (coturn's `use-auth-secret`); `None` when off.
    pub secret: Option<String>,
    pub relay_allow: Vec<Cidr>,
    pub relay_ports: RangeInclusive<u16>,
    pub max_allocations: u32,
    pub max_allocations_per_user: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub mdns: bool,
    /// Empty: every multicast-capable interface.
    pub interfaces: Vec<String>,
    pub peers: Vec<StaticPeer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticPeer {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// A local target this node lets peers reach by name (`svc:NAME`).
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub target: HostPort,
}

/// A local TCP listener whose connections are carried to `target` on `peer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub peer: PeerRef,
    pub target: Target,
}

/// How the config names a peer: its full ID, or the 8-character short form for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRef {
    Id(NodeId),
    Short(String),
}

impl FromStr for PeerRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() == SHORT_ID_LEN {
            if s.chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
            {
                return Ok(PeerRef::Short(s.to_owned()));
            }
            return Err(format!(
                "{s:?} is not a short node ID ({SHORT_ID_LEN} characters a-z, 2-7)"
            ));
        }
        s.parse::<NodeId>()
            .map(PeerRef::Id)
            .map_err(|e| format!("{s:?} is neither a node ID nor a short ID: {e}"))
    }
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRef::Id(id) => id.fmt(f),
            PeerRef::Short(short) => f.write_str(short),
        }
    }
}

/// What a stream asks the far side to connect to (DESIGN.md §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `svc:NAME`: a `[[service]]` of the peer.
    Service(String),
    /// `host:port`: allowed by the peer only if its config lists it.
    HostPort(HostPort),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("svc:") {
            Some(name) => {
                check_service_name(name)?;
                Ok(Target::Service(name.to_owned()))
            }
            None => s.parse().map(Target::HostPort),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Service(name) => write!(f, "svc:{name}"),
            Target::HostPort(hp) => hp.fmt(f),
        }
    }
}

/// `host:port` with a DNS name, an IPv4 address or a bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected host:port, e.g. 127.0.0.1:22 or [::1]:22 or printer.lan:631";
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port; {expected}"));
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{port:?} in {s:?} is not a TCP port (1-65535)"))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| format!("{s:?}: unclosed '['; {expected}"))?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{inner:?} in {s:?} is not an IPv6 address"))?;
            inner
        } else {
            let valid = !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
            if !valid {
                return Err(format!("{host:?} in {s:?} is not a host name; {expected}"));
            }
            host
        };
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn check_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a service name (1-63 characters: a-z, 0-9, '-', '_')"
        ))
    }
}

/// A configuration error: the key it is about, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{key}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// Dotted path such as `turn.relay_ports` or `forward[1].peer`; empty for syntax errors.
    pub key: String,
    pub message: String,
    pub line: Option<usize>,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            line: None,
        }
    }
}

/// An error from reading a config file: which file, then the [`ConfigError`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("config {}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: {error}", path.display())]
    Invalid { path: PathBuf, error: ConfigError },
}

// ---- The TOML as written ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    mesh: Option<String>,
    role: Option<String>,
    listen: Option<Listen>,
    api: Option<String>,
    api_allow_remote: Option<bool>,
    signal: Option<String>,
    log: Option<String>,
    clock_skew: Option<u64>,
    admission: RawAdmission,
    turn: RawTurn,
    discovery: RawDiscovery,
    service: Vec<RawService>,
    forward: Vec<RawForward>,
}

/// `listen = "addr"` or `listen = ["addr", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Listen {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmission {
    allow: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTurn {
    enabled: Option<bool>,
    realm: Option<String>,
    users: BTreeMap<String, String>,
    secret: Option<String>,
    relay_allow: Vec<String>,
    relay_ports: Option<String>,
    max_allocations: Option<u32>,
    max_allocations_per_user: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDiscovery {
    mdns: Option<bool>,
    interfaces: Vec<String>,
    peers: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    id: String,
    addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    target: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    listen: String,
    peer: String,
    target: String,
}

// ---- Parsing and validation -------------------------------------------------------------------

impl Config {
    /// The embedded default.
    pub fn embedded_default() -> Self {
        // The default file is tested to parse; failing here is a build defect, not bad input.
        #[allow(clippy::expect_used)]
        Self::parse(DEFAULT_TOML).expect("embedded default.toml is valid")
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw = parse_raw(text)?;
        validate(raw)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|error| LoadError::Invalid {
            path: path.to_owned(),
            error,
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| ConfigError {
        key: "syntax".into(),
        message: e.message().trim().to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
    })?;
    serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let message = inner.message().trim().to_owned();
        let line = inner.span().map(|s| line_of(text, s.start));
        let (key, message) = match message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split_once('`'))
        {
            Some((field, rest)) => {
                // serde_path_to_error has usually recorded the key itself already.
                let key = if path == "." {
                    field.to_owned()
                } else if path == field || path.ends_with(&format!(".{field}")) {
                    path
                } else {
                    format!("{path}.{field}")
                };
                let rest = rest.trim_start_matches(',').trim();
                (key, format!("unknown key ({rest})"))
            }
            None => (path, message),
        };
        ConfigError { key, message, line }
    })
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{value:?} is not an address:port (e.g. 0.0.0.0:3478 or [::]:3478)"),
        )
    })
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mesh = raw.mesh.unwrap_or_else(|| "meshgate".into());
    let mesh_ok = !mesh.is_empty()
        && mesh.len() <= 63
        && mesh
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !mesh_ok {
        return Err(ConfigError::new(
            "mesh",
            format!(
                "{mesh:?} is not a mesh name (1-63 characters: letters, digits, '-', '_', '.')"
            ),
        ));
    }

    let role = match raw.role.as_deref().unwrap_or("node") {
        "node" => Role::Node,
        "gateway" => Role::Gateway,
        other => {
            return Err(ConfigError::new(
                "role",
                format!("{other:?} is not a role (expected \"node\" or \"gateway\")"),
            ));
        }
    };

    let listen_default = raw.listen.is_none();
    let listen = match raw.listen {
        None => vec![
            parse_addr("listen", "0.0.0.0:3478")?,
            parse_addr("listen", "[::]:3478")?,
        ],
        Some(Listen::One(a)) => vec![parse_addr("listen", &a)?],
        Some(Listen::Many(list)) => {
            let addrs = list
                .iter()
                .enumerate()
                .map(|(i, a)| parse_addr(&format!("listen[{i}]"), a))
                .collect::<Result<Vec<_>, _>>()?;
            if addrs.is_empty() {
                return Err(ConfigError::new(
                    "listen",
                    "needs at least one address:port",
                ));
            }
            let mut seen = BTreeSet::new();
            if let Some(dup) = addrs.iter().find(|a| !seen.insert(**a)) {
                return Err(ConfigError::new("listen", format!("{dup} is listed twice")));
            }
            addrs
        }
    };
    let api_allow_remote = raw.api_allow_remote.unwrap_or(false);
    let api = match raw.api.as_deref() {
        Some("" | "off") => None,
        value => Some(parse_addr("api", value.unwrap_or("127.0.0.1:42000"))?),
    };
    if let Some(api) = api.filter(|a| !a.ip().is_loopback() && !api_allow_remote) {
        return Err(ConfigError::new(
            "api",
            format!(
                "{api} is not a loopback address; the local API has no authentication: set \
                 api_allow_remote = true to bind it anyway"
            ),
        ));
    }
    let signal = match raw.signal.as_deref() {
        None if role == Role::Gateway => Some(parse_addr("signal", "0.0.0.0:8080")?),
        None | Some("" | "off") => None,
        Some(s) => Some(parse_addr("signal", s)?),
    };

    let log = raw.log.unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| {
        ConfigError::new(
            "log",
            format!("{log:?} is not a log filter (e.g. \"info\", \"debug\", \"meshgate=debug,warn\"): {e}"),
        )
    })?;

    let allow = raw
        .admission
        .allow
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<NodeId>().map_err(|e| {
                ConfigError::new(format!("admission.allow[{i}]"), format!("{s:?}: {e}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let turn = validate_turn(raw.turn, role)?;
    let discovery = validate_discovery(raw.discovery)?;

    let mut names = BTreeSet::new();
    let mut services = Vec::new();
    for (i, s) in raw.service.into_iter().enumerate() {
        check_service_name(&s.name)
            .map_err(|m| ConfigError::new(format!("service[{i}].name"), m))?;
        if !names.insert(s.name.clone()) {
            return Err(ConfigError::new(
                format!("service[{i}].name"),
                format!("service {:?} is defined twice", s.name),
            ));
        }
        let target = s
            .target
            .parse()
            .map_err(|m| ConfigError::new(format!("service[{i}].target"), m))?;
        services.push(Service {
            name: s.name,
            target,
        });
    }

    let mut listens = BTreeSet::new();
    let mut forwards = Vec::new();
    for (i, f) in raw.forward.into_iter().enumerate() {
        let listen = parse_addr(&format!("forward[{i}].listen"), &f.listen)?;
        if !listens.insert(listen) {
            return Err(ConfigError::new(
                format!("forward[{i}].listen"),
                format!("{listen} is used by another [[forward]]"),
            ));
        }
        let peer = f
            .peer
            .parse()
            .map_err(|m| ConfigError::new(format!("forward[{i}].peer"), m))?;
        let target = f.target.parse().map_err(|m: String| {
            ConfigError::new(
                format!("forward[{i}].target"),
                format!("{m} (or svc:NAME for a service of the peer)"),
            )
        })?;
        forwards.push(Forward {
            listen,
            peer,
            target,
        });
    }

    Ok(Config {
        state_dir: raw.state_dir,
        mesh,
        role,
        listen,
        listen_default,
        api,
        api_allow_remote,
        signal,
        log,
        clock_skew_s: raw.clock_skew.unwrap_or(300),
        admission: Admission { allow },
        turn,
        discovery,
        services,
        forwards,
    })
}

fn validate_turn(raw: RawTurn, role: Role) -> Result<Turn, ConfigError> {
    let realm = raw.realm.unwrap_or_else(|| "meshgate".into());
    // REALM is a quoted-string of fewer than 128 characters (RFC 8489 §14.9).
    if realm.is_empty() || realm.len() >= 128 || realm.chars().any(|c| c.is_control() || c == '"') {
        return Err(ConfigError::new(
            "turn.realm",
            "a realm is 1-127 characters, without quotes or control characters",
        ));
    }
    for (name, password) in &raw.users {
        if name.is_empty()
            || name.len() > 255
            || name.contains(':')
            || name.chars().any(char::is_control)
        {
            return Err(ConfigError::new(
                format!("turn.users.{name}"),
                "a user name is 1-255 characters without ':' or control characters",
            ));
        }
        if password.is_empty() {
            return Err(ConfigError::new(
                format!("turn.users.{name}"),
                "the password is empty",
            ));
        }
    }
    let secret = raw.secret.filter(|s| !s.is_empty());
    let relay_allow = raw
        .relay_allow
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Cidr>()
                .map_err(|e| ConfigError::new(format!("turn.relay_allow[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ports = raw.relay_ports.unwrap_or_else(|| "49152-65535".into());
    let relay_ports = parse_port_range(&ports).ok_or_else(|| {
        ConfigError::new(
            "turn.relay_ports",
            format!("{ports:?} is not a port range (expected \"LOW-HIGH\" with 1 <= LOW <= HIGH <= 65535)"),
        )
    })?;
    let max_allocations = raw.max_allocations.unwrap_or(1000);
    if max_allocations == 0 {
        return Err(ConfigError::new(
            "turn.max_allocations",
            "must be at least 1 (set turn.enabled = false to turn TURN off)",
        ));
    }
    let max_allocations_per_user = raw.max_allocations_per_user.unwrap_or(100);
    if max_allocations_per_user == 0 {
        return Err(ConfigError::new(
            "turn.max_allocations_per_user",
            "must be at least 1",
        ));
    }
    Ok(Turn {
        enabled: raw.enabled.unwrap_or(role == Role::Gateway),
        realm,
        users: raw.users,
        secret,
        relay_allow,
        relay_ports,
        max_allocations,
        max_allocations_per_user,
    })
}

fn parse_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    (lo >= 1 && lo <= hi).then_some(lo..=hi)
}

fn validate_discovery(raw: RawDiscovery) -> Result<Discovery, ConfigError> {
    for (i, name) in raw.interfaces.iter().enumerate() {
        // IFNAMSIZ is 16 with the NUL.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(ConfigError::new(
                format!("discovery.interfaces[{i}]"),
                format!("{name:?} is not a network interface name (1-15 characters)"),
            ));
        }
    }
    let mut peers = Vec::new();
    for (i, p) in raw.peers.into_iter().enumerate() {
        let id = p.id.parse::<NodeId>().map_err(|e| {
            ConfigError::new(
                format!("discovery.peers[{i}].id"),
                format!("{:?}: {e}", p.id),
            )
        })?;
        let addr = parse_addr(&format!("discovery.peers[{i}].addr"), &p.addr)?;
        peers.push(StaticPeer { id, addr });
    }
    Ok(Discovery {
        mdns: raw.mdns.unwrap_or(true),
        interfaces: raw.interfaces,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "dtshbyysvkigbn4xe7flomaf7is5huagsq3qc4dngfdspc6q6jdq";

    #[test]
    fn empty_and_embedded_default_agree() {
        let empty = Config::parse("").unwrap();
        assert_eq!(empty, Config::embedded_default());
        assert_eq!(empty.role, Role::Node);
        assert_eq!(
            empty.listen,
            [
                "0.0.0.0:3478".parse::<SocketAddr>().unwrap(),
                "[::]:3478".parse().unwrap()
            ]
        );
        assert!(empty.listen_default);
        let both = Config::parse("listen = [\"127.0.0.1:1\", \"[::1]:1\"]").unwrap();
        assert_eq!(both.listen.len(), 2);
        assert!(!both.listen_default);
        assert_eq!(
            empty.api,
            Some("127.0.0.1:42000".parse::<SocketAddr>().unwrap())
        );
        assert!(!empty.api_allow_remote);
        assert_eq!(empty.signal, None);
        assert!(!empty.turn.enabled);
        assert!(empty.discovery.mdns);
        assert_eq!(empty.turn.relay_ports, 49152..=65535);
    }

    #[test]
    fn gateway_defaults_turn_and_signal_on() {
        let c = Config::parse("role = \"gateway\"").unwrap();
        assert!(c.turn.enabled);
        assert_eq!(
            c.signal,
            Some("0.0.0.0:8080".parse::<SocketAddr>().unwrap())
        );
        let c =
            Config::parse("role = \"gateway\"\nsignal = \"off\"\n[turn]\nenabled = false").unwrap();
        assert!(!c.turn.enabled);
        assert_eq!(c.signal, None);
    }

    #[test]
    fn design_example_parses() {
        let text = format!(
            r#"
state_dir = "/var/lib/meshgate"
mesh = "meshgate"
role = "node"
listen = "0.0.0.0:3478"
api = "127.0.0.1:42000"
signal = "0.0.0.0:8080"
[admission]
allow = ["{ID}"]
[turn]
enabled = true
realm = "meshgate"
users = {{ alice = "s3cret" }}
secret = ""
relay_allow = ["192.168.0.0/16", "fd00::/8"]
relay_ports = "49152-65535"
max_allocations = 1000
[discovery]
mdns = true
interfaces = ["eth0"]
peers = [ {{ id = "{ID}", addr = "192.0.2.10:3478" }} ]
[[service]]
name = "ssh"
target = "127.0.0.1:22"
[[forward]]
listen = "127.0.0.1:2222"
peer = "{short}"
target = "svc:ssh"
[[forward]]
listen = "[::1]:8080"
peer = "{ID}"
target = "[::1]:80"
"#,
            short = &ID[..8]
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.admission.allow[0].to_string(), ID);
        assert_eq!(c.turn.users["alice"], "s3cret");
        assert_eq!(c.turn.secret, None);
        assert_eq!(
            c.discovery.peers[0].addr,
            "192.0.2.10:3478".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.services[0].target.to_string(), "127.0.0.1:22");
        assert_eq!(c.forwards[0].peer, PeerRef::Short(ID[..8].into()));
        assert_eq!(c.forwards[0].target, Target::Service("ssh".into()));
        assert_eq!(c.forwards[1].target.to_string(), "[::1]:80");
    }

    /// Each bad value is refused with an error naming its key.
    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("role = \"router\"", "role"),
            ("mesh = \"\"", "mesh"),
            ("mesh = \"a b\"", "mesh"),
            ("listen = \"0.0.0.0\"", "listen"),
            ("listen = \"0.0.0.0:70000\"", "listen"),
            ("api = \"0.0.0.0:42000\"", "api"),
            ("signal = \"nowhere\"", "signal"),
            ("log = \"[[\"", "log"),
            ("clock_skew = -5", "clock_skew"),
            ("listen = 3478", "listen"),
            ("listen = []", "listen"),
            ("listen = [\"127.0.0.1:1\", \"bad\"]", "listen[1]"),
            ("listen = [\"127.0.0.1:1\", \"127.0.0.1:1\"]", "listen"),
            ("[admission]\nallow = [\"abc\"]", "admission.allow[0]"),
            ("[turn]\nenabled = \"yes\"", "turn.enabled"),
            ("[turn]\nrealm = \"\"", "turn.realm"),
            ("[turn]\nusers = { \"a:b\" = \"x\" }", "turn.users.a:b"),
            ("[turn]\nusers = { bob = \"\" }", "turn.users.bob"),
            (
                "[turn]\nrelay_allow = [\"10.0.0.0/33\"]",
                "turn.relay_allow[0]",
            ),
            ("[turn]\nrelay_ports = \"70000-80000\"", "turn.relay_ports"),
            ("[turn]\nrelay_ports = \"5000-4000\"", "turn.relay_ports"),
            ("[turn]\nmax_allocations = 0", "turn.max_allocations"),
            ("[turn]\nmax_allocations = -1", "turn.max_allocations"),
            (
                "[turn]\nmax_allocations_per_user = 0",
                "turn.max_allocations_per_user",
            ),
            ("[discovery]\nmdns = 1", "discovery.mdns"),
            (
                "[discovery]\ninterfaces = [\"\"]",
                "discovery.interfaces[0]",
            ),
            (
                "[discovery]\npeers = [{ id = \"x\", addr = \"1.2.3.4:1\" }]",
                "discovery.peers[0].id",
            ),
            (
                &format!("[discovery]\npeers = [{{ id = \"{ID}\", addr = \"1.2.3.4\" }}]"),
                "discovery.peers[0].addr",
            ),
            (
                "[[service]]\nname = \"Bad Name\"\ntarget = \"127.0.0.1:22\"",
                "service[0].name",
            ),
            (
                "[[service]]\nname = \"ssh\"\ntarget = \"127.0.0.1:0\"",
                "service[0].target",
            ),
            ("[[service]]\nname = \"ssh\"", "service[0]"),
            (
                "[[service]]\nname = \"a\"\ntarget = \"h:1\"\n[[service]]\nname = \"a\"\ntarget = \"h:2\"",
                "service[1].name",
            ),
            (
                &format!(
                    "[[forward]]\nlisten = \"127.0.0.1\"\npeer = \"{ID}\"\ntarget = \"svc:ssh\""
                ),
                "forward[0].listen",
            ),
            (
                "[[forward]]\nlisten = \"127.0.0.1:1\"\npeer = \"nobody\"\ntarget = \"svc:ssh\"",
                "forward[0].peer",
            ),
            (
                &format!(
                    "[[forward]]\nlisten = \"127.0.0.1:1\"\npeer = \"{ID}\"\ntarget = \"ssh\""
                ),
                "forward[0].target",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(text).expect_err(text);
            assert_eq!(err.key, *key, "{text}: {err}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn the_api_is_loopback_unless_forced_and_can_be_off() {
        let err = Config::parse("api = \"0.0.0.0:42000\"").unwrap_err();
        assert_eq!(err.key, "api");
        assert!(err.message.contains("api_allow_remote = true"), "{err}");
        assert!(Config::parse("api = \"[::]:42000\"").is_err());
        let c = Config::parse("api = \"0.0.0.0:42000\"\napi_allow_remote = true").unwrap();
        assert_eq!(c.api, Some("0.0.0.0:42000".parse::<SocketAddr>().unwrap()));
        let c = Config::parse("api = \"[::1]:42000\"").unwrap();
        assert_eq!(c.api, Some("[::1]:42000".parse::<SocketAddr>().unwrap()));
        assert_eq!(Config::parse("api = \"off\"").unwrap().api, None);
        assert_eq!(
            Config::parse("api_allow_remote = 1").unwrap_err().key,
            "api_allow_remote"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_section() {
        let err = Config::parse("listne = \"0.0.0.0:1\"").unwrap_err();
        assert_eq!(err.key, "listne");
        assert!(err.message.starts_with("unknown key"), "{err}");
        assert!(err.message.contains("listen"), "{err}");
        assert_eq!(err.line, Some(1));
        let err = Config::parse("\n[turn]\nrelay_deny = []").unwrap_err();
        assert_eq!(err.key, "turn.relay_deny");
        assert_eq!(err.line, Some(3));
        let err = Config::parse(
            "[[forward]]\nlisten = \"127.0.0.1:1\"\npeer = \"x\"\ntarget = \"y\"\nport = 1",
        )
        .unwrap_err();
        assert_eq!(err.key, "forward[0].port");
        let err = Config::parse("[nope]\n").unwrap_err();
        assert_eq!(err.key, "nope");
    }

    #[test]
    fn syntax_errors_give_a_line() {
        let err = Config::parse("role = \"node\"\nlisten = \n").unwrap_err();
        assert_eq!(err.key, "syntax");
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().starts_with("line 2: syntax: "), "{err}");
    }

    #[test]
    fn targets_and_host_ports() {
        assert_eq!(
            "svc:ssh".parse::<Target>(),
            Ok(Target::Service("ssh".into()))
        );
        assert!("svc:".parse::<Target>().is_err());
        let hp: HostPort = "printer.lan:631".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("printer.lan", 631));
        let hp: HostPort = "[fd00::1]:22".parse().unwrap();
        assert_eq!(hp.host, "fd00::1");
        assert_eq!(hp.to_string(), "[fd00::1]:22");
        assert!("fd00::1:22".parse::<HostPort>().is_err());
        assert!("[fd00::1:22".parse::<HostPort>().is_err());
        assert!(":22".parse::<HostPort>().is_err());
        assert!("host:".parse::<HostPort>().is_err());
    }
}
