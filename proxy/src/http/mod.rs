//! HTTP/1.1 for the proxy workers, sans-IO: [`codec`] turns bytes into
//! requests and [`response`] turns answers into bytes. Neither touches a
//! socket, so the connection loop, the tests and the benches share them.

pub mod codec;
pub mod response;
