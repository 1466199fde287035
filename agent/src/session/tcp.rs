//! The TCP side of a stream: one task per forwarded connection moves bytes between the socket
//! and the session engine, inside the credit the peer granted (DESIGN.md §6).
//!
//! Reading: the task reads from TCP only while it has send credit, at most a frame's payload at
//! a time, straight into a buffer that already has room for the frame header (no copy), and
//! hands the whole DATA frame to the engine. EOF from TCP is an EOF frame; a read error a RESET.
//!
//! Writing: the engine puts what the peer sent into this stream's queue (an unbounded channel
//! whose content the engine bounds: the peer may not send beyond the credit we granted, and we
//! grant only what this task has written to TCP). After writing, the task grants the written
//! bytes back, in steps of [`GRANT_STEP`], or of [`GRANT_MIN`] when the queue runs dry. EOF
//! shuts our write side down; RESET aborts the connection (RST).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use portable_atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::frame::{self, HEADER_LEN, MAX_PAYLOAD};

/// A node-wide unique name for one stream (one forwarded connection).
pub type StreamKey = u64;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

pub fn next_key() -> StreamKey {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// Credit is granted back to the peer once this much has been written to TCP: a quarter of
/// the stream's window keeps CREDIT frames rare and the pipe full.
pub const GRANT_STEP: u64 = super::STREAM_WINDOW as u64 / 4;
/// ... or once the queue runs dry with at least this much written. Not every time it runs
/// dry: a fast TCP consumer empties it after every frame, and a CREDIT per 16 KiB frame cost
/// both engines a wake-up each. No deadlock: the sender stops only with a whole window
/// outstanding, and once that is written here it is more than GRANT_STEP.
pub const GRANT_MIN: u64 = frame::INITIAL_CREDIT as u64 / 4;

/// Send credit of one stream: the engine adds what CREDIT frames grant, the TCP reader takes.
#[derive(Debug)]
pub struct Credit {
    available: AtomicU64,
    notify: Notify,
}

impl Credit {
    pub fn new(initial: u64) -> Arc<Self> {
        Arc::new(Self {
            available: AtomicU64::new(initial),
            notify: Notify::new(),
        })
    }

    pub fn grant(&self, n: u64) {
        self.available.fetch_add(n, Ordering::AcqRel);
        self.notify.notify_one();
    }

    pub fn available(&self) -> u64 {
        self.available.load(Ordering::Acquire)
    }

    /// Waits for credit; returns how much may be read now (at most `max`).
    async fn acquire(&self, max: u64) -> u64 {
        loop {
            let notified = self.notify.notified();
            let available = self.available();
            if available > 0 {
                return available.min(max);
            }
            notified.await;
        }
    }

    fn take(&self, n: u64) {
        self.available.fetch_sub(n, Ordering::AcqRel);
    }
}

/// From the engine to a stream's TCP task.
#[derive(Debug)]
pub enum ToTcp {
    /// The peer connected the target (OPEN_OK).
    Opened,
    Data(Bytes),
    /// The peer will send no more (its TCP half-close).
    Eof,
    /// The stream is over: refused, reset by the peer, or its session was lost.
    Reset(String),
}

/// From a stream's TCP task to the engine.
#[derive(Debug)]
pub enum FromTcp {
    /// A whole DATA frame (header filled in).
    Data(Bytes),
    Eof,
    Reset(String),
    /// Bytes written to TCP since the last grant.
    Credit(u32),
    /// The acceptor's connection to the target: made, or why not.
    Connected(Result<(), String>),
}

/// What the TCP task needs to reach the engine: its command sender, tagged with the stream.
pub trait EngineTx: Send + Sync + 'static {
    fn send(&self, key: StreamKey, msg: FromTcp);
}

/// The TCP task's half of a stream.
pub struct TcpSide {
    pub key: StreamKey,
    pub rx: mpsc::UnboundedReceiver<ToTcp>,
    pub credit: Arc<Credit>,
    pub engine: Arc<dyn EngineTx>,
}

impl std::fmt::Debug for TcpSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSide")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// How a stream ended, for the caller's log.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Both directions finished (EOF each way).
    Done,
    /// Reset: by the peer (with its reason) or here.
    Reset(String),
}

impl TcpSide {
    /// Waits for OPEN_OK (true) or the reason the stream failed.
    pub async fn opened(&mut self) -> Result<(), String> {
        match self.rx.recv().await {
            Some(ToTcp::Opened) => Ok(()),
            Some(ToTcp::Reset(reason)) => Err(reason),
            Some(other) => Err(format!("protocol error: {other:?} before OPEN_OK")),
            None => Err("the session ended".to_owned()),
        }
    }

    /// Sends `data` (it must fit in the initial credit) and EOF: one whole message, for the
    /// streams that carry a request and its answer rather than a TCP connection.
    pub fn send_message(&self, data: &[u8]) -> Result<(), String> {
        if data.len() as u64 > self.credit.available() {
            return Err(format!(
                "a {}-byte message exceeds the send credit",
                data.len()
            ));
        }
        for chunk in data.chunks(MAX_PAYLOAD) {
            let mut buf = BytesMut::zeroed(HEADER_LEN);
            buf.extend_from_slice(chunk);
            frame::put_data_header(&mut buf, 0, chunk.len());
            self.credit.take(chunk.len() as u64);
            self.engine.send(self.key, FromTcp::Data(buf.freeze()));
        }
        self.engine.send(self.key, FromTcp::Eof);
        Ok(())
    }

