//! Free loopback ports for listeners whose port must be known before the server starts (a quorum's CONTROLLER
//! listeners appear in every node's `controller.quorum.voters`; a `sluice server` child process).
//!
//! A port taken from a bind to port 0 lies in the kernel's ephemeral range, where the next outgoing connection of
//! any process may take it before the server binds it. Ports here come from below that range, where only an
//! explicit bind lands, and are never handed out twice by one process; another process can still take one, so
//! callers retry on a bind clash.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::rng::{seed_from_env, Rng};

/// The lowest port handed out.
const LOWEST_PORT: u16 = 10_000;

/// Ports this process has handed out, and the generator choosing candidates.
static HANDED_OUT: Mutex<Option<(HashSet<u16>, Rng)>> = Mutex::new(None);

/// A loopback port free at the time of the call, below the ephemeral range when there is room there.
pub fn free_port() -> u16 {
    let (ephemeral_low, _) = ephemeral_range();
    let mut state = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let (handed_out, rng) = state.get_or_insert_with(|| {
        (
            HashSet::new(),
            Rng::from_seed(seed_from_env("SLUICE_TEST_PORT_SEED")),
        )
    });
    if ephemeral_low > LOWEST_PORT + 1000 {
        let span = u64::from(ephemeral_low - LOWEST_PORT);
        for _ in 0..1000 {
            let port = LOWEST_PORT + rng.below(span) as u16;
            if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range (or it is full): the kernel's choice.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a loopback port")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// `net.ipv4.ip_local_port_range`, or Linux's default when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            match (parts.next(), parts.next()) {
                (Some(Ok(low)), Some(Ok(high))) => Some((low, high)),
                _ => None,
            }
        })
        .unwrap_or((32_768, 60_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let (low, _) = ephemeral_range();
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            if low > LOWEST_PORT + 1000 {
                assert!((LOWEST_PORT..low).contains(&port), "{port}");
            }
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
