//! Running a plug-in's child process (a `command` check, an `exec` action) and keeping what it printed.
//!
//! A child that fills a pipe nobody reads blocks, so both streams are read to their end while the child
//! runs, whatever it prints; memory stays bounded because only the first [`HEAD`] and the last [`TAIL`]
//! bytes of each are kept: the start says what the command is, the end holds its verdict (the number a
//! check takes, the error an action died of). A child that outlives its timeout is killed with the whole
//! process group it leads, so a shell's pipeline or background job does not keep working (or keep the
//! pipes open) after the measurement was given up.

use std::collections::{BTreeMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Bytes kept from the start of a stream.
pub(crate) const HEAD: usize = 4 * 1024;
/// Bytes kept from the end of a stream.
pub(crate) const TAIL: usize = 64 * 1024;
/// How long the pipes are still read after the child exited: what it wrote is in the pipe already, so this
/// only ends the wait when something it started in the background holds them open.
const GRACE: Duration = Duration::from_millis(500);
/// Bytes read from a pipe at a time.
const CHUNK: usize = 8 * 1024;

/// One stream of a child, read to its end and kept in bounded memory: its first [`HEAD`] bytes and its
/// last [`TAIL`].
#[derive(Debug, Default)]
pub(crate) struct Output {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    /// The last byte dropped from the front of `tail`, once any was: whether the tail starts mid-word.
    before_tail: Option<u8>,
}

impl Output {
    /// Keeps what `bytes` adds to the stream.
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let (head, rest) = bytes.split_at((HEAD - self.head.len()).min(bytes.len()));
        self.head.extend_from_slice(head);
        self.tail.extend(rest);
        let excess = self.tail.len().saturating_sub(TAIL);
        if excess > 0 {
            self.before_tail = Some(self.tail[excess - 1]);
            self.tail.drain(..excess);
        }
    }

    /// Reads `pipe` until its end (or an error, which ends the stream as far as we can tell).
    async fn read_to_end(&mut self, mut pipe: impl AsyncRead + Unpin) {
        let mut buf = vec![0; CHUNK];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => self.push(&buf[..n]),
                Err(e) => {
                    tracing::debug!(error = %e, "reading a child's output failed; keeping what came before");
                    return;
                }
            }
        }
    }

    /// How many bytes between the head and the tail were dropped.
    pub(crate) fn omitted(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// The stream for people: all of it, or, when it was longer than what is kept, its head and its tail
    /// with a line saying how much is missing between them. Invalid UTF-8 is replaced.
    pub(crate) fn text(&self) -> String {
        let (tail_a, tail_b) = self.tail.as_slices();
        let omitted = self.omitted();
        if omitted == 0 {
            return String::from_utf8_lossy(&[&self.head, tail_a, tail_b].concat()).into_owned();
        }
        // The cut may fall inside a character: start the tail at the next whole one.
        let tail: Vec<u8> = self.tail.iter().copied().skip_while(|b| b & 0xC0 == 0x80).collect();
        format!(
            "{}\n… [{omitted} bytes omitted] …\n{}",
            String::from_utf8_lossy(&self.head),
            String::from_utf8_lossy(&tail)
        )
    }

    /// The end of the stream in whole words, for taking the last one of a kind: all of it when nothing was
    /// dropped, else the tail without a first word whose start was dropped (`56789` of `123456789` is no
    /// number that was printed).
    pub(crate) fn end(&self) -> String {
        if self.before_tail.is_none() {
            return self.text();
        }
        let mut tail = self.tail.iter().copied();
        if !self.before_tail.is_some_and(|b| b.is_ascii_whitespace()) {
            tail.by_ref().take_while(|b| !b.is_ascii_whitespace()).for_each(drop);
        }
        String::from_utf8_lossy(&tail.collect::<Vec<u8>>()).into_owned()
    }
}

/// A child that ran to its end.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The program run (argv\[0\], rendered), for messages.
    pub program: String,
    /// How it ended.
    pub status: ExitStatus,
    /// What it printed.
    pub stdout: Output,
    /// What it complained about.
    pub stderr: Output,
}

