//! The command line (DESIGN.md §11). Exit status: 0 success, 2 usage or config error, 1 otherwise.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_TOML, LoadError, PeerRef, SYSTEM_CONFIG, Target};
use crate::identity::Identity;

#[derive(Debug, Parser)]
#[command(
    name = "meshgate",
    version,
    about = "Mesh gateway agent: finds its peers over mDNS, pins them by certificate, carries TCP \
             between them over DTLS+SCTP, and serves STUN/TURN on the same UDP port."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (with no config: the embedded default, or /etc/meshgate/meshgate.toml if present).
    Run {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Print this node's identity (making it on first use).
    Id {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// JSON with keys id, short_id, ipv6, fingerprint.
        #[arg(long)]
        json: bool,
    },
    /// Show the running node's status (through its local API).
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the running node's peers (through its local API).
    Peers {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the running node's sessions (through its local API).
    Sessions {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Pipe stdin/stdout through a stream to TARGET on PEER (usable as ssh ProxyCommand).
    Connect {
        /// Node ID or 8-character short ID.
        peer: String,
        /// svc:NAME or host:port.
        target: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// Config file to take the local API address from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Local API address (default: from the config, else 127.0.0.1:42000).
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate FILE; exit 0 if it is valid, 2 with the key at fault if not.
    Check { file: PathBuf },
    /// Print the embedded default configuration.
    Default,
}

/// A failure and its exit status.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or configuration: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Runtime(String),
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Self {
        Failure::Usage(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap exits 0 for --help/--version and 2 for usage errors.
        Err(e) => e.exit(),
    };
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("meshgate: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("meshgate: {msg}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run { config, state_dir } => {
            let config_path = config;
            let (config, source) = load_config(config_path.as_deref())?;
            let log = init_tracing(&config.log);
            tracing::info!("configuration: {source}");
            let state_dir = resolve_state_dir(state_dir.as_deref(), &config)?;
            crate::run::run(config, state_dir, config_path, log)
                .map_err(|e| Failure::Runtime(e.to_string()))
        }
        Command::Id {
            config,
            state_dir,
            json,
        } => {
            let (config, _) = load_config(config.as_deref())?;
            let state_dir = resolve_state_dir(state_dir.as_deref(), &config)?;
            let (identity, _) = Identity::load_or_create(&state_dir)
                .map_err(|e| Failure::Runtime(format!("identity: {e}")))?;
            print_id(&identity, json);
            Ok(())
        }
        Command::Status { api, json } => show(&api, "/status", json, print_status),
        Command::Peers { api, json } => show(&api, "/peers", json, print_peers),
        Command::Sessions { api, json } => show(&api, "/sessions", json, print_sessions),
        Command::Connect { peer, target, api } => {
            peer.parse::<PeerRef>()
                .map_err(|e| Failure::Usage(format!("connect: peer {e}")))?;
            target
                .parse::<Target>()
                .map_err(|e| Failure::Usage(format!("connect: target {e} (or svc:NAME)")))?;
            connect(&api, &peer, &target)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = Config::load(&file)?;
            println!(
                "{}: ok ({} {}, mesh {:?}, udp {})",
                file.display(),
                config.role,
                if config.turn.enabled {
                    "with TURN"
                } else {
                    "without TURN"
                },
                config.mesh,
                config
                    .listen
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
    }
}

fn print_id(identity: &Identity, json: bool) {
    let id = identity.id();
    if json {
        let value = serde_json::json!({
            "id": id.to_string(),
            "short_id": id.short(),
            "ipv6": id.ipv6().to_string(),
            "fingerprint": id.fingerprint(),
        });
        println!("{value}");
    } else {
        println!("id          {id}");
        println!("short_id    {}", id.short());
        println!("ipv6        {}", id.ipv6());
        println!("fingerprint {}", id.fingerprint());
    }
}

/// The running node's local API: `--api`, else `api` in the config (`--config`, the system
/// config, the embedded default).
fn api_addr(args: &ApiArgs) -> Result<SocketAddr, Failure> {
    if let Some(a) = args.api {
        return Ok(a);
    }
    let (config, source) = load_config(args.config.as_deref())?;
    config.api.ok_or_else(|| {
        Failure::Usage(format!(
            "the local API is off in {source} (api = \"off\"): turn it on, or give --api ADDR"
        ))
    })
}

fn no_node(addr: SocketAddr, e: &std::io::Error) -> Failure {
    Failure::Runtime(format!(
        "no running node: nothing answers on the local API at {addr} ({e}); start one with \
         `meshgate run`, or give the address its `api` has (--api ADDR or --config FILE)"
    ))
}

/// How long the CLI waits for an answer from the local API.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer the CLI reads.
const MAX_ANSWER: u64 = 16 << 20;

/// `GET path` from the local API: the body of a 200, else the error the API gave.
fn api_get(addr: SocketAddr, path: &str) -> Result<String, Failure> {
    use std::io::{Read, Write};
    let mut tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| no_node(addr, &e))?;
    let io = |e: std::io::Error| Failure::Runtime(format!("local API at {addr}: {e}"));
    tcp.set_read_timeout(Some(API_TIMEOUT)).map_err(io)?;
    tcp.set_write_timeout(Some(API_TIMEOUT)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    tcp.take(MAX_ANSWER).read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let Some((head, body)) = answer.split_once("\r\n\r\n") else {
        return Err(Failure::Runtime(format!(
            "local API at {addr}: no HTTP answer (is `api` the address of a meshgate?)"
        )));
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(Failure::Runtime(format!(
            "local API at {addr}: {status}: {}",
            body.trim()
        )));
    }
    Ok(body.to_owned())
}

/// `meshgate status|peers|sessions`: the API's JSON as it is, or as text for people.
fn show(
    args: &ApiArgs,
    path: &str,
    json: bool,
    print: fn(&serde_json::Value) -> String,
) -> Result<(), Failure> {
    let addr = api_addr(args)?;
    let body = api_get(addr, path)?;
    if json {
        print!("{body}");
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
        Failure::Runtime(format!("local API at {addr}: GET {path} is not JSON: {e}"))
    })?;
    print!("{}", print(&value));
    Ok(())
}

/// A JSON value as a table cell: strings bare, lists joined, null as "-".
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) if items.is_empty() => "-".to_owned(),
        serde_json::Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Seconds as people read them: 45s, 3m12s, 5h03m, 2d04h.
fn duration(v: &serde_json::Value) -> String {
    let Some(s) = v.as_u64() else {
        return cell(v);
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn print_status(v: &serde_json::Value) -> String {
    let Some(map) = v.as_object() else {
        return format!("{v}\n");
    };
    // The API's order (a JSON object as parsed here is sorted), then any keys it adds later.
    const ORDER: &[&str] = &[
        "id",
        "short_id",
        "ipv6",
        "fingerprint",
        "role",
        "mesh",
        "listen",
        "api",
        "version",
        "uptime_s",
        "services",
        "peers",
        "sessions",
        "forwards",
    ];
    let keys = ORDER
        .iter()
        .copied()
        .filter(|k| map.contains_key(*k))
        .chain(
            map.keys()
                .map(String::as_str)
                .filter(|k| !ORDER.contains(k)),
        );
    let width = map.keys().map(String::len).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for key in keys {
        let value = &map[key];
        let text = if key == "uptime_s" {
            format!("{} ({})", cell(value), duration(value))
        } else {
            cell(value)
        };
        out.push_str(&format!("{:<width$} {text}\n", format!("{key}:")));
    }
    out
}

fn print_peers(v: &serde_json::Value) -> String {
    let peers = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if peers.is_empty() {
        return "no peers\n".to_owned();
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                cell(&p["short_id"]),
                cell(&p["role"]),
                cell(&p["session"]),
                match p["last_seen_s"].as_u64() {
                    None => "never".to_owned(),
                    Some(0) => "now".to_owned(),
                    Some(_) => format!("{} ago", duration(&p["last_seen_s"])),
                },
                cell(&p["addrs"]),
                cell(&p["source"]),
                cell(&p["ipv6"]),
                cell(&p["error"]),
            ]
        })
        .collect();
    table(
        &[
            "SHORT ID",
            "ROLE",
            "SESSION",
            "LAST SEEN",
            "ADDRS",
            "SOURCE",
            "IPV6",
            "ERROR",
        ],
        &rows,
    )
}

fn print_sessions(v: &serde_json::Value) -> String {
    let sessions = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                cell(&s["short_id"]),
                cell(&s["role"]),
                cell(&s["remote"]),
                cell(&s["local"]),
                cell(&s["initiator"]),
                duration(&s["up_s"]),
            ]
        })
        .collect();
    table(
        &["SHORT ID", "ROLE", "REMOTE", "LOCAL", "DIALLED BY", "UP"],
        &rows,
    )
}

