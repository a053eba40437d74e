//! Node log files: tails for failure reports and the scan for unexpected
//! `ERROR` lines.

use std::path::Path;

/// ERROR lines every test tolerates: substrings, each with the reason.
///
/// openraft logs at ERROR level whenever a Raft RPC to a peer fails, which is
/// the expected state of affairs while a test has killed, stopped or paused
/// that peer. Only those failures are allowed: an RPC that fails for another
/// reason (a message that does not decode, a remote error) still fails the
/// test.
pub const DEFAULT_ALLOWED_ERRORS: &[(&str, &str)] = &[
    (
        "Unreachable node:",
        "a Raft RPC (AppendEntries, Vote, the read-index round of \
         ensure_linearizable) to a dead peer: the Raft network reports a refused \
         connection, Unavailable or a deadline as RPCError::Unreachable",
    ),
    (
        "timeout after ",
        "openraft's own deadline on a Raft RPC (AppendEntries or Vote) expired: \
         the peer is paused",
    ),
    (
        "TransportError: Internal error: h2 protocol error",
        "a peer that shuts down gracefully resets the HTTP/2 streams of Raft \
         RPCs in flight; tonic reports that as Internal",
    ),
    (
        "TransportError: Some resource has been exhausted: h2 protocol error",
        "after a network cut heals, the HTTP/2 connection of a Raft peer that \
         timed out its streams meanwhile is reset (ResourceExhausted); the \
         RPC is retried on a new connection",
    ),
];

/// Removes ANSI colour sequences (in case the node colours its output).
pub(crate) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (0x40..=0x7e).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether a log line reports an error: the level field (one of the first
/// few words, after the timestamp) is `ERROR`, or the process panicked.
pub(crate) fn is_error_line(line: &str) -> bool {
    line.split_whitespace().take(4).any(|w| w == "ERROR") || line.contains("panicked at")
}

/// The whole log, ANSI-stripped, one entry per line (empty if unreadable).
pub(crate) fn read_lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(strip_ansi)
        .collect()
}

/// The last `n` lines of the log.
pub(crate) fn tail(path: &Path, n: usize) -> Vec<String> {
    let mut lines = read_lines(path);
    let skip = lines.len().saturating_sub(n);
    lines.drain(..skip);
    lines
}

/// Whether `line` reports an error that contains none of `allowed`.
pub(crate) fn is_unexpected(line: &str, allowed: &[&str]) -> bool {
    is_error_line(line) && !allowed.iter().any(|a| line.contains(a))
}

/// The log's error lines that contain none of `allowed`.
pub(crate) fn unexpected_errors(path: &Path, allowed: &[&str]) -> Vec<String> {
    read_lines(path)
        .into_iter()
        .filter(|l| is_unexpected(l, allowed))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_found_by_level_not_by_message() {
        assert!(is_error_line(
            "2025-01-01T00:00:00.000Z ERROR node{id=1}: openraft::replication: RPCError"
        ));
        assert!(is_error_line(
            "node=2 2025-01-01T00:00:00.000Z ERROR openraft::replication: RPCError"
        ));
        assert!(is_error_line("thread 'main' panicked at src/main.rs:1:1"));
        assert!(!is_error_line(
            "2025-01-01T00:00:00.000Z  INFO node{id=1}: x: reply ERROR code 3"
        ));
        assert_eq!(
            strip_ansi("\u{1b}[31mERROR\u{1b}[0m node=1"),
            "ERROR node=1"
        );
    }

    #[test]
    fn only_peer_failures_are_allowed_by_default() {
        let allowed: Vec<&str> = DEFAULT_ALLOWED_ERRORS.iter().map(|(s, _)| *s).collect();
        let prefix =
            "node=3 2026-11-22T00:21:40.135296Z ERROR openraft::replication: RPCError err=";
        for expected in [
            "Unreachable node: rivulet_metadata::quorum::network::TransportError: \
             The service is currently unavailable: tcp connect error",
            "timeout after 1s when AppendEntries 3->1",
            "NetworkError: rivulet_metadata::quorum::network::TransportError: \
             Internal error: h2 protocol error: http2 error",
        ] {
            assert!(!is_unexpected(&format!("{prefix}{expected}"), &allowed));
        }
        let decode = "NetworkError: rivulet_metadata::quorum::network::TransportError: \
                      cannot decode raft message: EOF";
        assert!(is_unexpected(&format!("{prefix}{decode}"), &allowed));
        assert!(is_unexpected(
            "node=1 2026-11-22T00:21:40.1Z ERROR node{id=1}: x: gRPC server failed",
            &allowed
        ));
    }
}
