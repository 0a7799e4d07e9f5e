//! A rustls server connection driven over a monoio `TcpStream`: the adapter
//! between rustls's sans-IO state machine (`read_tls`, `process_new_packets`,
//! `write_tls`) and monoio's owned-buffer reads and writes.
//!
//! Why our own and not `monoio-rustls`: the gateway needs the verified
//! client certificate (mutual-TLS login) and whether a handshake resumed
//! (the handshake metric), and it needs the handshake as a separate step
//! so its cost and outcome are counted before any request is read. The
//! adapter is also small: one ciphertext buffer in, one out, and plaintext
//! goes straight into the caller's buffer.
//!
//! Writes are lazy: after the handshake, TLS 1.3 session tickets stay queued
//! until the next write, or until the connection has to wait for input. A
//! polling device whose request arrives with its last handshake flight gets
//! its tickets and its answer in one `write`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use rustls::{HandshakeKind, ServerConnection};

use crate::io::{DeviceIo, READ_CHUNK};
use crate::mqtt::enforce::Enforcer;

/// Ciphertext read per socket read: one full TLS record and its overhead.
const CIPHERTEXT_CHUNK: usize = 16 * 1024 + 256;

/// A TLS connection to a device.
pub struct TlsStream {
    tcp: TcpStream,
    tls: ServerConnection,
    /// Ciphertext read from the socket (reused).
    rx: Vec<u8>,
    /// Ciphertext to write to the socket (reused).
    tx: Vec<u8>,
}

/// How a handshake went, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Full,
    Resumed,
}

impl TlsStream {
    /// Runs the server side of the handshake on `tcp`. The caller bounds the
    /// time it may take.
    pub async fn accept(tcp: TcpStream, tls: ServerConnection) -> io::Result<(Self, Handshake)> {
        let mut stream = TlsStream {
            tcp,
            tls,
            rx: Vec::with_capacity(CIPHERTEXT_CHUNK),
            tx: Vec::with_capacity(4096),
        };
        while stream.tls.is_handshaking() {
            stream.flush().await?;
            if !stream.tls.wants_read() {
                // Handshaking, nothing to send, nothing wanted: cannot move.
                return Err(io::Error::other("TLS handshake stalled"));
            }
            if stream.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let kind = match stream.tls.handshake_kind() {
            Some(HandshakeKind::Resumed) => Handshake::Resumed,
            _ => Handshake::Full,
        };
        Ok((stream, kind))
    }

    /// The client's certificate chain, leaf first, if it sent one (rustls
    /// has verified it against the client CA by then).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.as_ref())
    }

    /// Sends every queued TLS record.
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tx.clear();
            self.tls.write_tls(&mut self.tx)?;
            let tx = std::mem::take(&mut self.tx);
            let (res, tx) = self.tcp.write_all(tx).await;
            self.tx = tx;
            res?;
        }
        Ok(())
    }

    /// Reads ciphertext once and feeds it to rustls. Returns the bytes read
    /// (0: the peer closed the socket). A protocol error sends rustls's
    /// alert, then fails.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut rx = std::mem::take(&mut self.rx);
        rx.clear();
        // A read cancelled by a timeout took the old buffer with it.
        rx.reserve(CIPHERTEXT_CHUNK);
        let (res, rx) = self.tcp.read(rx).await;
        let result = match res {
            Ok(n) => feed(&mut self.tls, &rx[..n]).map(|()| n),
            Err(e) => Err(e),
        };
        self.rx = rx;
        if result.is_err() {
            let _ = self.flush().await;
        }
        result
    }
}

/// Hands ciphertext to rustls and processes it.
fn feed(tls: &mut ServerConnection, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        if tls.read_tls(&mut bytes)? == 0 {
            break;
        }
        tls.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(())
}

/// Moves the plaintext rustls holds into `buf`. `Ok(None)`: none yet;
/// `Ok(Some(0))`: the peer sent `close_notify`.
fn take_plaintext(tls: &mut ServerConnection, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let len = buf.len();
    buf.resize(len + READ_CHUNK, 0);
    let read = tls.reader().read(&mut buf[len..]);
    match read {
        Ok(n) => {
            buf.truncate(len + n);
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            buf.truncate(len);
            Ok(None)
        }
        Err(e) => {
            buf.truncate(len);
            Err(e)
        }
    }
}

/// Encrypts `plain` and moves the resulting records into `out`.
fn seal(tls: &mut ServerConnection, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    tls.writer().write_all(plain)?;
    drain(tls, out)
}

/// Moves every queued TLS record into `out`.
fn drain(tls: &mut ServerConnection, out: &mut Vec<u8>) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(out)?;
    }
    Ok(())
}

