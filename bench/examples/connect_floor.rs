//! The kernel floor of the MQTT CONNECT storm benchmark: the least a server
//! can do per refused CONNECT on the gateway's own I/O stack. It accepts,
//! reads one CONNECT, writes the fixed CONNACK `20 02 00 05` (MQTT 3.1.1,
//! return code 5, not authorized: what the gateway answers an unknown user)
//! and closes. Nothing is parsed past the fixed header, and nothing is
//! looked up, logged or counted.
//!
//! ```text
//! cargo run --release -p fleetgate-bench --example connect_floor -- --listen 127.0.0.1:0
//! ```
//!
//! `scripts/bench-mqtt.sh` runs it next to the gateway and Mosquitto, pinned
//! to the same core and driven by the same `fleetgate-loadtest mqtt-storm`,
//! and divides the gateway's server CPU per CONNECT by this one's (issue 17:
//! at most 1.15×). So that the ratio measures fleetgate's own code and not a
//! different I/O stack, the floor is built as a gateway worker is
//! (`proxy/src/worker.rs`): one monoio runtime on the epoll driver (the
//! gateway's default `--io-driver`) with the timer enabled, its listener
//! bound by the gateway's own [`bind_group`] (`SO_REUSEPORT`, the same
//! backlog), and `TCP_NODELAY` on every accepted connection.
//!
//! What it leaves out, on purpose, is everything the gateway adds per
//! connection: deadlines, connection caps, rate limits, metrics, the
//! CONNECT parse and the decision. That is the cost being measured. Without
//! read deadlines a client that never sends keeps its task, which is fine
//! for a bench server on loopback and nowhere else.
//!
//! It prints `listening addr=<addr>` on stderr once it can accept, so a
//! script started on port 0 can find it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use fleetgate_proxy::listener::bind_group;
use fleetgate_proxy::mqtt::codec::DEFAULT_MAX_REMAINING;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{LegacyDriver, RuntimeBuilder};

/// CONNACK, remaining length 2: no session present, return code 5.
const CONNACK_NOT_AUTHORIZED: &[u8] = &[0x20, 0x02, 0x00, 0x05];

/// The first read's buffer, as the gateway's MQTT session starts with.
const INITIAL_BUFFER: usize = 512;

/// How far the buffered bytes are from one whole CONNECT.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// A CONNECT of this many bytes is at the front.
    Complete(usize),
    /// At least this many more bytes are needed.
    Incomplete(usize),
    /// Not a CONNECT, a remaining length longer than 4 bytes, or one above
    /// the gateway's default cap.
    Invalid,
}

/// Finds the end of the CONNECT at the front of `buf` from its fixed
/// header alone. The remaining length is capped before any of it is
/// buffered.
fn check(buf: &[u8]) -> Check {
    match buf.first() {
        None => return Check::Incomplete(2),
        Some(0x10) => {}
        Some(_) => return Check::Invalid,
    }
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Check::Incomplete(1);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if remaining > DEFAULT_MAX_REMAINING {
                return Check::Invalid;
            }
            let len = 2 + i + remaining;
            return match len.checked_sub(buf.len()) {
                None | Some(0) => Check::Complete(len),
                Some(missing) => Check::Incomplete(missing),
            };
        }
    }
    Check::Invalid
}

/// One connection: read a whole CONNECT, refuse it, close (on drop).
async fn refuse(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(INITIAL_BUFFER);
    loop {
        match check(&buf) {
            Check::Complete(_) => break,
            Check::Incomplete(missing) => buf.reserve(missing),
            Check::Invalid => return,
        }
        let filled = buf.len();
        let (read, slice) = stream.read(buf.slice_mut(filled..)).await;
        buf = slice.into_inner();
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
    }
    let _ = stream.write_all(CONNACK_NOT_AUTHORIZED).await;
}

async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(refuse(stream));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept failed: {e}");
                monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn listen_addr() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:0".to_owned();
    while let Some(arg) = args.next() {
        match arg.strip_prefix("--listen") {
            Some("") => addr = args.next().ok_or("--listen needs an address")?,
            Some(value) if value.starts_with('=') => addr = value[1..].to_owned(),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    addr.parse()
        .map_err(|e| format!("bad --listen address {addr:?}: {e}"))
}

fn main() -> ExitCode {
    let addr = match listen_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("connect_floor: {e}\nusage: connect_floor [--listen ADDR]");
            return ExitCode::from(2);
        }
    };
    let started = bind_group(addr, 1).and_then(|mut sockets| {
        let socket = sockets.remove(0);
        let bound = socket.local_addr()?;
        let runtime = RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()?;
        Ok((socket, bound, runtime))
    });
    let (socket, bound, mut runtime) = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect_floor: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("connect_floor: cannot register the listener: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("listening addr={bound} driver=epoll");
        serve(listener).await;
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MQTT 3.1.1 CONNECT as the storm tool sends it, then one extra byte.
    const CONNECT: &[u8] = &[
        0x10, 0x16, //                          CONNECT, remaining length 22
        0x00, 0x04, b'M', b'Q', b'T', b'T', //  protocol name "MQTT"
        0x04, //                                level 4 (3.1.1)
        0xC2, //                                flags: username, password, clean session
        0x00, 0x3C, //                          keep alive 60 s
        0x00, 0x02, b'c', b'0', //              client id "c0"
        0x00, 0x02, b'u', b'0', //              username "u0"
        0x00, 0x02, b'p', b'w', //              password "pw"
        0xE0, //                                a DISCONNECT's first byte (not ours)
    ];

    #[test]
    fn every_prefix_is_incomplete_and_the_frame_ends_at_its_length() {
        let whole = CONNECT.len() - 1;
        for n in 0..whole {
            assert!(
                matches!(check(&CONNECT[..n]), Check::Incomplete(_)),
                "prefix of {n}"
            );
        }
        assert_eq!(check(&CONNECT[..whole]), Check::Complete(whole));
        assert_eq!(check(CONNECT), Check::Complete(whole));
    }

    #[test]
    fn a_remaining_length_over_the_cap_is_refused_before_its_payload() {
        // 65,537 = 0x01 0x80 0x04 as a variable byte integer.
        assert_eq!(check(&[0x10, 0x81, 0x80, 0x04]), Check::Invalid);
        assert_eq!(check(&[0x10, 0x80, 0x80, 0x04]), Check::Incomplete(65_536));
        assert_eq!(check(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F]), Check::Invalid);
    }

    #[test]
    fn anything_but_a_connect_is_refused() {
        assert_eq!(check(&[0x20, 0x02]), Check::Invalid);
        assert_eq!(check(&[0x12, 0x00]), Check::Invalid);
    }
}
