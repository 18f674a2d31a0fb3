//! Taking a container's lock back from the orphans of a SIGKILLed plexus: the owner record a holder
//! writes into the lock file, the scan of `/proc` for the processes that hold the locked file, the
//! judgement of whether its owner is dead, and the kill (RELIABILITY.md, "The container's lock and
//! orphaned delegates").
//!
//! `/proc` is read by hand: three fields of `stat` and one line of `fdinfo` do not justify the `procfs`
//! crate in the thin binary, which has a size budget (README).

use std::{
    collections::BTreeSet,
    fs::File,
    os::unix::fs::{FileExt, MetadataExt},
    path::Path,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use rustix::process::{Pid, PidfdFlags, Signal};

/// Who took a lock: a process, named so that a reused pid is not mistaken for it (the start time, in
/// clock ticks after boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The process (in the daemon: the daemon, whichever thread took the lock).
    pub pid: i32,
    /// Its start time.
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn this_process() -> Option<Owner> {
        static ME: OnceLock<Option<Owner>> = OnceLock::new();
        *ME.get_or_init(|| {
            let pid = std::process::id() as i32;
            Some(Owner {
                pid,
                start: ProcStat::read(pid)?.start,
            })
        })
    }

    /// The record's text: one line, so a record cut short fails to parse.
    fn render(&self) -> String {
        format!("owner pid={} start={}\n", self.pid, self.start)
    }

    /// The record in `text`, when its first line is a whole one. What follows that line is the tail of
    /// a longer record written before: [`write_record`] writes in place, then truncates, and a kill
    /// between the two leaves it.
    pub fn parse(text: &str) -> Option<Owner> {
        let line = text.split_inclusive('\n').next()?.strip_suffix('\n')?;
        let rest = line.strip_prefix("owner pid=")?;
        let (pid, start) = rest.split_once(" start=")?;
        Some(Owner {
            pid: pid.parse().ok().filter(|p| *p > 0)?,
            start: start.parse().ok()?,
        })
    }
}

/// Record this process as the owner of the lock on `file`, just taken. Written in place, not by rename:
/// the lock lives on the inode, and the record is read only by a waiter that could not take the lock,
/// which treats a torn record as none. Not fsynced: it names processes, which a reboot ends anyway.
pub(super) fn write_record(file: &File) {
    let Some(me) = Owner::this_process() else {
        return;
    };
    let text = me.render();
    // A read-only descriptor (read-only cniDir) cannot take a record: a waiter then goes by the kernel's
    // view of the lock alone ([`judge`]).
    if file.write_all_at(text.as_bytes(), 0).is_ok() {
        let _ = file.set_len(text.len() as u64);
    }
}

/// The owner record in the lock file `file`, if a whole one is there.
pub fn read_record(file: &File) -> Option<Owner> {
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).ok()?;
    Owner::parse(std::str::from_utf8(&buf[..n]).ok()?)
}

/// What `/proc/<pid>/stat` says of a process, as far as the recovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcStat {
    comm: String,
    state: char,
    pgrp: i32,
    start: u64,
}

impl ProcStat {
    fn read(pid: i32) -> Option<ProcStat> {
        ProcStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// The command name is in parentheses and may itself hold spaces and parentheses: the fields
    /// after it start past the last `)`.
    fn parse(text: &str) -> Option<ProcStat> {
        let (head, tail) = text.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let fields: Vec<&str> = tail.split_whitespace().collect();
        Some(ProcStat {
            comm,
            state: fields.first()?.chars().next()?,
            pgrp: fields.get(2)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }
}

/// A process holding the lock file open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The process.
    pub pid: i32,
    /// When this descriptor's open file description is the one holding the `flock`: the pid the kernel
    /// recorded for it, that of the process that took it (`/proc/<pid>/fdinfo/<fd>`, its `lock:` line).
    /// `None` for any other open of the file, such as a waiter's.
    pub locked_by: Option<i32>,
}

/// The pid in the `FLOCK` line of an fdinfo text, for the lock on inode `ino` (blocked requests, marked
/// `->`, are not the lock).
fn flock_pid(fdinfo: &str, ino: u64) -> Option<i32> {
    let inode = format!(":{ino}");
    fdinfo.lines().find_map(|l| {
        let t: Vec<&str> = l.strip_prefix("lock:")?.split_whitespace().collect();
        (t.get(1) == Some(&"FLOCK") && t.get(5).is_some_and(|d| d.ends_with(&inode)))
            .then(|| t.get(4)?.parse().ok())
            .flatten()
    })
}

/// Every process with a descriptor on the file `(dev, ino)`, from `/proc/*/fd` under `proc`. Processes
/// come and go during the scan, and some may not be readable: those are passed over.
pub fn holders(proc: &Path, dev: u64, ino: u64) -> Vec<Holder> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir(proc) else {
        return out;
    };
    for p in procs.filter_map(Result::ok) {
        if let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            out.extend(descriptors_on(&p.path(), pid, dev, ino));
        }
    }
    out
}

