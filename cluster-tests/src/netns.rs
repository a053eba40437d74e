//! Per-node network namespaces, so a test can cut the network between chosen
//! pairs of nodes (this kernel has no netem).
//!
//! ```text
//!   root namespace (the test, its clients)      10.R.S.254 on bridge rvbr<pid>
//!        │ bridge
//!        ├── veth ── netns rv<pid>-1: eth0 10.R.S.1   (node 1 listens here)
//!        ├── veth ── netns rv<pid>-2: eth0 10.R.S.2
//!        └── veth ── netns rv<pid>-3: eth0 10.R.S.3
//! ```
//!
//! A cut between nodes a and b is a pair of blackhole routes (a → b inside
//! a's namespace, b → a inside b's): packets vanish without an error, as on a
//! real partition, and the test's own connections to both stay up. Needs
//! root and iproute2; [`Net::create`] says why when it cannot, and tests skip.
//! Dropping the `Net` deletes the namespaces, the bridge and the firewall
//! rule that lets bridged traffic through (Docker sets FORWARD to DROP).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Mutex;

/// The namespaces of one cluster.
#[derive(Debug)]
pub struct Net {
    tag: String,
    bridge: String,
    subnet: (u8, u8),
    nodes: Vec<u64>,
    cuts: Mutex<BTreeSet<(u64, u64)>>,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Creates a namespace per node id in `nodes`, on one bridge.
    pub fn create(nodes: &[u64]) -> Result<Self, String> {
        let pid = std::process::id();
        let tag = format!("rv{pid}");
        // A /24 per test process, away from docker's 172.16/12.
        let subnet = (77, u8::try_from(pid % 250).unwrap_or(0) + 1);
        let net = Self {
            bridge: format!("{tag}br"),
            tag,
            subnet,
            nodes: nodes.to_vec(),
            cuts: Mutex::new(BTreeSet::new()),
        };
        net.cleanup(); // leftovers of an earlier run with the same pid
        remove_stale();
        net.setup().inspect_err(|_| net.cleanup())?;
        Ok(net)
    }

    fn setup(&self) -> Result<(), String> {
        let br = self.bridge.as_str();
        run(&["ip", "link", "add", br, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.gateway()),
            "dev",
            br,
        ])?;
        run(&["ip", "link", "set", br, "up"])?;
        run(&[
            "iptables", "-I", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT",
        ])?;
        for &id in &self.nodes {
            let ns = self.namespace(id);
            let host_end = format!("{}v{id}", self.tag);
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            run(&["ip", "link", "set", &host_end, "master", br])?;
            run(&["ip", "link", "set", &host_end, "up"])?;
            let addr = format!("{}/24", self.ip(id));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn cleanup(&self) {
        for &id in &self.nodes {
            let _ = run(&["ip", "netns", "del", &self.namespace(id)]);
        }
        let br = self.bridge.as_str();
        let _ = run(&[
            "iptables", "-D", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT",
        ]);
        let _ = run(&["ip", "link", "del", br]);
    }

    /// The namespace node `id` runs in.
    pub fn namespace(&self, id: u64) -> String {
        format!("{}-{id}", self.tag)
    }

    /// Node `id`'s address.
    pub fn ip(&self, id: u64) -> IpAddr {
        let last = u8::try_from(id).expect("node ids below 250 in a netns cluster");
        IpAddr::V4(Ipv4Addr::new(10, self.subnet.0, self.subnet.1, last))
    }

    fn gateway(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 254))
    }

    fn route(&self, verb: &str, from: u64, to: u64) -> Result<(), String> {
        let dst = format!("{}/32", self.ip(to));
        run(&[
            "ip",
            "-n",
            &self.namespace(from),
            "route",
            verb,
            "blackhole",
            &dst,
        ])
    }

    /// Cuts the network between `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) -> Result<(), String> {
        let key = (a.min(b), a.max(b));
        if !self
            .cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            return Ok(());
        }
        self.route("add", a, b)?;
        self.route("add", b, a)
    }

    /// Restores the network between `a` and `b`.
    pub fn heal(&self, a: u64, b: u64) -> Result<(), String> {
        let key = (a.min(b), a.max(b));
        if !self
            .cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
        {
            return Ok(());
        }
        self.route("del", a, b)?;
        self.route("del", b, a)
    }

    /// Restores every cut.
    pub fn heal_all(&self) -> Result<(), String> {
        let cuts: Vec<(u64, u64)> = self
            .cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for (a, b) in cuts {
            self.heal(a, b)?;
        }
        Ok(())
    }

    /// The cuts in place.
    pub fn cuts(&self) -> Vec<(u64, u64)> {
        self.cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// The pid in a name made by [`Net`] (`rv<pid>br`, `rv<pid>-<id>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("rv")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    (tail == "br" || tail.starts_with('-')).then(|| digits.parse().ok())?
}

/// Deletes namespaces and bridges left by test processes that died without
/// dropping their `Net` (a timeout kill), so their subnets are free again.
fn remove_stale() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let list = |args: &[&str]| -> Vec<String> {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    for ns in list(&["netns", "list"]).into_iter().filter(|n| dead(n)) {
        let _ = run(&["ip", "netns", "del", &ns]);
    }
    // `-o` lines read "<index>: <name>: <flags> ...".
    let bridges: Vec<String> = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    for br in bridges.into_iter().filter(|b| dead(b)) {
        let _ = run(&[
            "iptables", "-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT",
        ]);
        let _ = run(&["ip", "link", "del", &br]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn names_made_here_name_their_process() {
        assert_eq!(owner_pid("rv1234br"), Some(1234));
        assert_eq!(owner_pid("rv1234-3"), Some(1234));
        assert_eq!(owner_pid("rv1234v3"), None);
        assert_eq!(owner_pid("docker0"), None);
        assert_eq!(owner_pid("rvbr"), None);
    }
}
