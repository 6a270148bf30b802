//! Scoreboard isolation (issue 5, item 7), against Peruser's defect of one read-write
//! segment every tenant could rewrite: a processor's only shared memory is its own
//! slot; the shared table is held by the supervisor and the multiplexers only, and they
//! see the processors' slots read-only; a tenant's uid cannot reach another tenant's
//! slot through /proc; and garbage a tenant writes into its own slot changes nothing
//! for another environment and crashes no process.

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::*;

const O_ACCMODE: u32 = 0o3;
const O_RDWR: u32 = 0o2;
const O_RDONLY: u32 = 0o0;

fn config(w: &Path) -> String {
    pools_config(
        w,
        "processor_wait_timeout = [1, 4]",
        "min_processors = 1\nmax_processors = 4",
        "min_processors = 1\nmax_processors = 4",
        "",
    )
}

fn served(server: &TestServer, host: &str, body: &str, when: &str) -> Duration {
    let t = Instant::now();
    let r = get(server.addr, host, "/");
    let took = t.elapsed();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, body),
        "{when}: GET {host}/\n{}",
        server.log()
    );
    took
}

/// `memfd:` fds of `pid`: (fd, name, open flags).
fn memfd_fds(pid: i32) -> Vec<(i32, String, u32)> {
    fd_links(pid)
        .into_iter()
        .filter_map(|(fd, t)| {
            let name = t
                .strip_prefix("/memfd:")?
                .trim_end_matches(" (deleted)")
                .to_string();
            Some((fd, name, fd_flags(pid, fd)?))
        })
        .collect()
}

fn name_of(m: &MemfdMap) -> &str {
    m.name.trim_end_matches(" (deleted)")
}

/// The one slot mapping of a processor.
fn slot_of(pid: i32) -> MemfdMap {
    let maps = memfd_maps(pid);
    assert_eq!(maps.len(), 1, "processor {pid} memfd mappings: {maps:#?}");
    maps[0].clone()
}

/// Tries to open each path read-write as `uid` (a python3 child that setuid'd);
/// returns each path's outcome: "OPENED" or the errno name.
fn open_rw_as(uid: u32, paths: &[String]) -> Vec<(String, String)> {
    use std::os::unix::process::CommandExt;
    let script = r#"
import errno, os, sys
for p in sys.argv[1:]:
    try:
        os.close(os.open(p, os.O_RDWR))
        print(p, "OPENED")
    except OSError as e:
        print(p, errno.errorcode.get(e.errno, str(e.errno)))
"#;
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(paths)
        .uid(uid)
        .gid(uid)
        .env_clear()
        .current_dir("/")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect()
}

