//! tcpbench: the load generator of `bench/tunnel.sh` (a program, not a test). Std only.
//!
//! ```text
//! tcpbench sink    [--listen ADDR] [--timeout S]     # prints "listening ADDR", serves until killed
//! tcpbench echo    [--listen ADDR] [--timeout S]     # echoes every byte back, until killed
//! tcpbench source  --connect ADDR --bytes N [--streams K] [--timeout S]
//! tcpbench latency --connect ADDR [--count N] [--timeout S]
//! tcpbench probe   --connect ADDR [--within S]       # one 1-byte echo, retried for S seconds
//! ```
//!
//! `source` opens K connections at once and sends N bytes in all (N/K each) of a deterministic
//! pattern: 64-bit word i of a stream is splitmix64(seed ^ i), little-endian, with the stream's
//! index as seed. Each stream starts with a 24-byte header (magic, length, seed); the sink
//! regenerates the pattern and compares every byte, then answers with a 24-byte ack (bytes it
//! got, status, first bad offset) once it has read `length` bytes: no half-close is needed, so a
//! relay that handles EOF badly cannot stall the measurement. The source's clock runs from before
//! the first connect() until the last ack, and it prints one line:
//! `source streams=K bytes=N elapsed_s=.. mb_s=..` (MB = 10^6 bytes).
//!
//! `latency` times N rounds of connect() + write 1 byte + read the echoed byte + close, each from
//! the start of connect() to the echoed byte, one after another, and prints
//! `latency n=N median_us=.. p99_us=.. min_us=.. max_us=..` (p99 by nearest rank).
//!
//! Errors go to stderr as `error: ...` with exit status 1; usage errors exit 2.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"tcpbnch1";
const HEADER: usize = 24;
const ACK: usize = 24;
const BUF: usize = 256 * 1024;

const USAGE: &str = "usage:
  tcpbench sink    [--listen ADDR] [--timeout S]
  tcpbench echo    [--listen ADDR] [--timeout S]
  tcpbench source  --connect ADDR --bytes N [--streams K] [--timeout S]
  tcpbench latency --connect ADDR [--count N] [--timeout S]
  tcpbench probe   --connect ADDR [--within S]";

type Res<T> = Result<T, String>;

#[derive(Debug)]
struct Opts {
    listen: String,
    connect: Option<SocketAddr>,
    bytes: u64,
    streams: u64,
    count: usize,
    timeout: Duration,
    within: Duration,
}