/// The server's environment variables a program sees; the rest it does not.
pub(crate) const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Runs `argv` (templates filled from `values`, no shell) with `env` added and no stdin, reading both of
/// its streams to their end while it runs. Past `timeout` the child and its process group are killed. The
/// error is a sentence for the operator: it cannot start, it took too long, or waiting for it failed.
pub(crate) async fn run(
    argv: &[String],
    values: &BTreeMap<String, String>,
    env: &[(String, String)],
    dir: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<Finished, String> {
    let argv: Vec<String> = argv.iter().map(|a| sluice_plan::render(a, values)).collect();
    let Some((program, args)) = argv.split_first() else { return Err("empty command".into()) };
    let mut command = tokio::process::Command::new(program);
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return Err(format!("cannot run `{program}` in `{}`: no such directory", dir.display()));
        }
        command.current_dir(dir);
    }
    command
        .args(args)
        // Not the server's environment (its admin token, every secret, cloud credentials): only what a
        // program needs to run, and what the plan gives it.
        .env_clear()
        .envs(INHERITED.iter().filter_map(|k| std::env::var_os(k).map(|v| (*k, v))))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own group, so that a timeout can kill what it started too.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(|e| format!("cannot run `{program}`: {e}"))?;
    // Declared after `child`, so dropped before it: the group is killed while its leader is not yet
    // reaped, so its id cannot have been reused.
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (mut stdout, mut stderr) = (Output::default(), Output::default());
    let deadline = Instant::now() + timeout;
    let status = {
        let mut read = std::pin::pin!(async { tokio::join!(stdout.read_to_end(out), stderr.read_to_end(err)) });
        let mut read_all = false;
        let waited = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                status = child.wait() => status,
                _ = &mut read => {
                    read_all = true;
                    child.wait().await
                }
            }
        })
        .await;
        match waited {
            Err(_) => {
                tracing::debug!(program, ?timeout, "a command timed out; killing it and its process group");
                drop(group);
                let _ = child.kill().await;
                return Err(format!("`{program}` took longer than its timeout of {timeout:?}"));
            }
            // The guard kills the group: the child may still run.
            Ok(Err(e)) => return Err(format!("`{program}`: {e}")),
            Ok(Ok(status)) => {
                group.0 = None;
                let grace = deadline.min(Instant::now() + GRACE);
                if !read_all && tokio::time::timeout_at(grace, &mut read).await.is_err() {
                    tracing::debug!(program, "a command exited but what it started holds its output open");
                }
                status
            }
        }
    };
    Ok(Finished { program: program.clone(), status, stdout, stderr })
}

/// The process group a child leads, killed when this is dropped unless the child was reaped first (then
/// the id is `None`): on a timeout, and when the measurement is given up (its future dropped).
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            kill_group(id);
        }
    }
}

/// SIGKILLs every process in group `id`: tokio's `kill` reaches only the child itself.
#[cfg(unix)]
fn kill_group(id: i32) {
    if let Some(group) = rustix::process::Pid::from_raw(id) {
        // Gone already is fine: there is nothing left to stop.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

/// Elsewhere only the child is killed (by `kill_on_drop`).
#[cfg(not(unix))]
fn kill_group(_: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> Output {
        let mut o = Output::default();
        chunks.iter().for_each(|c| o.push(c));
        o
    }

    #[test]
    fn short_output_is_kept_whole_across_chunks() {
        let o = fed(&[b"abc ", b"12", b"3"]);
        assert_eq!((o.text(), o.end(), o.omitted()), ("abc 123".to_string(), "abc 123".to_string(), 0));
        let exact = fed(&[&vec![b'a'; HEAD + TAIL]]);
        assert_eq!((exact.omitted(), exact.text().len()), (0, HEAD + TAIL));
    }

    #[test]
    fn long_output_keeps_its_head_and_tail_and_says_what_is_missing() {
        let mut o = Output::default();
        o.push(b"first ");
        for _ in 0..200 {
            o.push(&[b'x'; 1000]);
        }
        o.push(b" 1.5\n");
        assert_eq!(o.omitted(), 6 + 200_000 + 5 - (HEAD + TAIL) as u64);
        let text = o.text();
        assert!(text.starts_with("first xxx") && text.ends_with("xx 1.5\n"), "{text:.20}");
        assert!(text.contains(&format!("\n… [{} bytes omitted] …\n", o.omitted())));
        assert!(text.len() <= HEAD + TAIL + 40);
        // The tail starts inside the x's: that fragment is no word of the output.
        assert_eq!(o.end(), "1.5\n");
    }

    #[test]
    fn a_tail_starting_at_a_word_keeps_it() {
        let mut o = fed(&[&vec![b'a'; HEAD], b" "]);
        o.push(b"7");
        o.push(&vec![b' '; TAIL - 1]);
        assert_eq!(o.end().trim(), "7");
    }

    #[test]
    fn a_character_cut_by_the_tail_is_dropped_not_garbled() {
        let mut o = fed(&[&vec![b'a'; HEAD + 10]]);
        o.push("é".as_bytes());
        o.push(&vec![b'b'; TAIL - 1]);
        assert!(!o.text().contains('\u{FFFD}'));
    }
}
