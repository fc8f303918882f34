//! The kernel as the programs see it, modelled: the current thread and CPU, the clock, the
//! maps' contents, and the helpers (each by the kernel function the verifier made the call
//! to). Scenarios drive it with events (a syscall entered, a context switch, …) and the state
//! carries over from event to event, as in the kernel.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use anyhow::{bail, Context, Result};
use aya::maps::MapType;
use profiler_common::TaskLayout;

use super::{
    kernel::Map,
    memory::{Memory, Region, Val},
};

/// Struct offsets the verifier's inlined lookups depend on (from the kernel's BTF).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// `offsetof(struct bpf_array, value)`: where an array's elements (or, for a per-CPU
    /// array, its per-CPU pointers) start.
    pub array_values: i64,
    /// `offsetof(struct htab_elem, key)`: a hash element's key, its value following at the
    /// next multiple of 8.
    pub htab_key: i64,
    /// Where the task fields the programs load are (as the loader gives them to the programs).
    pub task: TaskLayout,
}

/// What the scheduler keeps for a thread, as far as the programs read it: the clocks of
/// `struct sched_entity` (`exec_start` in its CPU's task clock), `sched_info.run_delay`, the
/// switch counts and `__state`.
#[derive(Clone, Copy, Debug, Default)]
struct Sched {
    tgid: u32,
    cpu: u32,
    runtime: u64,
    exec_start: u64,
    run_delay: u64,
    nvcsw: u64,
    nivcsw: u64,
    state: u32,
    /// Since when it has been runnable on a runqueue, if it is.
    queued_at: Option<u64>,
}

/// How far each CPU's task clock runs behind its clock (time on interrupts and stolen by the
/// hypervisor, CONFIG_IRQ_TIME_ACCOUNTING and steal accounting): different per CPU, so a call
/// that migrates must correct for it.
const CPU_LAG_NS: [u64; 2] = [3_000, 41_000];

const E2BIG: u64 = 7;
const EEXIST: u64 = 17;
const ENOENT: u64 = 2;

pub struct World {
    pub mem: Memory,
    maps: HashMap<u32, Map>,
    layout: Layout,
    /// Keys present in each hash map.
    keys: HashMap<u32, BTreeSet<Vec<u8>>>,
    queues: HashMap<u32, VecDeque<Vec<u8>>>,
    /// The thread on the CPU: (tgid, tid).
    pub current: (u32, u32),
    pub cpu: u32,
    /// What bpf_ktime_get_ns returns, and every CPU's clock.
    pub now: u64,
    pub comm: [u8; 16],
    /// Every thread the scheduler knows, by thread id.
    threads: BTreeMap<u32, Sched>,
}

/// The `start_time` the model gives thread `tid` (boot-relative ns, fixed for its life).
pub fn start_time(tid: u32) -> u64 {
    1_000_000 + u64::from(tid) * 1_000
}

fn neg(errno: u64) -> Val {
    Val::Scalar(errno.wrapping_neg())
}

/// The path the scenarios' failing calls name (see `bpf_probe_read_user_str`).
pub const FAILING_PATH: &[u8] = b"/etc/app/config.yaml";

impl World {
    pub fn new(maps: Vec<Map>, layout: Layout) -> Result<World> {
        let mut mem = Memory::default();
        for m in &maps {
            if let Some(data) = &m.rodata {
                mem.put_bytes(&Self::array_value(m.id, 0, None), 0, data)?;
            }
        }
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(b"workload");
        Ok(World {
            mem,
            maps: maps.into_iter().map(|m| (m.id, m)).collect(),
            layout,
            keys: HashMap::new(),
            queues: HashMap::new(),
            current: (0, 0),
            cpu: 0,
            now: 0,
            comm,
            threads: BTreeMap::new(),
        })
    }

    fn task_clock(&self, cpu: u32) -> u64 {
        self.now - CPU_LAG_NS[cpu as usize % CPU_LAG_NS.len()]
    }

    /// Thread `tid` of `tgid` starts running on `cpu`: its runqueue wait ends, its run
    /// starts (set_next_entity, sched_info_arrive).
    pub fn switch_in(&mut self, (tgid, tid): (u32, u32), cpu: u32) -> Result<()> {
        let clock = self.task_clock(cpu);
        let now = self.now;
        let t = self.threads.entry(tid).or_insert(Sched {
            tgid,
            ..Sched::default()
        });
        if let Some(since) = t.queued_at.take() {
            t.run_delay += now - since;
        }
        (t.cpu, t.exec_start, t.state) = (cpu, clock, 0);
        self.current = (tgid, tid);
        self.cpu = cpu;
        self.publish()
    }