/// Process `pid`'s descriptors on the file `(dev, ino)`, from its `/proc` directory `dir`.
fn descriptors_on(dir: &Path, pid: i32, dev: u64, ino: u64) -> Vec<Holder> {
    let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
        return Vec::new();
    };
    fds.filter_map(Result::ok)
        // The descriptor's link resolves to the file itself in whatever mount namespace the holder is (a
        // delegate of the daemon runs in the host's root): compare inodes, not paths.
        .filter(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
        .map(|fd| Holder {
            pid,
            locked_by: std::fs::read_to_string(dir.join("fdinfo").join(fd.file_name()))
                .ok()
                .and_then(|t| flock_pid(&t, ino)),
        })
        .collect()
}

/// What a waiter may do about a lock it could not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The process that took the lock lives (or might): wait, and never kill.
    LiveOwner(i32),
    /// It is dead, and `pids` hold its locked file: orphans, all descended from it.
    Orphans {
        /// The dead owner.
        owner: i32,
        /// The holders, sorted, each once.
        pids: Vec<i32>,
    },
    /// Nothing to go by (the lock was freed meanwhile, or the kernel does not say who took it): wait.
    Unknown(&'static str),
}

/// Judge the `holders` of a lock. Conservative: the owner counts as dead only when the kernel's pid for
/// the lock names no process, or one that started at another time than the `record` says (its pid was
/// reused); and never while a holder of the locked file is that pid, or is this process (`me`).
/// `start_of` gives a live process's start time. Assumes this process sees the initial pid namespace,
/// where the kernel keeps a dead owner's pid.
pub fn judge(
    holders: &[Holder],
    record: Option<Owner>,
    me: i32,
    start_of: impl Fn(i32) -> Option<u64>,
) -> Verdict {
    let locked: Vec<(i32, i32)> = holders
        .iter()
        .filter_map(|h| Some((h.pid, h.locked_by?)))
        .collect();
    let Some(&(_, taker)) = locked.first() else {
        return Verdict::Unknown("no process holds the locked file");
    };
    if locked.iter().any(|&(_, by)| by != taker) {
        return Verdict::Unknown("the holders disagree on who took the lock");
    }
    if taker < 0 {
        return Verdict::Unknown("the lock was not taken by a process of this node");
    }
    if locked.iter().any(|&(pid, _)| pid == taker || pid == me) {
        return Verdict::LiveOwner(taker);
    }
    // Pid 0: an older kernel shows a dead owner's freed pid so.
    let dead = taker == 0
        || match start_of(taker) {
            None => true,
            Some(start) => record.is_some_and(|r| r.pid == taker && r.start != start),
        };
    if !dead {
        return Verdict::LiveOwner(taker);
    }
    let pids: BTreeSet<i32> = locked.iter().map(|&(pid, _)| pid).collect();
    Verdict::Orphans {
        owner: taker,
        pids: pids.into_iter().collect(),
    }
}

/// Processes killed by [`recover`] in this process's life (the daemon's `plexus_orphans_killed_total`).
static KILLED: AtomicU64 = AtomicU64::new(0);

/// How many processes this process has killed as orphans holding a container's lock.
pub fn killed_total() -> u64 {
    KILLED.load(Ordering::Relaxed)
}

/// Whether this process sees the initial pid namespace (its fixed inode number, `PROC_PID_INIT_INO`):
/// only there does the kernel's pid for a lock name the same process for every plexus of the node.
fn in_initial_pid_namespace() -> bool {
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == PROC_PID_INIT_INO)
}

/// Whether `pid` holds a locked description of `(dev, ino)` now, taken by `taker` (`None`: by anyone).
fn holds_locked(pid: i32, dev: u64, ino: u64, taker: Option<i32>) -> bool {
    descriptors_on(Path::new(&format!("/proc/{pid}")), pid, dev, ino)
        .iter()
        .any(|h| h.locked_by.is_some() && (taker.is_none() || h.locked_by == taker))
}

