//! `--output jsonl`: one JSON object per line, written by a dedicated thread so that a slow
//! stdout never stalls the pipeline's hot path.

use std::{
    io::{self, Write},
    sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
    thread,
    time::Duration,
};

/// Lines waiting for the writer thread before events start being dropped.
const QUEUE: usize = 8192;
/// How long lines gather before the writer thread takes them, once one is queued.
const GATHER: Duration = Duration::from_millis(2);

/// What `--output jsonl` prints. Findings are always printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonlOptions {
    /// Also print every event.
    pub events: bool,
}

enum Line {
    Text(String),
    Stop,
}

/// The producers' end: cheap to clone.
#[derive(Clone)]
pub(crate) struct JsonlSink {
    tx: SyncSender<Line>,
}

pub(crate) struct JsonlWriter {
    tx: SyncSender<Line>,
    thread: thread::JoinHandle<()>,
}

/// Why a line was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotQueued {
    Full,
    Closed,
}

impl JsonlSink {
    /// Queues a line without waiting (for events).
    pub(crate) fn try_line(&self, line: String) -> Result<(), NotQueued> {
        self.tx
            .try_send(Line::Text(line))
            .map_err(|error| match error {
                TrySendError::Full(_) => NotQueued::Full,
                TrySendError::Disconnected(_) => NotQueued::Closed,
            })
    }

    /// Queues a line, waiting for room (for findings, which are never dropped from the output
    /// the operator chose).
    pub(crate) fn line(&self, line: String) -> Result<(), NotQueued> {
        self.tx
            .send(Line::Text(line))
            .map_err(|_| NotQueued::Closed)
    }
}

/// Starts the writer thread on `out` (stdout in production).
pub(crate) fn spawn(out: Box<dyn Write + Send>) -> Result<(JsonlSink, JsonlWriter), io::Error> {
    let (tx, rx) = sync_channel(QUEUE);
    let thread = thread::Builder::new()
        .name("osprey-jsonl".into())
        .spawn(move || write_lines(out, rx))?;
    Ok((JsonlSink { tx: tx.clone() }, JsonlWriter { tx, thread }))
}

impl JsonlWriter {
    /// Writes everything queued so far, then stops the thread. Blocks: call it from
    /// `spawn_blocking` in async code.
    pub(crate) fn finish(self) {
        // Lines queued before Stop are written first: the channel is FIFO.
        let _ = self.tx.send(Line::Stop);
        if self.thread.join().is_err() {
            tracing::error!("jsonl output thread panicked");
        }
    }
}

fn write_lines(out: Box<dyn Write + Send>, rx: Receiver<Line>) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        // Lines gather while this thread sleeps: a thread blocked in `recv` is woken by every
        // line, and each wake-up cost the event loop more than rendering the line.
        thread::sleep(GATHER);
        let mut stopping = false;
        let mut written = Ok(());
        for line in std::iter::once(first).chain(rx.try_iter()) {
            let Line::Text(text) = line else {
                stopping = true;
                break;
            };
            written = out
                .write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"));
            if written.is_err() {
                break;
            }
        }
        if let Err(error) = written.and_then(|()| out.flush()) {
            // A closed stdout (the reader went away) will not come back: stop writing, and
            // let producers see the closed channel.
            tracing::error!(%error, "jsonl output: cannot write to stdout; jsonl output stops");
            return;
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_every_queued_line_before_finishing() {
        let out = Shared::default();
        let (sink, writer) = spawn(Box::new(out.clone())).unwrap();
        for i in 0..100 {
            sink.line(format!("{{\"n\":{i}}}")).unwrap();
        }
        writer.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[99], "{\"n\":99}");
        assert_eq!(sink.try_line("late".into()), Err(NotQueued::Closed));
    }
}
