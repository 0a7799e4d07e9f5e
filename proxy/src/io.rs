//! The byte stream a device connection is served over: plain TCP, or TLS
//! over TCP (see [`crate::tls`]). The HTTP loop ([`crate::conn`]) and the
//! MQTT session ([`crate::mqtt::session`]) are written once against
//! [`DeviceIo`], so the HTTPS and MQTTS listeners run the same code as the
//! plain ones.
//!
//! The calls follow monoio's owned-buffer style: a buffer goes in by value
//! and comes back with the result, so an io_uring read can own it while the
//! kernel fills it.

use std::future::Future;
use std::io;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

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
    /// until either side closes.
    fn splice(self, broker: TcpStream) -> impl Future<Output = ()>;
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

    async fn splice(self, broker: TcpStream) {
        let (mut client_read, mut client_write) = self.into_split();
        let (mut broker_read, mut broker_write) = broker.into_split();
        let up = async {
            let _ = monoio::io::copy(&mut client_read, &mut broker_write).await;
            let _ = broker_write.shutdown().await;
        };
        let down = async {
            let _ = monoio::io::copy(&mut broker_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        };
        monoio::join!(up, down);
    }
}