fn parse(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        listen: "127.0.0.1:0".into(),
        connect: None,
        bytes: 0,
        streams: 1,
        count: 200,
        timeout: Duration::from_secs(300),
        within: Duration::from_secs(60),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || -> Res<u64> {
            value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--listen" => o.listen = value.clone(),
            "--connect" => {
                o.connect = Some(
                    value
                        .to_socket_addrs()
                        .map_err(|e| format!("--connect {value}: {e}"))?
                        .next()
                        .ok_or_else(|| format!("--connect {value}: no address"))?,
                );
            }
            "--bytes" => o.bytes = num()?,
            "--streams" => o.streams = num()?.max(1),
            "--count" => o.count = usize::try_from(num()?.max(1)).map_err(|e| e.to_string())?,
            "--timeout" => o.timeout = Duration::from_secs(num()?.max(1)),
            "--within" => o.within = Duration::from_secs(num()?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let opts = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let need_connect = || {
        opts.connect
            .ok_or_else(|| "--connect is required".to_owned())
    };
    let result = match cmd.as_str() {
        "sink" => serve(&opts, handle_sink),
        "echo" => serve(&opts, handle_echo),
        "source" => need_connect().and_then(|a| source(a, &opts)),
        "latency" => need_connect().and_then(|a| latency(a, &opts)),
        "probe" => need_connect().and_then(|a| probe(a, &opts)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- the pattern ----

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with the stream's bytes from absolute offset `at` on.
fn fill(buf: &mut [u8], seed: u64, at: u64) {
    let word = |i: u64| splitmix64(seed ^ i).to_le_bytes();
    let mut pos = at;
    let mut rest = &mut buf[..];
    // Head: up to the next word boundary.
    let skip = usize::try_from(pos % 8).unwrap_or(0);
    if skip != 0 {
        let w = word(pos / 8);
        let n = (8 - skip).min(rest.len());
        rest[..n].copy_from_slice(&w[skip..skip + n]);
        rest = &mut rest[n..];
        pos += n as u64;
    }
    let mut i = pos / 8;
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word(i));
        i += 1;
    }
    let tail = chunks.into_remainder();
    let n = tail.len();
    if n != 0 {
        tail.copy_from_slice(&word(i)[..n]);
    }
}

// ---- servers ----

fn serve(opts: &Opts, handle: fn(TcpStream) -> Res<()>) -> Res<()> {
    let listener =
        TcpListener::bind(&opts.listen).map_err(|e| format!("bind {}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let timeout = opts.timeout;
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        thread::spawn(move || {
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            if let Err(e) = conn
                .set_read_timeout(Some(timeout))
                .and_then(|()| conn.set_write_timeout(Some(timeout)))
                .map_err(|e| e.to_string())
                .and_then(|()| handle(conn))
            {
                eprintln!("{peer}: {e}");
            }
        });
    }
    Ok(())
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

fn handle_sink(mut conn: TcpStream) -> Res<()> {
    let mut header = [0u8; HEADER];
    conn.read_exact(&mut header)
        .map_err(|e| format!("header: {e}"))?;
    if &header[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let (len, seed) = (u64_at(&header, 8), u64_at(&header, 16));
    let mut buf = vec![0u8; BUF];
    let mut want = vec![0u8; BUF];
    let (mut got, mut bad) = (0u64, u64::MAX);
    while got < len {
        let room = usize::try_from((len - got).min(BUF as u64)).unwrap_or(BUF);
        let n = match conn.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("after {got} of {len} bytes: {e}")),
        };
        if bad == u64::MAX {
            fill(&mut want[..n], seed, got);
            if buf[..n] != want[..n] {
                let i = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b);
                bad = got + i.unwrap_or(0) as u64;
            }
        }
        got += n as u64;
    }
    let status: u64 = if got != len {
        2
    } else {
        u64::from(bad != u64::MAX)
    };
    let mut ack = [0u8; ACK];
    ack[..8].copy_from_slice(&got.to_le_bytes());
    ack[8..16].copy_from_slice(&status.to_le_bytes());
    ack[16..].copy_from_slice(&bad.to_le_bytes());
    conn.write_all(&ack).map_err(|e| format!("ack: {e}"))?;
    // Anything past `len` is an error of the path; wait for the source to close.
    match conn.read(&mut buf[..1]) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("bytes past the announced {len}")),
        Err(_) => Ok(()),
    }
}

fn handle_echo(mut conn: TcpStream) -> Res<()> {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        conn.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
}

// ---- clients ----

fn connect(addr: SocketAddr, timeout: Duration) -> Res<TcpStream> {
    let conn =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

fn send_one(addr: SocketAddr, len: u64, seed: u64, timeout: Duration) -> Res<()> {
    let mut conn = connect(addr, timeout)?;
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&len.to_le_bytes());
    header[16..].copy_from_slice(&seed.to_le_bytes());
    conn.write_all(&header)
        .map_err(|e| format!("header: {e}"))?;
    let mut buf = vec![0u8; BUF];
    let mut sent = 0u64;
    while sent < len {
        let n = usize::try_from((len - sent).min(BUF as u64)).unwrap_or(BUF);
        fill(&mut buf[..n], seed, sent);
        conn.write_all(&buf[..n])
            .map_err(|e| format!("after {sent} of {len} bytes: {e}"))?;
        sent += n as u64;
    }
    let mut ack = [0u8; ACK];
    conn.read_exact(&mut ack)
        .map_err(|e| format!("waiting for the sink's ack after {len} bytes: {e}"))?;
    let (got, status, bad) = (u64_at(&ack, 0), u64_at(&ack, 8), u64_at(&ack, 16));
    let _ = conn.shutdown(Shutdown::Both);
    match status {
        0 if got == len => Ok(()),
        1 => Err(format!("stream {seed}: content differs from offset {bad}")),
        _ => Err(format!("stream {seed}: sink got {got} of {len} bytes")),
    }
}

fn source(addr: SocketAddr, opts: &Opts) -> Res<()> {
    let k = opts.streams;
    let per = opts.bytes / k;
    let barrier = Arc::new(Barrier::new(
        usize::try_from(k).map_err(|e| e.to_string())? + 1,
    ));
    let mut threads = Vec::new();
    for i in 0..k {
        let len = if i == 0 { per + opts.bytes % k } else { per };
        let (barrier, timeout) = (Arc::clone(&barrier), opts.timeout);
        threads.push(thread::spawn(move || {
            barrier.wait();
            send_one(addr, len, i, timeout)
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut errors = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a sender thread panicked".into()),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    println!(
        "source streams={k} bytes={} elapsed_s={secs:.3} mb_s={:.1}",
        opts.bytes,
        opts.bytes as f64 / secs / 1e6
    );
    Ok(())
}

/// One connect + 1-byte echo; the time from the start of connect() to the echoed byte.
fn echo_once(addr: SocketAddr, timeout: Duration) -> Res<Duration> {
    let t0 = Instant::now();
    let mut conn = connect(addr, timeout)?;
    let _ = conn.set_nodelay(true);
    conn.write_all(b"Z").map_err(|e| format!("write: {e}"))?;
    let mut b = [0u8; 1];
    conn.read_exact(&mut b)
        .map_err(|e| format!("waiting for the echo: {e}"))?;
    let dt = t0.elapsed();
    if b[0] != b'Z' {
        return Err(format!("echo returned {:#04x}", b[0]));
    }
    Ok(dt)
}

fn latency(addr: SocketAddr, opts: &Opts) -> Res<()> {
    let mut samples = Vec::with_capacity(opts.count);
    for i in 0..opts.count {
        samples.push(echo_once(addr, opts.timeout).map_err(|e| format!("round {i}: {e}"))?);
    }
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = samples.len();
    let median = if n % 2 == 1 {
        us(samples[n / 2])
    } else {
        (us(samples[n / 2 - 1]) + us(samples[n / 2])) / 2.0
    };
    let p99 = samples[(n * 99).div_ceil(100).max(1) - 1];
    println!(
        "latency n={n} median_us={median:.0} p99_us={:.0} min_us={:.0} max_us={:.0}",
        us(p99),
        us(samples[0]),
        us(samples[n - 1])
    );
    Ok(())
}

fn probe(addr: SocketAddr, opts: &Opts) -> Res<()> {
    let deadline = Instant::now() + opts.within;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match echo_once(
            addr,
            left.clamp(Duration::from_secs(1), Duration::from_secs(5)),
        ) {
            Ok(dt) => {
                println!(
                    "probe ok after {tries} tries, last {:.0} us",
                    dt.as_secs_f64() * 1e6
                );
                return Ok(());
            }
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "no echo within {}s ({tries} tries), last: {err}",
                opts.within.as_secs()
            ));
        }
        thread::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn fill_is_the_same_at_any_split() {
        let mut whole = vec![0u8; 1000];
        fill(&mut whole, 7, 3);
        for cut in [0, 1, 5, 8, 13, 999, 1000] {
            let mut a = vec![0u8; cut];
            let mut b = vec![0u8; 1000 - cut];
            fill(&mut a, 7, 3);
            fill(&mut b, 7, 3 + cut as u64);
            assert_eq!([a, b].concat(), whole, "cut at {cut}");
        }
        let mut other = vec![0u8; 1000];
        fill(&mut other, 8, 3);
        assert_ne!(other, whole);
    }
}
