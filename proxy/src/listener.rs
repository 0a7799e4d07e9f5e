//! Listening sockets for the workers: one `SO_REUSEPORT` socket per worker,
//! all bound to the same address, so the kernel spreads new connections over
//! the workers with no shared accept queue and no lock.
//!
//! The first socket resolves a port of 0 to a real port; the others bind to
//! that port, so `--http-listen 127.0.0.1:0` works with any worker count.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// The listen backlog of each worker's socket.
pub const BACKLOG: i32 = 1024;

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds `count` listeners to `addr`, one per worker.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(actual)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_resolves_once_for_the_whole_group() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &group {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn a_port_held_without_reuseport_is_an_error() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        assert!(bind_group(addr, 1).is_err());
    }
}
