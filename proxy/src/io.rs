//! The byte stream a device connection is served over: plain TCP, or TLS
//! over TCP (see [`crate::tls`]). The HTTP loop ([`crate::conn`]) and the
//! MQTT session ([`crate::mqtt::session`]) are written once against
//! [`DeviceIo`], so the HTTPS and MQTTS listeners run the same code as the
//! plain ones.
//!
//! The calls follow monoio's owned-buffer style: a buffer goes in by value
//! and comes back with the result, so an io_uring read can own it while the
//! kernel fills it.
//!
//! **Every write has a deadline** (`--write-timeout`): [`send_within`] and
//! [`close_within`] wrap the trait's calls, and [`DeviceIo::splice`] bounds
//! each write in both directions. A client that pipelines requests and never
//! reads its responses is closed once one write has waited that long, and
//! its connection slot is freed.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::mqtt::enforce::Enforcer;

/// Bytes a plain read asks for at most.
pub const READ_CHUNK: usize = 8 * 1024;

/// A device-facing byte stream.
pub trait DeviceIo {
    /// Reads what arrives next and appends it to `buf`. `Ok(0)` is the end
    /// of the stream.
    fn read_more(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Writes all of `buf` (the buffer comes back for reuse).
    fn send_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;

    /// Ends the stream politely (TLS: `close_notify`; TCP: FIN).
    fn close(&mut self) -> impl Future<Output = ()>;

    /// Joins the connection to the MQTT upstream `broker`: copies both ways
    /// until either side closes, or until one write (either way) has waited
    /// `write_timeout`, which ends the whole splice.
    fn splice(self, broker: TcpStream, write_timeout: Duration) -> impl Future<Output = ()>;

    /// Like [`DeviceIo::splice`], but every byte passes through `enforcer`
    /// ([`crate::mqtt::enforce`]): the client's packets are judged before
    /// the broker sees them, the gateway's own answers (PUBACK, SUBACK) go
    /// to the client, and the broker's SUBACKs are merged. A packet the
    /// enforcer cannot accept ends the session.
    fn relay(
        self,
        broker: TcpStream,
        enforcer: Rc<RefCell<Enforcer>>,
        write_timeout: Duration,
    ) -> impl Future<Output = ()>;
}

/// [`DeviceIo::send_all`] within `limit`. A write that does not finish in
/// time is an error (`TimedOut`), and the caller must close the connection
/// (the buffer was dropped with the write; a fresh one comes back).
pub async fn send_within<C: DeviceIo>(
    stream: &mut C,
    buf: Vec<u8>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    match monoio::time::timeout(limit, stream.send_all(buf)).await {
        Ok(done) => done,
        Err(_) => (
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "write deadline passed",
            )),
            Vec::new(),
        ),
    }
}

/// [`DeviceIo::close`] within `limit` (a TLS `close_notify` is a write).
pub async fn close_within<C: DeviceIo>(stream: &mut C, limit: Duration) {
    let _ = monoio::time::timeout(limit, stream.close()).await;
}

/// Copies `from` to `to` until `from` ends (`Ok`), a read or write fails, or
/// one write waits longer than `write_timeout` (both `Err`).
pub async fn copy_with_deadline<R, W>(
    from: &mut R,
    to: &mut W,
    write_timeout: Duration,
) -> io::Result<()>
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        buf.clear();
        let (res, b) = from.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        match monoio::time::timeout(write_timeout, to.write_all(buf)).await {
            Ok((res, b)) => {
                res?;
                buf = b;
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write deadline passed",
                ))
            }
        }
    }
}

/// Runs the two directions of a splice. When one ends cleanly (its reader
/// hit end of stream) the other goes on, as a half-closed TCP connection
/// does; when one fails (including a write past its deadline), the other is
/// dropped and the splice ends at once.
pub async fn join_directions<A, B>(up: A, down: B)
where
    A: Future<Output = io::Result<()>>,
    B: Future<Output = io::Result<()>>,
{
    let mut up = pin!(up);
    let mut down = pin!(down);
    monoio::select! {
        r = &mut up => if r.is_ok() { let _ = down.await; },
        r = &mut down => if r.is_ok() { let _ = up.await; },
    }
}

impl DeviceIo for TcpStream {
    async fn read_more(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let len = buf.len();
        let (res, slice) = self.read(buf.slice_mut(len..)).await;
        (res, slice.into_inner())
    }

