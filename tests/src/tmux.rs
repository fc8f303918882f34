//! `syscall-profiler top` in a real terminal: a tmux server of the test's own, its screen read
//! back as text.

use std::{
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use crate::daemon_bin;

/// A tmux server of our own (its own socket), so nothing else's sessions are touched.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(name: &str, command: &str) -> Tmux {
        Tmux::sized(name, command, 200, 40)
    }

    pub fn sized(name: &str, command: &str, columns: u16, lines: u16) -> Tmux {
        let t = Tmux {
            socket: format!("spt-{name}-{}", std::process::id()),
        };
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &columns.to_string(),
            "-y",
            &lines.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session (is tmux installed? .ci/run installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("running tmux (apt-get install tmux)")
    }

    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", "top", k]);
            assert!(out.status.success());
        }
    }

    /// Waits until the screen satisfies `done`, or fails showing the last screen.
    pub fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The screen line that has every one of `words` as a whole field.
pub fn line_with<'a>(screen: &'a str, words: &[&str]) -> Option<(usize, &'a str)> {
    screen.lines().enumerate().find(|(_, l)| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        words.iter().all(|w| fields.contains(w))
    })
}

/// A shell line that runs top against `base` with `extra` flags, then shows its exit status
/// (and that the screen was restored) and stays, so the test can read both.
pub fn top_command(base: &str, extra: &str) -> String {
    format!(
        "{} top --url {base} --interval 200ms {extra}; echo \"top exited $?\"; sleep 60",
        daemon_bin().display()
    )
}