    /// The current thread leaves its CPU, blocking or preempted (put_prev_entity, the switch
    /// counts; a preempted thread waits on the runqueue from now).
    pub fn switch_out(&mut self, blocking: bool) -> Result<()> {
        let (clock, now) = (self.task_clock(self.cpu), self.now);
        let t = self
            .threads
            .get_mut(&self.current.1)
            .context("switching out a thread that never ran")?;
        t.runtime += clock - t.exec_start;
        t.exec_start = clock;
        if blocking {
            (t.nvcsw, t.state) = (t.nvcsw + 1, 1);
        } else {
            t.nivcsw += 1;
            t.queued_at = Some(now);
        }
        self.publish()
    }

    /// A blocked thread is woken: runnable, on a runqueue from now.
    pub fn wake(&mut self, tid: u32) -> Result<()> {
        let now = self.now;
        let t = self
            .threads
            .get_mut(&tid)
            .context("waking an unknown thread")?;
        t.queued_at = Some(now);
        Ok(())
    }

    /// Writes every thread's task_struct fields and the runqueues' clocks where the programs
    /// load them, as of `now`. (A tick would move `exec_start` and `sum_exec_runtime` together,
    /// which the split does not see: not modelled.)
    pub fn publish(&mut self) -> Result<()> {
        let l = self.layout.task;
        let at = |off: u32| i64::from(off);
        for cpu in 0..CPU_LAG_NS.len() as u32 {
            let (now, task_clock) = (self.now, self.task_clock(cpu));
            let rq = Region::Rq(cpu);
            self.mem.write(&rq, at(l.rq_clock), 8, &Val::Scalar(now))?;
            self.mem
                .write(&rq, at(l.rq_clock_task), 8, &Val::Scalar(task_clock))?;
            let rq_ptr = Val::Ptr(rq, 0);
            self.mem
                .write(&Region::CfsRq(cpu), at(l.rq_of_cfs_rq), 8, &rq_ptr)?;
        }
        // The programs run in the current thread: its CPU's runqueue's `curr`.
        let curr = Val::Ptr(Region::Task(self.current.1), 0);
        self.mem
            .write(&Region::Rq(self.cpu), at(l.rq_curr), 8, &curr)?;
        for (&tid, t) in &self.threads {
            let task = Region::Task(tid);
            let fields = [
                (l.pid, 4, u64::from(tid)),
                (l.tgid, 4, u64::from(t.tgid)),
                (l.state, 4, u64::from(t.state)),
                (l.exec_start, 8, t.exec_start),
                (l.sum_exec_runtime, 8, t.runtime),
                (l.run_delay, 8, t.run_delay),
                (l.nvcsw, 8, t.nvcsw),
                (l.nivcsw, 8, t.nivcsw),
                // Any value a thread keeps for life; the tid's entry is owned by (tid, it).
                (l.start_time, 8, start_time(tid)),
            ];
            for (off, size, v) in fields {
                self.mem.write(&task, at(off), size, &Val::Scalar(v))?;
            }
            let cfs_rq = Val::Ptr(Region::CfsRq(t.cpu), 0);
            self.mem.write(&task, at(l.cfs_rq), 8, &cfs_rq)?;
        }
        Ok(())
    }

    fn map_named(&self, name: &str) -> Result<&Map> {
        self.maps
            .values()
            .find(|m| m.name == name)
            .with_context(|| format!("the programs use no map named {name}"))
    }

    /// Whether a loaded program uses a map of this name.
    pub fn has_map(&self, name: &str) -> bool {
        self.maps.values().any(|m| m.name == name)
    }

    /// Writes element `idx` of array `map` (of CPU `cpu` for a per-CPU array), as the daemon
    /// fills one before attaching.
    pub fn set_element(
        &mut self,
        map: &str,
        idx: u32,
        cpu: Option<u32>,
        value: &[u8],
    ) -> Result<()> {
        let id = self.map_named(map)?.id;
        self.mem
            .put_bytes(&Self::array_value(id, idx, cpu), 0, value)
    }

