//! The connections a node holds open, so that a revocation can end them: a CRL that
//! arrives after a peer connected must not leave that peer's connection working
//! (issue 9). Every authenticated connection, served or dialled, registers here with the
//! serial number of the peer's certificate; [`LiveConnections::close_revoked`] trips the
//! kill switch of each one whose serial the new CRL lists, and the stream then fails its
//! next read and write, which makes HTTP/2 drop the connection and every stream on it.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use xmcredit_crypto::NodeId;

/// A one-way switch a stream checks on every read and write.
#[derive(Debug, Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl KillSwitch {
    /// Ends the connection: the next read or write fails, and a read already waiting is
    /// woken to see it.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// `Err` once killed; otherwise remembers who to wake.
    pub fn check(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed: the peer's certificate was revoked",
            )));
        }
        if let Ok(mut slot) = self.waker.lock() {
            match slot.as_ref() {
                Some(existing) if existing.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Entry {
    peer: NodeId,
    serial: Vec<u8>,
    switch: Arc<KillSwitch>,
}

/// Every live authenticated connection of this process.
#[derive(Debug, Default)]
pub struct LiveConnections {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

/// Removes its connection from the registry when the stream is dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<LiveConnections>,
    id: u64,
    pub switch: Arc<KillSwitch>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.registry.entries.lock() {
            entries.remove(&self.id);
        }
    }
}

impl LiveConnections {
    pub fn register(self: &Arc<Self>, peer: NodeId, serial: Vec<u8>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let switch = Arc::new(KillSwitch::default());
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(id, Entry { peer, serial, switch: switch.clone() });
        }
        Registration { registry: self.clone(), id, switch }
    }

    /// Kills every connection whose peer certificate serial is in `revoked`; returns the
    /// peers whose connections were closed.
    pub fn close_revoked(&self, revoked: &BTreeSet<Vec<u8>>) -> Vec<NodeId> {
        let Ok(entries) = self.entries.lock() else { return Vec::new() };
        let mut closed = Vec::new();
        for entry in entries.values() {
            if revoked.contains(&entry.serial) && !entry.switch.is_killed() {
                entry.switch.kill();
                closed.push(entry.peer.clone());
            }
        }
        closed
    }

    /// How many connections are open (for status and tests).
    pub fn count(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}