#[test]
fn processors_map_only_their_own_slot_and_others_see_it_read_only() {
    require_root!();
    let w = Dir::new("processors_map_only_their_own_slot_and_others_see_it_read_only");
    sites(w.path(), 0o600);
    let server = TestServer::start(&config(w.path()));
    served(&server, "alice.test", "alice home", "warm-up");
    served(&server, "bob.test", "bob home", "warm-up");
    let procs: Vec<i32> = server
        .processors_of(ALICE)
        .into_iter()
        .chain(server.processors_of(BOB))
        .collect();
    assert_eq!(procs.len(), 2, "{procs:?}");

    // A processor: one memfd mapping, its slot, writable; never the table. It maps the
    // slot and closes the fd (holding no memfd fd is stricter than holding one), so
    // an fd, if any, must be that same slot, read-write.
    let mut slot_inodes = BTreeSet::new();
    for &p in &procs {
        let m = slot_of(p);
        assert_eq!(name_of(&m), "bulkhead-slot", "processor {p}: {m:?}");
        assert_eq!(m.perms, "rw-s", "processor {p} slot mapping: {m:?}");
        let fds = memfd_fds(p);
        assert!(fds.len() <= 1, "processor {p} memfd fds: {fds:?}");
        for (fd, name, flags) in &fds {
            assert_eq!(name, "bulkhead-slot", "processor {p} fd {fd}");
            assert_eq!(flags & O_ACCMODE, O_RDWR, "processor {p} fd {fd} flags {flags:o}");
        }
        assert!(
            slot_inodes.insert(m.inode),
            "two processors share slot {}",
            m.inode
        );
    }

    // A multiplexer: the table read-write, its own slot read-write, every processor's
    // slot read-only.
    let muxes = server.children("multiplexer");
    assert_eq!(muxes.len(), 2);
    for &mx in &muxes {
        let maps = memfd_maps(mx);
        let table: Vec<&MemfdMap> = maps.iter().filter(|m| name_of(m) == "bulkhead-table").collect();
        assert_eq!(table.len(), 1, "multiplexer {mx} table mappings: {maps:#?}");
        assert_eq!(table[0].perms, "rw-s");
        let writable_slots: Vec<&MemfdMap> = maps
            .iter()
            .filter(|m| name_of(m) == "bulkhead-slot" && m.perms.starts_with("rw"))
            .collect();
        assert_eq!(
            writable_slots.len(),
            1,
            "multiplexer {mx} writes more than its own slot: {maps:#?}"
        );
        for inode in &slot_inodes {
            let views: Vec<&MemfdMap> = maps.iter().filter(|m| m.inode == *inode).collect();
            assert!(!views.is_empty(), "multiplexer {mx} does not watch slot {inode}");
            assert!(
                views.iter().all(|m| m.perms == "r--s"),
                "multiplexer {mx} maps processor slot {inode} writable: {views:?}"
            );
        }
        // Any slot fd it keeps open for a processor's slot is read-only.
        for (fd, name, flags) in memfd_fds(mx) {
            let inode = std::fs::metadata(format!("/proc/{mx}/fd/{fd}")).map(|m| m.ino());
            if name == "bulkhead-slot" && inode.is_ok_and(|i| slot_inodes.contains(&i)) {
                assert_eq!(
                    flags & O_ACCMODE,
                    O_RDONLY,
                    "multiplexer {mx} holds processor slot fd {fd} writable"
                );
            }
        }
    }

    // The supervisor holds the table read-write and every slot through the read-only
    // fd it hands to multiplexers (a reopen O_RDONLY, so even mprotect cannot make a
    // mapping of it writable).
    let sup = memfd_fds(server.pid());
    let slots: Vec<&(i32, String, u32)> = sup.iter().filter(|(_, n, _)| n == "bulkhead-slot").collect();
    assert!(
        slots.len() >= procs.len() + muxes.len(),
        "supervisor slot fds: {sup:?}"
    );
    for (fd, _, flags) in &slots {
        assert_eq!(
            flags & O_ACCMODE,
            O_RDONLY,
            "supervisor slot fd {fd} is not read-only ({flags:o})"
        );
    }
    assert!(
        sup.iter()
            .any(|(_, n, f)| n == "bulkhead-table" && f & O_ACCMODE == O_RDWR),
        "supervisor has no read-write table: {sup:?}"
    );
    // No processor maps the table at all (checked above: one mapping each, the slot).
}

#[test]
fn a_tenant_cannot_open_another_tenants_slot() {
    require_root!();
    let w = Dir::new("a_tenant_cannot_open_another_tenants_slot");
    sites(w.path(), 0o600);
    let server = TestServer::start(&config(w.path()));
    served(&server, "bob.test", "bob home", "warm-up");
    let bob = server.processors_of(BOB)[0];
    let alice = server.processors_of(ALICE)[0];

    // Every way to bob's slot through /proc: its fds (listed here as root), its
    // mapping's map_files entry, and its memory.
    let slot = slot_of(bob);
    let mut paths: Vec<String> = fd_links(bob)
        .iter()
        .map(|(fd, _)| format!("/proc/{bob}/fd/{fd}"))
        .collect();
    let map_file = format!("/proc/{bob}/map_files/{}", slot.range);
    paths.push(map_file.clone());
    paths.push(format!("/proc/{bob}/mem"));
    // The path is right: root can open it (read-only, nothing is written).
    assert!(
        std::fs::File::open(&map_file).is_ok(),
        "{map_file} does not open even as root"
    );

    let results = open_rw_as(ALICE, &paths);
    assert_eq!(results.len(), paths.len(), "{results:?}");
    for (p, r) in &results {
        assert!(
            r == "EACCES" || r == "EPERM",
            "uid {ALICE} opening {p} read-write: {r}, expected EACCES or EPERM"
        );
    }

    // Not even alice's own processor (same uid) from outside: it is not dumpable, so
    // its /proc entries are root's, and map_files needs CAP_SYS_ADMIN besides.
    let own = slot_of(alice);
    let mine = open_rw_as(
        ALICE,
        &[
            format!("/proc/{alice}/map_files/{}", own.range),
            format!("/proc/{alice}/mem"),
        ],
    );
    assert_eq!(mine.len(), 2, "{mine:?}");
    for (p, r) in &mine {
        assert!(
            r == "EACCES" || r == "EPERM",
            "uid {ALICE} opening its own processor's {p} read-write: {r}, expected EACCES or EPERM"
        );
    }
    served(&server, "alice.test", "alice home", "after the attempts");
    served(&server, "bob.test", "bob home", "after the attempts");
}