impl DeviceIo for TlsStream {
    async fn read_more(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            match take_plaintext(&mut self.tls, &mut buf) {
                Ok(Some(n)) => return (Ok(n), buf),
                Ok(None) => {}
                Err(e) => return (Err(e), buf),
            }
            // Anything rustls must answer (alerts, key updates) goes first.
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
            match self.fill().await {
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn send_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut sent = 0;
        while sent < buf.len() {
            match self.tls.writer().write(&buf[sent..]) {
                Ok(n) => sent += n,
                Err(e) => return (Err(e), buf),
            }
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    async fn close(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush().await;
        let _ = self.tcp.shutdown().await;
    }

    /// Three loops joined in one task, sharing the TLS state: client →
    /// broker decrypts, broker → client encrypts, and a writer that owns the
    /// client socket's write half and sends the records both produce, in
    /// order, through a bounded queue (backpressure on the broker side); an
    /// empty chunk tells it to close. No read is ever cancelled, so no
    /// bytes are lost in flight.
    async fn splice(self, broker: TcpStream, write_timeout: Duration) {
        self.pipe(broker, write_timeout, None).await
    }

    async fn relay(
        self,
        broker: TcpStream,
        enforcer: Rc<RefCell<Enforcer>>,
        write_timeout: Duration,
    ) {
        self.pipe(broker, write_timeout, Some(enforcer)).await
    }
}

impl TlsStream {
    /// The splice, with every byte through `filter` when there is one.
    async fn pipe(
        self,
        broker: TcpStream,
        write_timeout: Duration,
        filter: Option<Rc<RefCell<Enforcer>>>,
    ) {
        let TlsStream {
            tcp,
            mut tls,
            rx,
            tx: _,
        } = self;
        // Our queue bounds what is buffered; rustls need not.
        tls.set_buffer_limit(None);
        let tls = Rc::new(RefCell::new(tls));
        let (mut client_read, client_write) = tcp.into_split();
        let (mut broker_read, mut broker_write) = broker.into_split();
        let (records, outbox) = tokio::sync::mpsc::channel::<Vec<u8>>(8);

        let up = {
            let tls = tls.clone();
            let records = records.clone();
            let filter = filter.clone();
            async move {
                let mut rx = rx;
                let mut plain = Vec::with_capacity(READ_CHUNK);
                'copy: loop {
                    // Plaintext rustls already holds (sent with the CONNECT).
                    loop {
                        let (got, replies) = {
                            let mut tls = tls.borrow_mut();
                            let got = take_plaintext(&mut tls, &mut plain);
                            let mut replies = Vec::new();
                            let _ = drain(&mut tls, &mut replies);
                            (got, replies)
                        };
                        if !replies.is_empty() && records.send(replies).await.is_err() {
                            break 'copy;
                        }
                        if let (Ok(Some(n)), Some(filter)) = (&got, &filter) {
                            if *n > 0 {
                                let mut answers = Vec::new();
                                if filter
                                    .borrow_mut()
                                    .from_client(&mut plain, &mut answers)
                                    .is_err()
                                {
                                    break 'copy;
                                }
                                if !answers.is_empty() {
                                    let mut sealed = Vec::with_capacity(answers.len() + 64);
                                    if seal(&mut tls.borrow_mut(), &answers, &mut sealed).is_err()
                                        || records.send(sealed).await.is_err()
                                    {
                                        break 'copy;
                                    }
                                }
                                if plain.is_empty() {
                                    continue;
                                }
                            }
                        }
                        match got {
                            Ok(Some(0)) | Err(_) => break 'copy,
                            Ok(Some(_)) => {
                                match monoio::time::timeout(
                                    write_timeout,
                                    broker_write.write_all(plain),
                                )
                                .await
                                {
                                    Ok((Ok(_), p)) => {
                                        plain = p;
                                        plain.clear();
                                    }
                                    _ => break 'copy,
                                }
                            }
                            Ok(None) => break,
                        }
                    }
                    rx.clear();
                    rx.reserve(CIPHERTEXT_CHUNK);
                    let (res, r) = client_read.read(rx).await;
                    rx = r;
                    match res {
                        Ok(n) if n > 0 => {
                            if feed(&mut tls.borrow_mut(), &rx[..n]).is_err() {
                                let mut alert = Vec::new();
                                let _ = drain(&mut tls.borrow_mut(), &mut alert);
                                if !alert.is_empty() {
                                    let _ = records.send(alert).await;
                                }
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                let _ = monoio::time::timeout(write_timeout, broker_write.shutdown()).await;
            }
        };
        let down = {
            let tls = tls.clone();
            async move {
                let mut buf = Vec::with_capacity(READ_CHUNK);
                loop {
                    buf.clear();
                    let (res, b) = broker_read.read(buf).await;
                    buf = b;
                    let n = match res {
                        Ok(n) if n > 0 => n,
                        _ => break,
                    };
                    buf.truncate(n);
                    if let Some(filter) = &filter {
                        if filter.borrow_mut().from_broker(&mut buf).is_err() {
                            break;
                        }
                        if buf.is_empty() {
                            buf.reserve(READ_CHUNK);
                            continue;
                        }
                    }
                    let mut sealed = Vec::with_capacity(buf.len() + 64);
                    if seal(&mut tls.borrow_mut(), &buf, &mut sealed).is_err() {
                        break;
                    }
                    if records.send(sealed).await.is_err() {
                        break;
                    }
                }
                let mut bye = Vec::new();
                {
                    let mut tls = tls.borrow_mut();
                    tls.send_close_notify();
                    let _ = drain(&mut tls, &mut bye);
                }
                if !bye.is_empty() {
                    let _ = records.send(bye).await;
                }
                // The end marker: the writer closes the client side now, as
                // the plain splice does when the broker hangs up.
                let _ = records.send(Vec::new()).await;
            }
        };
        // Ok: the broker side ended (end marker); Err: a write to the
        // client failed or passed its deadline, which ends the splice.
        let writer = crate::io::write_outbox(client_write, outbox, write_timeout);
        let readers = async move {
            monoio::join!(up, down);
            Ok(())
        };
        crate::io::join_directions(readers, writer).await;
    }
}