/// `meshgate connect`: asks the running node (local API) for a stream, then pipes stdin to it
/// and it to stdout. stdin's end is a half-close: the reply still comes back in full.
fn connect(args: &ApiArgs, peer: &str, target: &str) -> Result<(), Failure> {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = api_addr(args)?;
    let mut tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| no_node(addr, &e))?;
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "POST /v1/connect?peer={}&target={} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: {}\r\nContent-Length: 0\r\n\r\n",
        crate::api::percent_encode(peer),
        crate::api::percent_encode(target),
        crate::api::UPGRADE
    );
    let io = |e: std::io::Error| Failure::Runtime(format!("local API at {addr}: {e}"));
    tcp.write_all(request.as_bytes()).map_err(io)?;
    // The answer comes after the peer answered (at most api::OPEN_TIMEOUT) and before any data.
    tcp.set_read_timeout(Some(crate::api::OPEN_TIMEOUT + Duration::from_secs(5)))
        .map_err(io)?;
    let mut reader = BufReader::new(tcp.try_clone().map_err(io)?);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(io)?;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    if !status.starts_with("HTTP/1.1 101") {
        let mut body = vec![0u8; content_length.min(64 * 1024)];
        let _ = reader.read_exact(&mut body);
        let body = String::from_utf8_lossy(&body);
        return Err(Failure::Runtime(format!(
            "connect to {target} on {peer}: {}",
            if body.trim().is_empty() {
                status.trim()
            } else {
                body.trim()
            }
        )));
    }
    tcp.set_read_timeout(None).map_err(io)?;
    // Whatever the reader buffered past the head is stream data.
    let buffered = reader.buffer().to_vec();
    let mut upstream = tcp.try_clone().map_err(io)?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = std::io::copy(&mut stdin, &mut upstream);
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&buffered).map_err(io)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                stdout.write_all(&buf[..n]).map_err(io)?;
                stdout.flush().map_err(io)?;
            }
            Err(e) => {
                return Err(Failure::Runtime(format!(
                    "connect to {target} on {peer}: the stream was reset ({e})"
                )));
            }
        }
    }
    stdout.flush().map_err(io)?;
    Ok(())
}

