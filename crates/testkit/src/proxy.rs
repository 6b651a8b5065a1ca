//! A TCP proxy on loopback that can stall: it keeps the connections open but stops passing the
//! server's bytes to the client, as a broker under a resource alarm (or a half-dead network path)
//! does. For tests of code that must not wait forever. It can also freeze only the connections open
//! now (a half-open connection: the path died, a new one works) and let everything through again.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

pub struct StallingProxy {
    addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    /// One flag per connection opened so far: whether that connection is frozen.
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    stop: CancellationToken,
}

impl StallingProxy {
    /// Listens on `127.0.0.1` and an ephemeral port, forwarding to `upstream`. Needs a Tokio runtime.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let proxy = Self {
            addr: listener.local_addr()?,
            stalled: Arc::new(AtomicBool::new(false)),
            frozen: Arc::new(Mutex::new(Vec::new())),
            stop: CancellationToken::new(),
        };
        let (stalled, stop) = (proxy.stalled.clone(), proxy.stop.clone());
        let frozen = proxy.frozen.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (stalled, stop) = (stalled.clone(), stop.clone());
                let this_one = Arc::new(AtomicBool::new(false));
                frozen.lock().unwrap().push(this_one.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let never_stalls = [Arc::new(AtomicBool::new(false))];
                    let held_back = [stalled, this_one];
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = pipe(client_read, server_write, &never_stalls) => {}
                        () = pipe(server_read, client_write, &held_back) => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, the server's bytes are held back (the client's still go through).
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Holds back the server's bytes on every connection open now, for good; connections opened
    /// later go through (a half-open connection after a network path died).
    pub fn freeze_open_connections(&self) {
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Lets the server's bytes through again, on every connection (what was held back arrives).
    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: &[Arc<AtomicBool>],
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.iter().any(|flag| flag.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
