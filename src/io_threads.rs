//! Serving HTTP on one single-threaded runtime per CPU (`server.io_threads`).
//!
//! One acceptor on the calling runtime hands each new connection to the I/O thread holding
//! the fewest open connections; from then on the connection lives on that thread, and so do
//! its requests: read, decided, looked up in the vault (through that thread's own Redis
//! connection) and answered without waking another thread. Background work (audit writer,
//! event bus, rotation) stays on the calling runtime.
//!
//! Handing out connections by count rather than letting the kernel spread them
//! (`SO_REUSEPORT`) keeps the threads evenly loaded when there are only a few dozen
//! long-lived gateway connections, where a hash split is often 30/20.
//!
//! With `server.pin_io_threads` (the default) each thread is pinned to a CPU of its own
//! ([`affinity`]); with `server.io_thread_nice` each is given that nice value ([`priority`]).

mod affinity;
mod priority;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::Prepared;

/// A connection assigned to a thread, as it travels to it.
type Handoff = (std::net::TcpStream, SocketAddr);

/// How many I/O threads to run, and whether to pin each to a CPU of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoThreads {
    /// Threads (at least one is run).
    pub count: usize,
    /// Pin thread i to the i-th CPU the process may run on, when there are enough of them.
    pub pin: bool,
    /// Nice value to give each thread (`server.io_thread_nice`), if any.
    pub nice: Option<i32>,
}

/// Serves `prepared.router` on `listener` with `io.count` single-threaded runtimes until
/// `shutdown` resolves; then stops accepting, lets in-flight requests finish (at most
/// `grace`), writes the pending audit records and closes the store, as [`crate::serve`].
pub async fn serve_threads(
    prepared: Prepared,
    listener: TcpListener,
    io: IoThreads,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let threads = io.count.max(1);
    let cpus = if io.pin {
        match affinity::allowed() {
            Ok(allowed) => affinity::placement(threads, &allowed),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the CPU affinity: I/O threads not pinned");
                vec![None; threads]
            }
        }
    } else {
        vec![None; threads]
    };
    if io.pin && cpus.iter().all(Option::is_none) {
        tracing::info!(
            io_threads = threads,
            "more I/O threads than CPUs to run on: I/O threads not pinned"
        );
    }
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each thread keeps its runtime until the store is closed: database connections it opened
    // are driven by that runtime, and the audit flush at shutdown may still use them.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut lanes = Vec::with_capacity(threads);
    let mut done = Vec::with_capacity(threads);
    for (i, cpu) in cpus.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
        let open = Arc::new(AtomicUsize::new(0));
        lanes.push((tx, open.clone()));
        let assigned = Assigned { rx, open, local };
        let router = prepared.router.clone();
        let mut stop = stop_rx.clone();
        let mut release = release_rx.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        std::thread::Builder::new()
            .name(format!("auth-broker-io-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    match affinity::pin_current(cpu) {
                        Ok(()) => tracing::debug!(thread = i, cpu, "I/O thread pinned"),
                        Err(e) => {
                            tracing::warn!(thread = i, cpu, error = %e, "I/O thread not pinned")
                        }
                    }
                }
                if let Some(nice) = io.nice {
                    match priority::set_current(nice) {
                        Ok(()) => tracing::debug!(thread = i, nice, "I/O thread niceness set"),
                        Err(e) => tracing::warn!(
                            thread = i,
                            nice,
                            error = %e,
                            "I/O thread niceness not set (a negative value needs CAP_SYS_NICE)"
                        ),
                    }
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = done_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let served = axum::serve(assigned, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|stopped| *stopped).await;
                        })
                        .await;
                    let _ = done_tx.send(served.map_err(anyhow::Error::from));
                    let _ = release.wait_for(|released| *released).await;
                });
            })?;
        done.push(done_rx);
    }

    let all = futures_util::future::join_all(done);
    tokio::pin!(all);
    tokio::pin!(shutdown);
    let early = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => hand_off(&lanes, tcp, peer),
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            results = &mut all => break Some(results),
            () = &mut shutdown => break None,
        }
    };
    drop(listener);
    let _ = stop_tx.send(true);
    let stopped_early = early.is_some();
    let results = match early {
        Some(results) => results,
        None => tokio::select! {
            results = &mut all => results,
            () = tokio::time::sleep(grace) => {
                tracing::warn!("shutdown grace period elapsed with requests in flight");
                Vec::new()
            }
        },
    };
    crate::finish(prepared, grace).await;
    let _ = release_tx.send(true);
    for r in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("an I/O thread stopped unexpectedly"),
        }
    }
    if stopped_early {
        anyhow::bail!("an I/O thread stopped before shutdown");
    }
    Ok(())
}

/// Gives a new connection to the thread with the fewest open ones.
fn hand_off(
    lanes: &[(mpsc::UnboundedSender<Handoff>, Arc<AtomicUsize>)],
    tcp: TcpStream,
    peer: SocketAddr,
) {
    // No Nagle delay on responses: gateways and IdPs wait on each answer.
    let _ = tcp.set_nodelay(true);
    let Some((tx, open)) = lanes
        .iter()
        .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
    else {
        return;
    };
    match tcp.into_std() {
        Ok(std) => {
            open.fetch_add(1, Ordering::Relaxed);
            if tx.send((std, peer)).is_err() {
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not hand a connection to an I/O thread"),
    }
}

/// One I/O thread's listener: the connections the acceptor assigned to it.
struct Assigned {
    rx: mpsc::UnboundedReceiver<Handoff>,
    open: Arc<AtomicUsize>,
    local: SocketAddr,
}

impl axum::serve::Listener for Assigned {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((std, peer)) = self.rx.recv().await else {
                // The acceptor has stopped: only the shutdown signal ends this thread now.
                return std::future::pending().await;
            };
            match TcpStream::from_std(std) {
                Ok(tcp) => {
                    let open = self.open.clone();
                    return (Counted { tcp, open }, peer);
                }
                Err(e) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "could not adopt a handed-off connection");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection that leaves its thread's count when it closes.
struct Counted {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_thread_and_leave_its_count_on_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lanes: Vec<_> = (0..2)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
                (tx, Arc::new(AtomicUsize::new(0)), rx)
            })
            .collect();
        let senders: Vec<_> = lanes
            .iter()
            .map(|(tx, open, _)| (tx.clone(), open.clone()))
            .collect();
        let mut clients = Vec::new();
        for _ in 0..5 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (tcp, peer) = listener.accept().await.unwrap();
            hand_off(&senders, tcp, peer);
        }
        let counts: Vec<usize> = senders
            .iter()
            .map(|(_, o)| o.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, vec![3, 2], "five connections split 3/2");

        // The first thread's connections close: the next two go there.
        let (_, open0, rx0) = lanes.into_iter().next().unwrap();
        let mut first = Assigned {
            rx: rx0,
            open: open0.clone(),
            local: addr,
        };
        for _ in 0..3 {
            let (conn, _) = axum::serve::Listener::accept(&mut first).await;
            drop(conn);
        }
        assert_eq!(open0.load(Ordering::Relaxed), 0);
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (tcp, peer) = listener.accept().await.unwrap();
            hand_off(&senders, tcp, peer);
        }
        assert_eq!(open0.load(Ordering::Relaxed), 2);
        assert_eq!(senders[1].1.load(Ordering::Relaxed), 2);
    }
}