    /// What the programs learn at a CPU's first syscall after a load: its runqueue's address,
    /// in RUNQUEUE's element of that CPU.
    pub fn learn_runqueue(&mut self, map: &str, cpu: u32) -> Result<()> {
        let id = self.map_named(map)?.id;
        let rq = Val::Ptr(Region::Rq(cpu), 0);
        self.mem
            .write(&Self::array_value(id, 0, Some(cpu)), 0, 8, &rq)
    }

    pub fn push_queue(&mut self, map: &str, value: &[u8]) -> Result<()> {
        let id = self.map_named(map)?.id;
        self.queues.entry(id).or_default().push_back(value.to_vec());
        Ok(())
    }

    pub fn insert(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let id = self.map_named(map)?.id;
        self.keys.entry(id).or_default().insert(key.to_vec());
        let region = Self::hash_value(id, key);
        self.mem.put_bytes(&region, 0, value)
    }

    /// Entries of a hash map, or queued values of a queue.
    pub fn len(&self, map: &str) -> Result<usize> {
        let id = self.map_named(map)?.id;
        Ok(self.keys.get(&id).map_or(0, |k| k.len()) + self.queues.get(&id).map_or(0, |q| q.len()))
    }

    /// [`World::len`] of a map, 0 when no loaded program uses it.
    pub fn len_if_used(&self, map: &str) -> Result<usize> {
        match self.maps.values().any(|m| m.name == map) {
            true => self.len(map),
            false => Ok(0),
        }
    }

    /// Elements of array `map` that were written whose u32 at `offset` is not 0 (TIDS's owned
    /// entries).
    pub fn count_nonzero_u32(&self, map: &str, offset: i64) -> Result<usize> {
        let id = self.map_named(map)?.id;
        let mut n = 0;
        for region in self.mem.regions() {
            if matches!(region, Region::Value { map, .. } if *map == id) {
                n += usize::from(self.mem.read(region, offset, 4)?.scalar()? != 0);
            }
        }
        Ok(n)
    }

    /// The sum of the u64 at `offset` of every element of array `map` that was written.
    pub fn sum_u64(&self, map: &str, offset: i64) -> Result<u64> {
        let id = self.map_named(map)?.id;
        let mut sum = 0;
        for region in self.mem.regions() {
            if matches!(region, Region::Value { map, .. } if *map == id) {
                sum += self.mem.read(region, offset, 8)?.scalar()?;
            }
        }
        Ok(sum)
    }

    fn array_value(map: u32, idx: u32, cpu: Option<u32>) -> Region {
        Region::Value {
            map,
            key: idx.to_le_bytes().to_vec(),
            cpu,
        }
    }

    fn hash_value(map: u32, key: &[u8]) -> Region {
        Region::Value {
            map,
            key: key.to_vec(),
            cpu: None,
        }
    }

    fn map(&self, id: u32) -> Result<&Map> {
        self.maps
            .get(&id)
            .with_context(|| format!("map {id} is not one of the program's"))
    }

    /// An array element's index and the offset within it, for an access at `off` of the map
    /// object (`stride`: the element size, or 8 for a per-CPU array's pointer table).
    fn element(&self, m: &Map, off: i64, stride: i64) -> Result<(u32, i64)> {
        let rel = off - self.layout.array_values;
        if rel < 0 || rel / stride >= i64::from(m.max_entries) {
            bail!("access {off} of map {} outside its elements", m.name);
        }
        Ok(((rel / stride) as u32, rel % stride))
    }

    /// Where an access at `region + off` lands: accesses through an array's map object are
    /// the verifier's inlined lookups, and reach an element.
    pub fn resolve(&self, region: &Region, off: i64) -> Result<(Region, i64)> {
        let Region::MapObject(id) = region else {
            return Ok((region.clone(), off));
        };
        let m = self.map(*id)?;
        match m.kind {
            MapType::Array => {
                let stride = i64::from(m.value_size.next_multiple_of(8));
                let (idx, field) = self.element(m, off, stride)?;
                Ok((Self::array_value(*id, idx, None), field))
            }
            // Loads of its per-CPU pointers: see `load`.
            MapType::PerCpuArray => Ok((region.clone(), off)),
            k => bail!("a direct access to the object of map {} ({k:?})", m.name),
        }
    }

