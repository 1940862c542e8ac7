//! A TCP proxy in front of a real service that a test can cut off and bring back: while
//! stopped, connections are refused and those open are dropped, as when the service stops.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Fires once the client side has sent `count` requests containing both byte strings.
struct Trigger {
    start: &'static [u8],
    contains: &'static [u8],
    remaining: usize,
    fire: Option<oneshot::Sender<()>>,
}

impl Trigger {
    fn observe(&mut self, chunk: &[u8]) {
        let Some(at) = find(chunk, self.start) else { return };
        if find(&chunk[at..], self.contains).is_none() || self.remaining == 0 {
            return;
        }
        self.remaining -= 1;
        if self.remaining == 0
            && let Some(fire) = self.fire.take()
        {
            let _ = fire.send(());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub struct TcpProxy {
    port: u16,
    upstream: String,
    trigger: Arc<Mutex<Option<Trigger>>>,
    tasks: JoinSet<()>,
}

impl TcpProxy {
    /// Proxies a free loopback port to `upstream_url`'s host and port.
    pub async fn start(upstream_url: &str) -> TcpProxy {
        let upstream = upstream_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut proxy = TcpProxy {
            port: listener.local_addr().unwrap().port(),
            upstream,
            trigger: Arc::default(),
            tasks: JoinSet::new(),
        };
        proxy.serve(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resolves once `count` more requests matching `start` ... `contains` have been forwarded.
    pub fn after_requests_matching(
        &self,
        start: &'static [u8],
        contains: &'static [u8],
        count: usize,
    ) -> oneshot::Receiver<()> {
        let (fire, fired) = oneshot::channel();
        *self.trigger.lock().unwrap() = Some(Trigger {
            start,
            contains,
            remaining: count,
            fire: Some(fire),
        });
        fired
    }

    /// Stops listening and drops every open connection.
    pub async fn stop(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (upstream, trigger) = (self.upstream.clone(), self.trigger.clone());
        let (connections_tx, mut connections_rx) = tokio::sync::mpsc::unbounded_channel();
        self.tasks.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = connections_tx.send(client);
            }
        });
        // Connections live in the same set as the listener, so `stop` drops them all.
        let mut pending = JoinSet::new();
        self.tasks.spawn(async move {
            while let Some(client) = connections_rx.recv().await {
                pending.spawn(pipe(client, upstream.clone(), trigger.clone()));
            }
        });
    }
}

async fn pipe(client: TcpStream, upstream: String, trigger: Arc<Mutex<Option<Trigger>>>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_server = async {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if let Some(trigger) = trigger.lock().unwrap().as_mut() {
                trigger.observe(&buf[..n]);
            }
        }
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::select! {
        () = to_server => {}
        () = to_client => {}
    }
}