    /// Reads the peer's whole message, up to its EOF; more than `limit` bytes (which must fit
    /// in the initial credit, so no CREDIT is needed) is an error that resets the stream.
    pub async fn read_message(&mut self, limit: usize) -> Result<Vec<u8>, String> {
        let mut got = Vec::new();
        loop {
            match self.rx.recv().await {
                Some(ToTcp::Opened) => {}
                Some(ToTcp::Data(data)) => {
                    if got.len() + data.len() > limit {
                        let why = format!("message longer than {limit} bytes");
                        self.engine.send(self.key, FromTcp::Reset(why.clone()));
                        return Err(why);
                    }
                    got.extend_from_slice(&data);
                }
                Some(ToTcp::Eof) => return Ok(got),
                Some(ToTcp::Reset(reason)) => return Err(reason),
                None => return Err("the stream ended before the message did".to_owned()),
            }
        }
    }

    /// Moves bytes both ways until both directions are done or the stream is reset.
    pub async fn pump(self, tcp: TcpStream) -> End {
        self.pump_with(tcp, Bytes::new()).await
    }

    /// Like [`TcpSide::pump`], but first sends `prefix` into the stream, as if read from `tcp`
    /// (the local API's proxy: a rewritten request head and the body bytes read with it).
    pub async fn pump_with(self, tcp: TcpStream, mut prefix: Bytes) -> End {
        let _ = tcp.set_nodelay(true);
        let TcpSide {
            key,
            mut rx,
            credit,
            engine,
        } = self;
        let (mut rd, mut wr) = tcp.into_split();
        let end = {
            let reader = async {
                while !prefix.is_empty() {
                    let n = credit.acquire(MAX_PAYLOAD as u64).await;
                    let n = usize::try_from(n).unwrap_or(MAX_PAYLOAD).min(prefix.len());
                    let mut buf = BytesMut::zeroed(HEADER_LEN);
                    buf.extend_from_slice(&prefix.split_to(n));
                    frame::put_data_header(&mut buf, 0, n);
                    credit.take(n as u64);
                    engine.send(key, FromTcp::Data(buf.freeze()));
                }
                loop {
                    let n = credit.acquire(MAX_PAYLOAD as u64).await;
                    // n <= MAX_PAYLOAD.
                    let want = usize::try_from(n).unwrap_or(MAX_PAYLOAD);
                    let mut buf = BytesMut::zeroed(HEADER_LEN + want);
                    match rd.read(&mut buf[HEADER_LEN..]).await {
                        Ok(0) => {
                            engine.send(key, FromTcp::Eof);
                            return Ok(());
                        }
                        Ok(read) => {
                            frame::put_data_header(&mut buf, 0, read);
                            buf.truncate(HEADER_LEN + read);
                            credit.take(read as u64);
                            engine.send(key, FromTcp::Data(buf.freeze()));
                        }
                        Err(e) => {
                            let reason = format!("TCP read failed: {e}");
                            engine.send(key, FromTcp::Reset(reason.clone()));
                            return Err(reason);
                        }
                    }
                }
            };
            let writer = async {
                let mut written: u64 = 0;
                loop {
                    let msg = rx.recv().await;
                    match msg {
                        Some(ToTcp::Opened) => {}
                        Some(ToTcp::Data(data)) => {
                            if let Err(e) = wr.write_all(&data).await {
                                let reason = format!("TCP write failed: {e}");
                                engine.send(key, FromTcp::Reset(reason.clone()));
                                return Err(reason);
                            }
                            written += data.len() as u64;
                            if written >= GRANT_STEP || (rx.is_empty() && written >= GRANT_MIN) {
                                let n = u32::try_from(written).unwrap_or(u32::MAX);
                                engine.send(key, FromTcp::Credit(n));
                                written -= u64::from(n);
                            }
                        }
                        Some(ToTcp::Eof) => {
                            let _ = wr.shutdown().await;
                        }
                        Some(ToTcp::Reset(reason)) => return Err(reason),
                        // The engine let go of the stream: both directions are done.
                        None => return Ok(()),
                    }
                }
            };
            tokio::pin!(reader, writer);
            let mut reader_done = false;
            let mut writer_done = false;
            loop {
                tokio::select! {
                    r = &mut reader, if !reader_done => match r {
                        Ok(()) => reader_done = true,
                        Err(reason) => break End::Reset(reason),
                    },
                    w = &mut writer, if !writer_done => match w {
                        Ok(()) => writer_done = true,
                        Err(reason) => break End::Reset(reason),
                    },
                }
                if reader_done && writer_done {
                    break End::Done;
                }
            }
        };
        let tcp = match rd.reunite(wr) {
            Ok(tcp) => tcp,
            Err(_) => return end,
        };
        if matches!(end, End::Reset(_)) {
            // Abort: the local side sees a reset, not a clean end of stream.
            let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
        }
        end
    }
}

/// A stream's two halves: the engine's and the TCP task's.
#[derive(Debug)]
pub struct EngineSide {
    pub to_tcp: mpsc::UnboundedSender<ToTcp>,
    pub credit: Arc<Credit>,
}

pub fn stream_pair(key: StreamKey, engine: Arc<dyn EngineTx>) -> (EngineSide, TcpSide) {
    let (tx, rx) = mpsc::unbounded_channel();
    let credit = Credit::new(u64::from(frame::INITIAL_CREDIT));
    (
        EngineSide {
            to_tcp: tx,
            credit: Arc::clone(&credit),
        },
        TcpSide {
            key,
            rx,
            credit,
            engine,
        },
    )
}