    pub fn load(&self, region: &Region, off: i64, size: usize) -> Result<Val> {
        match region {
            Region::MapObject(id) => {
                let m = self.map(*id)?;
                let (idx, field) = self.element(m, off, 8)?;
                if m.kind != MapType::PerCpuArray || size != 8 || field != 0 {
                    bail!("a {size}-byte load at {off} of map {}'s object", m.name);
                }
                Ok(Val::Ptr(Region::PerCpuElement(*id, idx), 0))
            }
            // The only per-CPU variable the verifier's inlining reads as a u32: the CPU number
            // (bpf_get_smp_processor_id).
            Region::PerCpuVariable(_) if size == 4 && off == 0 => {
                Ok(Val::Scalar(u64::from(self.cpu)))
            }
            Region::PerCpuVariable(addr) => bail!("a {size}-byte load of per-CPU data {addr:#x}"),
            _ => self.mem.read(region, off, size),
        }
    }

    /// The verifier's per-CPU address move: this CPU's copy of what `v` points to.
    pub fn this_cpu(&self, v: &Val) -> Result<Val> {
        Ok(match v {
            Val::Ptr(Region::PerCpuElement(map, idx), o) => {
                Val::Ptr(Self::array_value(*map, *idx, Some(self.cpu)), *o)
            }
            Val::Scalar(addr) => Val::Ptr(Region::PerCpuVariable(*addr), 0),
            v => bail!("a per-CPU address move of {v:?}"),
        })
    }

