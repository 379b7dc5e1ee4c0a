//! Two real `mnemon serve` processes on two hosts of their own: network namespaces joined
//! by a veth pair (`ip netns`), with loss and latency from `tc netem` where the kernel
//! has it. A partition (the link down) longer than QUIC's idle timeout, writes on both
//! sides meanwhile, then the heal: the nodes find each other again and converge.
//!
//! Needs root and `ip`; where the machine does not allow namespaces the test says why
//! and skips.

use std::process::Command;
use std::time::Duration;

use mnemon_tests::{Served, TestCli, eventually};

const WAIT: Duration = Duration::from_secs(120);

/// Two namespaces and the veth pair between them; removed on drop.
struct Hosts {
    names: [String; 2],
    links: [String; 2],
    addrs: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    fn new() -> Result<Hosts, String> {
        let id = std::process::id() % 100_000;
        let subnet = 16 + id % 200;
        let hosts = Hosts {
            names: [format!("mn{id}a"), format!("mn{id}b")],
            links: [format!("mn{id}x"), format!("mn{id}y")],
            addrs: [format!("10.{subnet}.7.1"), format!("10.{subnet}.7.2")],
        };
        // From here on, drop cleans up whatever was made.
        for ns in &hosts.names {
            ip(&["netns", "add", ns])?;
        }
        let [a, b] = &hosts.names;
        let [la, lb] = &hosts.links;
        ip(&["link", "add", la, "type", "veth", "peer", "name", lb])?;
        for ((ns, link), addr) in hosts.names.iter().zip(&hosts.links).zip(&hosts.addrs) {
            ip(&["link", "set", link, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", link])?;
            ip(&["-n", ns, "link", "set", link, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let _ = (a, b);
        Ok(hosts)
    }

    /// Adds loss and latency to both ends; says why not where the kernel cannot.
    fn netem(&self) -> Result<(), String> {
        for (ns, link) in self.names.iter().zip(&self.links) {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "qdisc", "add", "dev", link, "root",
                ])
                .args(["netem", "delay", "25ms", "10ms", "loss", "5%"])
                .output()
                .map_err(|e| format!("tc: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            }
        }
        Ok(())
    }

    fn link(&self, up: bool) {
        for (ns, link) in self.names.iter().zip(&self.links) {
            ip(&[
                "-n",
                ns,
                "link",
                "set",
                link,
                if up { "up" } else { "down" },
            ])
            .expect("link");
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The collection's sync state with the one peer, from `peers --json`.
fn sync_state(cli: &TestCli) -> String {
    let peers = cli.run(&["peers", "--json"]).json();
    peers[0]["sync"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn two_hosts_partitioned_longer_than_the_idle_timeout_heal_and_converge() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        eprintln!("skipped: network namespaces need root (ip netns add)");
        return;
    }
    let hosts = match Hosts::new() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("skipped: this machine does not allow network namespaces: {e}");
            return;
        }
    };
    match hosts.netem() {
        Ok(()) => eprintln!("netem: 25 ms ± 10 ms latency and 5% loss each way"),
        Err(e) => eprintln!(
            "netem is not available here ({e}; the kernel lacks sch_netem): \
             the partition runs without added loss and latency"
        ),
    }
    let a = TestCli::in_netns(&hosts.names[0]);
    let b = TestCli::in_netns(&hosts.names[1]);
    a.init();
    b.init();
    let p2p = |i: usize| format!("/ip4/{}/udp/0/quic-v1", hosts.addrs[i]);
    let sa = Served::spawn(&a, &["--p2p", &p2p(0), "--no-mdns"]);
    let sb = Served::spawn(&b, &["--p2p", &p2p(1), "--no-mdns"]);
    assert!(
        sa.p2p
            .as_deref()
            .is_some_and(|addr| addr.contains(&hosts.addrs[0])),
        "{:?}",
        sa.p2p
    );
    a.run(&["collection", "new", "shared"]).ok();
    let ticket = a
        .run(&["invite", "shared", "--role", "write"])
        .ok()
        .to_owned();
    b.run(&["join", &ticket]).ok();
    let first = a
        .run(&[
            "add",
            "--collection",
            "shared",
            "the water meter is in the cellar",
        ])
        .ok()
        .to_owned();
    eventually("B receives A's memory across the veth", WAIT, || {
        b.run(&["get", &first]).success
    });
    eventually("both sides say in sync", WAIT, || {
        sync_state(&a) == "in_sync" && sync_state(&b) == "in_sync"
    });

    // Partition, longer than the QUIC idle timeout, with writes on both sides.
    hosts.link(false);
    let on_a = a
        .run(&["add", "--collection", "shared", "written on A while apart"])
        .ok()
        .to_owned();
    let on_b = b
        .run(&["add", "--collection", "shared", "written on B while apart"])
        .ok()
        .to_owned();
    a.run(&["edit", &first, "--title", "Water meter"]).ok();
    b.run(&["edit", &first, "--add-tag", "house"]).ok();
    eventually("the connection dies on both sides", WAIT, || {
        let gone = |cli: &TestCli| cli.run(&["peers", "--json"]).json()[0]["connected"] == false;
        gone(&a) && gone(&b)
    });
    assert!(
        !a.run(&["get", &on_b]).success,
        "nothing crossed the partition"
    );

    // Heal: the nodes dial each other again by themselves and converge.
    hosts.link(true);
    for (name, cli) in [("A", &a), ("B", &b)] {
        eventually(&format!("{name} has everything"), WAIT, || {
            cli.run(&["get", &on_a]).success
                && cli.run(&["get", &on_b]).success
                && cli
                    .run(&["get", &first, "--json"])
                    .json()
                    .as_object()
                    .is_some_and(|m| {
                        m["title"] == "Water meter"
                            && m["tags"]
                                .as_array()
                                .is_some_and(|t| t.iter().any(|t| t == "house"))
                    })
        });
    }
    eventually("both sides say in sync again", WAIT, || {
        sync_state(&a) == "in_sync" && sync_state(&b) == "in_sync"
    });
    sb.stop();
    sa.stop();
}
