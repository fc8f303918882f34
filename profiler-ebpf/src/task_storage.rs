//! BPF task storage (`BPF_MAP_TYPE_TASK_STORAGE`: one value per thread, kept with the task and
//! freed with it) as a BTF map definition, which aya-ebpf 0.2 has no type for. The daemon's
//! `TASKS` (task.rs) and issue 17's experiments (bench_*.rs) declare theirs with it.

use aya_ebpf::{
    bindings::{
        bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE,
    },
    helpers::generated::bpf_task_storage_get,
};

/// Laid out as aya-ebpf's `btf_maps` are: each field's pointee encodes one attribute, which
/// the loader reads from BTF (task storage needs its key and value types there).
#[repr(C)]
pub struct TaskStorage<V> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholders the loader reads from BTF; never dereferenced.
unsafe impl<V> Sync for TaskStorage<V> {}

impl<V> TaskStorage<V> {
    /// For a `#[btf_map]` static.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// `task`'s value (`task` a BTF task pointer), created zeroed if `create`; null when it
    /// has none (or, creating, when the kernel could not allocate one). One helper call.
    #[inline(always)]
    pub fn get(&self, task: *const u8, create: bool) -> *mut V {
        let flags = if create {
            u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE)
        } else {
            0
        };
        let map = self as *const Self as *mut core::ffi::c_void;
        // SAFETY: a helper call with this map and a BTF task pointer; the verifier checks both.
        unsafe { bpf_task_storage_get(map, task as *mut _, core::ptr::null_mut(), flags).cast() }
    }
}