    fn ptr_arg<'v>(&self, v: &'v Val) -> Result<(&'v Region, i64)> {
        match v {
            Val::Ptr(r, o) => Ok((r, *o)),
            Val::Scalar(_) => bail!("a helper argument that should be a pointer is a number"),
        }
    }

    /// The map object a helper's first argument names, and the bytes of its key at `key`.
    fn map_and_key(&self, map: &Val, key: &Val) -> Result<(Map, Vec<u8>)> {
        let Val::Ptr(Region::MapObject(id), 0) = map else {
            bail!("a map helper called without a map: {map:?}");
        };
        let m = self.map(*id)?.clone();
        let (r, o) = self.ptr_arg(key)?;
        let (r, o) = self.resolve(r, o)?;
        let key = self.mem.bytes(&r, o, m.key_size as usize)?;
        Ok((m, key))
    }

    fn copy(&mut self, from: &Val, to: &Region, len: usize) -> Result<()> {
        let (r, o) = self.ptr_arg(from)?;
        let (r, o) = self.resolve(r, o)?;
        let data = self.mem.bytes(&r, o, len)?;
        self.mem.clear(to);
        self.mem.put_bytes(to, 0, &data)
    }

    /// A call into the kernel from a program: a helper, or a map operation the verifier turned
    /// into a direct call.
    pub fn call(&mut self, name: &str, a: &[Val]) -> Result<Val> {
        let (tgid, tid) = self.current;
        Ok(match name {
            "bpf_get_current_pid_tgid" => Val::Scalar(u64::from(tgid) << 32 | u64::from(tid)),
            "bpf_ktime_get_ns" => Val::Scalar(self.now),
            "bpf_get_current_task_btf" | "bpf_get_current_task" => Val::Ptr(Region::Task(tid), 0),
            "bpf_get_smp_processor_id" => Val::Scalar(u64::from(self.cpu)),
            "bpf_get_current_cgroup_id" => Val::Scalar(1),
            "bpf_get_current_comm" => {
                let (r, o) = self.ptr_arg(&a[0])?;
                let (r, o) = self.resolve(r, o)?;
                let len = (a[1].scalar()? as usize).min(16);
                let comm = self.comm;
                self.mem.put_bytes(&r, o, &comm[..len])?;
                Val::Scalar(0)
            }
            "bpf_probe_read_kernel" => {
                let (dst, off) = self.ptr_arg(&a[0])?;
                let (dst, off) = self.resolve(dst, off)?;
                let (src, soff) = self.ptr_arg(&a[2])?;
                let len = a[1].scalar()? as usize;
                if len == 8 {
                    // A pointer read stays a pointer.
                    let v = self.mem.read(src, soff, 8)?;
                    self.mem.write(&dst, off, 8, &v)?;
                } else {
                    let data = self.mem.bytes(src, soff, len)?;
                    self.mem.put_bytes(&dst, off, &data)?;
                }
                Val::Scalar(0)
            }
            // The user string a failing call named: the one path the scenarios fail on, read
            // whole (its length with the NUL), as the helper copies it.
            "bpf_probe_read_user_str" => {
                let (dst, off) = self.ptr_arg(&a[0])?;
                let (dst, off) = self.resolve(dst, off)?;
                let max = a[1].scalar()? as usize;
                let mut path = FAILING_PATH.to_vec();
                path.push(0);
                path.truncate(max);
                self.mem.put_bytes(&dst, off, &path)?;
                Val::Scalar(path.len() as u64)
            }
            "__htab_map_lookup_elem" => {
                let (m, key) = self.map_and_key(&a[0], &a[1])?;
                if self.keys.get(&m.id).is_some_and(|k| k.contains(&key)) {
                    let value_at = self.layout.htab_key + i64::from(m.key_size.next_multiple_of(8));
                    Val::Ptr(Self::hash_value(m.id, &key), -value_at)
                } else {
                    Val::Scalar(0)
                }
            }
            "htab_map_update_elem" => self.hash_update(&a[0], &a[1], &a[2], a[3].scalar()?)?,
            // The current task's entry; created when flags has BPF_LOCAL_STORAGE_GET_F_CREATE.
            "bpf_task_storage_get" | "bpf_task_storage_get_recur" => {
                let Val::Ptr(Region::MapObject(id), 0) = &a[0] else {
                    bail!("{name} without a map");
                };
                let Val::Ptr(Region::Task(owner), 0) = a[1] else {
                    bail!("{name} of something other than a task: {:?}", a[1]);
                };
                let key = owner.to_le_bytes().to_vec();
                let keys = self.keys.entry(*id).or_default();
                if keys.contains(&key) || (a[3].scalar()? & 1 != 0 && keys.insert(key.clone())) {
                    Val::Ptr(Self::hash_value(*id, &key), 0)
                } else {
                    Val::Scalar(0)
                }
            }
            "htab_map_delete_elem" => {
                let (m, key) = self.map_and_key(&a[0], &a[1])?;
                if self.keys.entry(m.id).or_default().remove(&key) {
                    self.mem.clear(&Self::hash_value(m.id, &key));
                    Val::Scalar(0)
                } else {
                    neg(ENOENT)
                }
            }
            "queue_map_pop_elem" | "queue_stack_map_pop_elem" => {
                let Val::Ptr(Region::MapObject(id), 0) = &a[0] else {
                    bail!("{name} without a map");
                };
                match self.queues.entry(*id).or_default().pop_front() {
                    Some(v) => {
                        let (r, o) = self.ptr_arg(&a[1])?;
                        let (r, o) = self.resolve(r, o)?;
                        self.mem.put_bytes(&r, o, &v)?;
                        Val::Scalar(0)
                    }
                    None => neg(ENOENT),
                }
            }
            "queue_stack_map_push_elem" => {
                let Val::Ptr(Region::MapObject(id), 0) = &a[0] else {
                    bail!("{name} without a map");
                };
                let m = self.map(*id)?.clone();
                let (r, o) = self.ptr_arg(&a[1])?;
                let (r, o) = self.resolve(r, o)?;
                let v = self.mem.bytes(&r, o, m.value_size as usize)?;
                let q = self.queues.entry(m.id).or_default();
                if q.len() >= m.max_entries as usize {
                    neg(E2BIG)
                } else {
                    q.push_back(v);
                    Val::Scalar(0)
                }
            }
            other => bail!(
                "the programs call {other}, which the model does not know: add it to World::call"
            ),
        })
    }

    fn hash_update(&mut self, map: &Val, key: &Val, value: &Val, flags: u64) -> Result<Val> {
        let (m, key) = self.map_and_key(map, key)?;
        let keys = self.keys.entry(m.id).or_default();
        let exists = keys.contains(&key);
        match (flags, exists) {
            (1, true) => return Ok(neg(EEXIST)),
            (2, false) => return Ok(neg(ENOENT)),
            (_, false) if keys.len() >= m.max_entries as usize => return Ok(neg(E2BIG)),
            _ => {}
        }
        keys.insert(key.clone());
        self.copy(value, &Self::hash_value(m.id, &key), m.value_size as usize)?;
        Ok(Val::Scalar(0))
    }
}
