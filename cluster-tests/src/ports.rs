//! Port reservation: ask the kernel for free ports on 127.0.0.1.
//!
//! Every port is bound (port 0) before any is released, so one reservation
//! never hands out the same port twice. Between the release here and the
//! node's own bind another process may take a port; the harness sees the node
//! exit with "address in use" and retries (see `Cluster::start`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// `n` distinct free loopback addresses.
pub(crate) fn reserve(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound listener has an address"))
        .collect()
}
