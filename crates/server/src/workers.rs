//! Where connections run: one single-threaded tokio runtime per core.
//!
//! Why not tokio's multi-threaded runtime: a publication wakes every
//! subscriber's task at once, a thousand and more. A multi-threaded worker
//! keeps 256 woken tasks in its own queue and moves the rest to a shared
//! one that it serves once every few dozen polls, while the tasks it just
//! ran come back to its own queue with the next publication: some
//! connections get written several times before others get written once,
//! and that wait is the tail of the latency. A single-threaded runtime runs
//! woken tasks in the order they woke. Measured at 1,000 subscribers and
//! 1,000 publications/s on one core (docs/PERFORMANCE.md): p99 ~52 ms on
//! the multi-threaded runtime, ~24 ms on one single-threaded runtime.
//!
//! So a node runs one single-threaded runtime per core: the one `run` is
//! called on (it also accepts, and runs the node's background tasks) and
//! [`Workers::start`]'s threads. Each accepted connection goes to the
//! runtime with the fewest live tasks and stays there with everything it
//! spawns (its WebSocket session, its event stream); a publication reaches
//! subscribers on other runtimes through their outboxes, which wake their
//! tasks across threads.

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The runtimes connections are spread over. The default (no workers)
/// runs every connection on the runtime that accepted it.
#[derive(Clone, Default)]
pub struct Workers {
    threads: Arc<[Worker]>,
}

/// A thread running a single-threaded runtime until its stop is sent or
/// dropped.
struct Worker {
    handle: Handle,
    /// Dropped with the last `Workers`: the runtime ends and with it the
    /// connections on it, as when a process exits.
    _stop: oneshot::Sender<()>,
}

impl Workers {
    /// Starts `threads` runtimes, each on its own thread, besides the one
    /// `run` is called on (so one per core means `cores - 1` here).
    pub fn start(threads: usize) -> std::io::Result<Workers> {
        let threads = (0..threads).map(|i| Worker::start(i + 1)).collect::<std::io::Result<Vec<_>>>()?;
        Ok(Workers { threads: threads.into() })
    }

    /// How many runtimes serve connections, the accepting one included.
    pub fn runtimes(&self) -> usize {
        self.threads.len() + 1
    }

    /// Runs `serve` on the accepted `tcp` on the runtime with the fewest
    /// live tasks (this one, on a tie).
    ///
    /// A socket is registered with the runtime that accepted it, so one
    /// handed to another runtime is taken off this one's reactor and put on
    /// the other's (two `epoll_ctl` calls per connection).
    pub fn spawn<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let load = |h: &Handle| h.metrics().num_alive_tasks();
        let here = load(&Handle::current());
        // Each load read once: a runtime's count moves while we look.
        let elsewhere = self.threads.iter().map(|w| (load(&w.handle), &w.handle)).min_by_key(|(n, _)| *n);
        let Some((_, there)) = elsewhere.filter(|(n, _)| *n < here) else {
            tokio::spawn(serve(tcp));
            return;
        };
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => return tracing::debug!(error = %e, "cannot hand a connection to a worker"),
        };
        there.spawn(async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::debug!(error = %e, "a worker cannot take a connection"),
            }
        });
    }
}

impl Worker {
    fn start(n: usize) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("holdfast-worker-{n}")).spawn(move || {
            let _ = runtime.block_on(stopped);
        })?;
        Ok(Worker { handle, _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Connections go to the runtime with the fewest tasks, each serves its
    /// socket from there, and a worker's runtime is a thread of its own.
    #[tokio::test]
    async fn connections_spread_over_the_runtimes_and_are_served_there() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.runtimes(), 3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (threads_tx, mut threads) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..6 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let threads_tx = threads_tx.clone();
            workers.spawn(tcp, move |mut tcp| async move {
                let _ = threads_tx.send(std::thread::current().name().map(str::to_owned));
                let mut byte = [0u8; 1];
                // Echo one byte, then hold the connection (a live task).
                if tcp.read_exact(&mut byte).await.is_ok() {
                    let _ = tcp.write_all(&byte).await;
                    let _ = tcp.read(&mut byte).await;
                }
            });
            let name = threads.recv().await.unwrap();
            clients.push((client, name.unwrap_or_default()));
        }
        for (client, _) in &mut clients {
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.unwrap();
            assert_eq!(&byte, b"x");
        }
        let mut per_thread = std::collections::BTreeMap::new();
        for (_, name) in &clients {
            *per_thread.entry(name.as_str()).or_insert(0) += 1;
        }
        // Ties stay where they were accepted: two each, in turn.
        assert_eq!(per_thread.len(), 3, "{per_thread:?}");
        assert!(per_thread.values().all(|&n| n == 2), "{per_thread:?}");
        assert!(per_thread.contains_key("holdfast-worker-1") && per_thread.contains_key("holdfast-worker-2"));
    }
}