/// The live processes of group `pgrp` (for the log), each with its command name.
fn group_members(pgrp: i32) -> Vec<(i32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|p| p.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, ProcStat::read(pid)?)))
        .filter(|(_, s)| s.pgrp == pgrp && s.state != 'Z')
        .map(|(pid, s)| (pid, s.comm))
        .collect()
}

/// When the owner of the lock on `file` (the lock file of `container_id`, opened by this waiter) is dead,
/// SIGKILL the processes still holding it, and the process group of each unless that group is this
/// process's own or led by a live process that does not hold the lock. Returns how many processes were signalled. Logs what it killed at warn.
pub(super) fn recover(file: &File, container_id: &str) -> usize {
    if !in_initial_pid_namespace() {
        tracing::warn!(
            container = container_id,
            "the container's lock is still held, but plexus does not see the node's pid namespace (hostPID), \
             so it cannot tell whether the holder's plexus is dead and kills nothing"
        );
        return 0;
    }
    let Ok(meta) = file.metadata() else {
        return 0;
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    let me = std::process::id() as i32;
    let found = holders(Path::new("/proc"), dev, ino);
    let verdict = judge(&found, read_record(file), me, |pid| {
        ProcStat::read(pid).map(|s| s.start)
    });
    let (owner, pids) = match verdict {
        Verdict::Orphans { owner, pids } => (owner, pids),
        Verdict::LiveOwner(pid) => {
            tracing::debug!(
                container = container_id,
                owner = pid,
                "the container's lock is held by a live process; waiting"
            );
            return 0;
        }
        Verdict::Unknown(why) => {
            tracing::debug!(container = container_id, "not recovering the lock: {why}");
            return 0;
        }
    };
    let killed = kill_orphans(owner, &pids, dev, ino, container_id);
    KILLED.fetch_add(killed as u64, Ordering::Relaxed);
    killed
}

/// SIGKILL the orphans `pids` of the dead `owner` found holding the lock on `(dev, ino)` (and their groups,
/// as [`recover`] says). The scan behind them is not a snapshot and another waiter may have recovered
/// since: nothing is killed when the owner's pid now holds a lock on the file (it took the lock after
/// the scan passed it), and a holder is killed only while it still holds the lock that owner took, so a
/// new owner's delegate is never taken for an orphan of the old one.
fn kill_orphans(owner: i32, pids: &[i32], dev: u64, ino: u64, container_id: &str) -> usize {
    if holds_locked(owner, dev, ino, None) {
        return 0;
    }
    let me = std::process::id() as i32;
    let own_group = rustix::process::getpgrp().as_raw_nonzero().get();
    let mut groups_killed = BTreeSet::new();
    let mut killed = 0;
    for &pid in pids {
        let Some(p) = Pid::from_raw(pid) else {
            continue;
        };
        // Pin the process first, then check it still holds the locked file: a pid freed and reused since
        // the scan is never signalled.
        let Ok(pidfd) = rustix::process::pidfd_open(p, PidfdFlags::empty()) else {
            continue;
        };
        let Some(stat) = ProcStat::read(pid).filter(|_| holds_locked(pid, dev, ino, Some(owner)))
        else {
            continue;
        };
        if pid == me || pid == 1 {
            continue;
        }
        // Its group is the delegate's (plexus starts each in a group of its own) or one it made: all of it
        // is this container's orphan. Never plexus's own group, nor init's, nor one whose leader lives
        // without holding the lock (a group the orphan joined: it could be anyone's).
        let leader_is_orphan = |g: i32| {
            ProcStat::read(g).is_none_or(|l| l.state == 'Z')
                || holds_locked(g, dev, ino, Some(owner))
        };
        let group = (stat.pgrp > 1 && stat.pgrp != own_group && leader_is_orphan(stat.pgrp))
            .then_some(stat.pgrp);
        if let Some(g) = group {
            if !groups_killed.insert(g) {
                continue;
            }
            let members = group_members(g);
            if Pid::from_raw(g)
                .is_some_and(|g| rustix::process::kill_process_group(g, Signal::KILL).is_ok())
            {
                for (member, comm) in &members {
                    tracing::warn!(
                        container = container_id,
                        pid = member,
                        command = %comm,
                        pgid = g,
                        dead_owner = owner,
                        "killed an orphan of a dead plexus (the process group of a holder of the container's lock)"
                    );
                }
                killed += members.len();
                continue;
            }
        }
        if rustix::process::pidfd_send_signal(&pidfd, Signal::KILL).is_ok() {
            tracing::warn!(
                container = container_id,
                pid,
                command = %stat.comm,
                dead_owner = owner,
                "killed an orphan of a dead plexus holding the container's lock"
            );
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_record_round_trips_and_a_torn_one_is_none() {
        let me = Owner::this_process().expect("this process's start time");
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(Owner::parse(&me.render()), Some(me));
        for torn in [
            "",
            "owner pid=12 start=3",
            "owner pid=12\n",
            "owner pid=0 start=3\n",
            "owner pid=12 start=34x\n",
            "owner pid=12 sta\nrt=3\n",
        ] {
            assert_eq!(Owner::parse(torn), None, "{torn:?}");
        }
    }

    /// A kill between the in-place write of a record and the truncation leaves the tail of the longer
    /// record before it on a second line: the first line is the whole new record.
    #[test]
    fn a_record_left_untruncated_by_a_kill_is_read() {
        let left = "owner pid=7 start=5\n0 start=1234567\n";
        assert_eq!(Owner::parse(left), Some(Owner { pid: 7, start: 5 }));
        let d = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(d.path().join("c"))
            .unwrap();
        file.write_all_at(left.as_bytes(), 0).unwrap();
        assert_eq!(read_record(&file), Some(Owner { pid: 7, start: 5 }));
    }

    #[test]
    fn stat_fields_past_a_command_with_parentheses() {
        let s = ProcStat::parse(
            "42 (a) b (c)) S 1 40 40 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0",
        )
        .unwrap();
        assert_eq!(
            s,
            ProcStat {
                comm: "a) b (c)".into(),
                state: 'S',
                pgrp: 40,
                start: 98765
            }
        );
    }

    #[test]
    fn the_flock_line_of_the_file_gives_its_pid() {
        let info = "pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t77\n\
                    lock:\t1: FLOCK  ADVISORY  WRITE 497 fe:00:77 0 EOF\n";
        assert_eq!(flock_pid(info, 77), Some(497));
        assert_eq!(flock_pid(info, 7), None, "another inode's lock");
        assert_eq!(flock_pid("pos:\t0\nino:\t77\n", 77), None, "no lock");
        let blocked = "lock:\t1: -> FLOCK  ADVISORY  WRITE 498 fe:00:77 0 EOF\n";
        assert_eq!(flock_pid(blocked, 77), None, "a blocked request");
        let posix = "lock:\t1: POSIX  ADVISORY  WRITE 499 fe:00:77 0 EOF\n";
        assert_eq!(flock_pid(posix, 77), None);
    }

    fn h(pid: i32, locked_by: Option<i32>) -> Holder {
        Holder { pid, locked_by }
    }

    #[test]
    fn judge_kills_only_when_the_owner_is_dead() {
        let me = 1000;
        let alive = |pids: &'static [(i32, u64)]| {
            move |pid: i32| pids.iter().find(|(p, _)| *p == pid).map(|(_, s)| *s)
        };
        let orphans = |pids: &[i32]| Verdict::Orphans {
            owner: 7,
            pids: pids.to_vec(),
        };
        // The owner (7) is gone; its delegate (20) and that one's child (21) hold the lock; a waiter (30)
        // has its own open of the file, and is not touched.
        let held = [h(20, Some(7)), h(21, Some(7)), h(30, None), h(20, Some(7))];
        assert_eq!(judge(&held, None, me, alive(&[])), orphans(&[20, 21]));
        // Its pid reused by another process: the record's start time tells them apart.
        let rec = Some(Owner { pid: 7, start: 5 });
        assert_eq!(judge(&held, rec, me, alive(&[(7, 6)])), orphans(&[20, 21]));
        // The owner lives (same start), or might (no record to compare with, or the record of another).
        assert_eq!(
            judge(&held, rec, me, alive(&[(7, 5)])),
            Verdict::LiveOwner(7)
        );
        assert_eq!(
            judge(&held, None, me, alive(&[(7, 6)])),
            Verdict::LiveOwner(7)
        );
        let other = Some(Owner { pid: 8, start: 5 });
        assert_eq!(
            judge(&held, other, me, alive(&[(7, 6)])),
            Verdict::LiveOwner(7)
        );
        // The taker holds the file itself: live, whatever the record says (it took the lock, and has not
        // written its record yet).
        let with_owner = [h(7, Some(7)), h(20, Some(7))];
        assert_eq!(
            judge(&with_owner, rec, me, alive(&[(7, 6)])),
            Verdict::LiveOwner(7)
        );
        // Never this process.
        let with_me = [h(me, Some(7)), h(20, Some(7))];
        assert_eq!(judge(&with_me, None, me, alive(&[])), Verdict::LiveOwner(7));
        // Nothing to go by.
        assert!(matches!(
            judge(&[h(30, None)], None, me, alive(&[])),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            judge(&[h(20, Some(-1))], None, me, alive(&[])),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            judge(&[h(20, Some(7)), h(21, Some(9))], None, me, alive(&[])),
            Verdict::Unknown(_)
        ));
    }

    fn sleeper(stdin: std::process::Stdio, own_group: bool) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new("sleep");
        c.arg("60").stdin(stdin);
        if own_group {
            c.process_group(0);
        }
        c.spawn().expect("spawn sleep")
    }

    /// A child in a group of its own holding a duplicate of `file`'s (locked) descriptor; `(child, pid,
    /// dev, ino)`.
    fn locked_child(file: &File) -> (std::process::Child, i32, u64, u64) {
        let child = sleeper(file.try_clone().unwrap().into(), true);
        let pid = child.id() as i32;
        let m = file.metadata().unwrap();
        (child, pid, m.dev(), m.ino())
    }

    /// A pid that no process has (one just reaped).
    fn dead_pid() -> i32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id() as i32
    }

    fn alive(pid: i32) -> bool {
        ProcStat::read(pid).is_some_and(|s| s.state != 'Z')
    }

    /// [`kill_orphans`] told that `owner` took the lock this process holds, and that a child holding it
    /// is its orphan: how many it killed, and whether the child still runs.
    fn kill_orphans_as(owner: i32) -> (usize, bool) {
        let d = tempfile::tempdir().unwrap();
        let file = File::create(d.path().join("c")).unwrap();
        file.lock().unwrap();
        let (mut child, pid, dev, ino) = locked_child(&file);
        let killed = kill_orphans(owner, &[pid], dev, ino, "c");
        let runs = alive(pid);
        let _ = child.kill();
        let _ = child.wait();
        (killed, runs)
    }

    /// A verdict gone stale: the orphans of a dead owner were killed by another waiter, which then took the
    /// lock and ran a delegate; the pid in the stale list now names a process holding the NEW owner's lock
    /// (here, a pid reused by this process's child). It is not killed.
    #[test]
    fn a_holder_of_another_owners_lock_is_not_killed_on_a_stale_verdict() {
        let (killed, runs) = kill_orphans_as(dead_pid());
        assert_eq!(
            (killed, runs),
            (0, true),
            "a new owner's delegate was killed"
        );
    }

    /// The scan passed the owner's pid before it took the lock, and a record gone stale (read-only
    /// `cniDir`, where a record cannot be rewritten, and a reused pid) made it look dead: the owner holds
    /// the lock now, so nothing is killed.
    #[test]
    fn nothing_is_killed_when_the_owner_is_found_holding_the_lock() {
        let (killed, runs) = kill_orphans_as(std::process::id() as i32);
        assert_eq!(
            (killed, runs),
            (0, true),
            "a live owner's delegate was killed"
        );
    }

    /// The scan finds a child holding a duplicate of the locked descriptor, marked as holding the lock
    /// with this process as its taker, and a child with its own open of the file, unmarked; a process
    /// without the file is not found.
    #[test]
    fn the_scan_finds_the_holders_of_the_locked_file_and_no_other() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c");
        let file = File::create(&path).unwrap();
        file.lock().unwrap();
        let m = file.metadata().unwrap();
        let mut dup = sleeper(file.try_clone().unwrap().into(), false);
        let mut other = sleeper(File::open(&path).unwrap().into(), false);
        let mut unrelated = sleeper(std::process::Stdio::null(), false);
        let found = holders(Path::new("/proc"), m.dev(), m.ino());
        for c in [&mut dup, &mut other, &mut unrelated] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let me = std::process::id() as i32;
        let of = |pid: u32| -> Vec<Option<i32>> {
            found
                .iter()
                .filter(|h| h.pid == pid as i32)
                .map(|h| h.locked_by)
                .collect()
        };
        assert_eq!(of(dup.id()), [Some(me)], "{found:?}");
        assert_eq!(of(other.id()), [None], "{found:?}");
        assert_eq!(of(unrelated.id()), [], "{found:?}");
        assert!(
            found.contains(&Holder {
                pid: me,
                locked_by: Some(me)
            }),
            "{found:?}"
        );
    }
}
