//! Tracing programs that someone else loaded. One attached on the syscall path (another
//! engineer's test daemon, a bpftrace session) slows every syscall of every configuration,
//! `none` included, and makes a round meaningless; the harness looks for them whenever it has
//! nothing of its own loaded.

use std::time::{Duration, Instant};

/// Kernel `enum bpf_prog_type` values of programs that can sit on a syscall's path: kprobe (2),
/// tracepoint (5), raw tracepoint (17), writable raw tracepoint (24), tracing/fentry/tp_btf (26).
/// Other types (cgroup, socket, XDP …) run elsewhere and do not matter here.
const TRACING_TYPES: [u32; 5] = [2, 5, 17, 24, 26];

fn kind(t: u32) -> &'static str {
    match t {
        2 => "kprobe",
        5 => "tracepoint",
        17 | 24 => "raw_tracepoint",
        26 => "tracing",
        _ => "?",
    }
}

/// "raw_tracepoint sys_enter (id 738)" for every tracing program loaded now.
pub fn loaded_tracing_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let t = p.program_type() as u32;
            TRACING_TYPES.contains(&t).then(|| {
                format!(
                    "{} {} (id {})",
                    kind(t),
                    p.name_as_str().unwrap_or("?"),
                    p.id()
                )
            })
        })
        .collect()
}

/// The tracing programs still loaded after a short grace: the kernel frees a program a moment
/// after its last holder exits, so one just detached by this harness can linger for a few ms.
pub fn foreign_tracers() -> Vec<String> {
    let mut found = loaded_tracing_programs();
    for _ in 0..5 {
        if found.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        found = loaded_tracing_programs();
    }
    found
}

/// Waits up to `max` for the host to have no foreign tracer; returns those still loaded.
pub fn wait_until_clean(max: Duration) -> Vec<String> {
    let deadline = Instant::now() + max;
    let mut announced = false;
    loop {
        let found = foreign_tracers();
        if found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        if !announced {
            println!(
                "waiting up to {} s for tracing programs loaded by someone else to go: {}",
                deadline.saturating_duration_since(Instant::now()).as_secs(),
                found.join(", ")
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_types_are_named() {
        for t in TRACING_TYPES {
            assert_ne!(kind(t), "?");
        }
        assert_eq!(kind(1), "?");
    }
}