#[test]
fn garbage_in_a_tenants_own_slot_harms_no_other_environment() {
    require_root!();
    let w = Dir::new("garbage_in_a_tenants_own_slot_harms_no_other_environment");
    sites(w.path(), 0o600);
    let server = TestServer::start(&config(w.path()));
    for _ in 0..10 {
        served(&server, "alice.test", "alice home", "warm-up");
        served(&server, "bob.test", "bob home", "warm-up");
    }
    // One of alice's processors is gone (as after any recycling), so alice has retired
    // totals in the shared table.
    let first = server.processors_of(ALICE)[0];
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    assert!(server.wait_until(Duration::from_secs(5), || !alive(first)));
    served(&server, "alice.test", "alice home", "after a kill");
    assert!(
        server.wait_until(Duration::from_secs(5), || !server.processors_of(ALICE).is_empty()),
        "alice's processor not replaced"
    );

    let snap = scoreboard_json(server.addr);
    let bob_before = env_row(&snap, "bob");
    let bob_requests = bob_before["requests"].as_u64().unwrap();
    assert_eq!(bob_before["availability"].as_u64(), Some(100));

    // Every word of alice's slot set to 0xFF…: what a compromised alice processor can
    // do, through its own read-write mapping. Root writes the same bytes at the same
    // address of that processor's memory (/proc/PID/mem) to stand in for it: the
    // processor is not dumpable, so not even alice's uid can reach it from outside.
    let victim = server.processors_of(ALICE)[0];
    let slot = slot_of(victim);
    // Every process as it is now, and how many deaths were logged: the garbage must
    // change neither.
    let children = server.all_children();
    let died = || {
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("child died"))
            .count()
    };
    let deaths = died();
    let start = u64::from_str_radix(slot.range.split('-').next().unwrap(), 16).unwrap();
    let mut mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{victim}/mem"))
        .unwrap();
    mem.seek(SeekFrom::Start(start)).unwrap();
    mem.write_all(&vec![0xFF; slot.len]).unwrap();
    drop(mem);

    // Bob: served, fast, at full availability, his counters his own. Problems are
    // collected so the reload below runs (and is checked) either way.
    let mut problems = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        let r = get(server.addr, "bob.test", "/");
        let took = t.elapsed();
        if r.status != 200 || r.body != b"bob home" || took > Duration::from_millis(500) {
            problems.push(format!("bob request {i}: {} after {took:?}", r.status));
        }
    }
    let snap = scoreboard_json(server.addr);
    let bob = env_row(&snap, "bob");
    for (field, want) in [
        ("availability", 100),
        ("dropped_saturated", 0),
        ("requests", bob_requests + 30),
    ] {
        if bob[field].as_u64() != Some(want) {
            problems.push(format!(
                "bob's {field} is {:?}, expected {want}",
                bob[field].as_u64()
            ));
        }
    }
    // Alice is still served too (by that processor or another).
    for i in 0..5 {
        let r = get(server.addr, "alice.test", "/");
        if r.status != 200 || r.body != b"alice home" {
            problems.push(format!("alice request {i}: {}", r.status));
        }
    }

    // No process crashed: every child is still there and no death was logged.
    let gone: Vec<i32> = children.iter().copied().filter(|p| !alive(*p)).collect();
    if !gone.is_empty() || died() != deaths || !alive(server.pid()) {
        problems.push(format!(
            "processes died after the garbage: {gone:?} of {children:?}, {} deaths logged",
            died() - deaths
        ));
    }

    // A reload folds the live slots into the new generation's totals: bob's stay his,
    // and nothing overflows.
    server.signal(Signal::SIGHUP);
    assert!(
        server
            .wait_for_log("reload: old generation finished", Duration::from_secs(10))
            .is_some(),
        "reload with a garbage slot did not complete (problems before it: {problems:#?})\n{}",
        server.log()
    );
    served(&server, "alice.test", "alice home", "after the reload");
    served(&server, "bob.test", "bob home", "after the reload");
    let bob = env_row(&scoreboard_json(server.addr), "bob")["requests"].as_u64();
    let ok_before = 30 - problems.iter().filter(|p| p.starts_with("bob request")).count() as u64;
    if bob != Some(bob_requests + ok_before + 1) {
        problems.push(format!(
            "bob's requests after the reload: {bob:?}, expected {}",
            bob_requests + ok_before + 1
        ));
    }
    assert!(
        problems.is_empty(),
        "garbage in alice's slot changed bob's service: {problems:#?}"
    );
}