/// `--config FILE`, else the system config if it exists, else the embedded default.
fn load_config(path: Option<&Path>) -> Result<(Config, String), Failure> {
    if let Some(path) = path {
        return Ok((Config::load(path)?, path.display().to_string()));
    }
    let system = Path::new(SYSTEM_CONFIG);
    if system.exists() {
        return Ok((Config::load(system)?, SYSTEM_CONFIG.to_owned()));
    }
    Ok((Config::embedded_default(), "embedded default".to_owned()))
}

/// `--state-dir`, else `state_dir` in the config, else `$STATE_DIRECTORY` (systemd's
/// StateDirectory=), else /var/lib/meshgate for root, else the XDG data dir, so that a user
/// running from a checkout needs no setup.
fn resolve_state_dir(flag: Option<&Path>, config: &Config) -> Result<PathBuf, Failure> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let found = flag
        .map(Path::to_path_buf)
        .or_else(|| config.state_dir.clone())
        .or_else(|| {
            // systemd may pass several, separated by ':'; ours is the first.
            env("STATE_DIRECTORY")
                .and_then(|v| v.to_string_lossy().split(':').next().map(PathBuf::from))
        })
        .or_else(|| {
            nix::unistd::geteuid()
                .is_root()
                .then(|| "/var/lib/meshgate".into())
        })
        .or_else(|| env("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("meshgate")))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".local/share/meshgate")));
    found.ok_or_else(|| {
        Failure::Usage(
            "no state directory: give --state-dir DIR or set state_dir in the config".into(),
        )
    })
}

/// The running log filter, which SIGHUP can swap (`log` in the config).
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    /// RUST_LOG was set at start: it wins over the config, on reload too.
    env_override: bool,
}

impl LogControl {
    /// Applies a `log` filter from a reloaded config. `Ok(false)` when RUST_LOG overrides it.
    pub fn set(&self, filter: &str) -> Result<bool, String> {
        if self.env_override {
            return Ok(false);
        }
        let filter = tracing_subscriber::EnvFilter::try_new(filter)
            .map_err(|e| format!("log: {filter:?} is not a log filter: {e}"))?;
        self.handle
            .reload(filter)
            .map(|()| true)
            .map_err(|e| format!("log: cannot swap the log filter: {e}"))
    }
}

fn init_tracing(config_filter: &str) -> LogControl {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let env_override = from_env.is_some();
    let (filter, handle) =
        reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(config_filter)));
    let format = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    // journald stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        registry.with(format.without_time()).init();
    } else {
        registry.with(format).init();
    }
    LogControl {
        handle,
        env_override,
    }
}