    async fn send_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, buf) = AsyncWriteRentExt::write_all(self, buf).await;
        (res.map(drop), buf)
    }

    async fn close(&mut self) {
        let _ = self.shutdown().await;
    }

    async fn splice(self, broker: TcpStream, write_timeout: Duration) {
        let (mut client_read, mut client_write) = self.into_split();
        let (mut broker_read, mut broker_write) = broker.into_split();
        let up = async {
            let r = copy_with_deadline(&mut client_read, &mut broker_write, write_timeout).await;
            let _ = monoio::time::timeout(write_timeout, broker_write.shutdown()).await;
            r
        };
        let down = async {
            let r = copy_with_deadline(&mut broker_read, &mut client_write, write_timeout).await;
            let _ = monoio::time::timeout(write_timeout, client_write.shutdown()).await;
            r
        };
        join_directions(up, down).await;
    }

    async fn relay(
        self,
        broker: TcpStream,
        enforcer: Rc<RefCell<Enforcer>>,
        write_timeout: Duration,
    ) {
        let (mut client_read, client_write) = self.into_split();
        let (mut broker_read, mut broker_write) = broker.into_split();
        // Both directions write to the client (the broker's packets, and the
        // gateway's own answers), so one writer owns that half.
        let (outbox, inbox) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let up = {
            let enforcer = enforcer.clone();
            let outbox = outbox.clone();
            async move {
                let mut buf = Vec::with_capacity(READ_CHUNK);
                loop {
                    buf.clear();
                    // The enforcer may hand back a fresh, empty buffer (all
                    // dropped): a read into no capacity would look like EOF.
                    buf.reserve(READ_CHUNK);
                    let (res, b) = client_read.read(buf).await;
                    buf = b;
                    if !matches!(res, Ok(n) if n > 0) {
                        break;
                    }
                    let mut replies = Vec::new();
                    if enforcer
                        .borrow_mut()
                        .from_client(&mut buf, &mut replies)
                        .is_err()
                    {
                        break;
                    }
                    if !replies.is_empty() && outbox.send(replies).await.is_err() {
                        break;
                    }
                    if buf.is_empty() {
                        continue;
                    }
                    match monoio::time::timeout(write_timeout, broker_write.write_all(buf)).await {
                        Ok((Ok(_), b)) => buf = b,
                        _ => break,
                    }
                }
                let _ = monoio::time::timeout(write_timeout, broker_write.shutdown()).await;
                // The end marker: the writer closes the client side.
                let _ = outbox.send(Vec::new()).await;
            }
        };
        let down = async move {
            let mut buf = Vec::with_capacity(READ_CHUNK);
            loop {
                buf.clear();
                let (res, b) = broker_read.read(buf).await;
                buf = b;
                if !matches!(res, Ok(n) if n > 0) {
                    break;
                }
                if enforcer.borrow_mut().from_broker(&mut buf).is_err() {
                    break;
                }
                if !buf.is_empty() && outbox.send(std::mem::take(&mut buf)).await.is_err() {
                    break;
                }
                buf.reserve(READ_CHUNK);
            }
            let _ = outbox.send(Vec::new()).await;
        };
        let writer = write_outbox(client_write, inbox, write_timeout);
        let readers = async move {
            monoio::select! {
                _ = up => {},
                _ = down => {},
            }
            Ok(())
        };
        join_directions(readers, writer).await;
    }
}

/// Writes each chunk of `inbox` to `to`, each within `write_timeout`, until
/// an empty chunk (the end marker) or a failed write; then closes `to`.
pub async fn write_outbox<W: AsyncWriteRent>(
    mut to: W,
    mut inbox: tokio::sync::mpsc::Receiver<Vec<u8>>,
    write_timeout: Duration,
) -> io::Result<()> {
    let mut result = Ok(());
    while let Some(chunk) = inbox.recv().await {
        if chunk.is_empty() {
            break;
        }
        match monoio::time::timeout(write_timeout, to.write_all(chunk)).await {
            Ok((Ok(_), _)) => {}
            Ok((Err(e), _)) => {
                result = Err(e);
                break;
            }
            Err(_) => {
                result = Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write deadline passed",
                ));
                break;
            }
        }
    }
    let _ = monoio::time::timeout(write_timeout, to.shutdown()).await;
    result
}
