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
    /// The serials the CRL in force revokes: a connection that finishes its handshake
    /// after a kill pass (it was verified under the previous CRL) is killed as it
    /// registers, so it cannot slip between the two.
    revoked: Mutex<BTreeSet<Vec<u8>>>,
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
        // Lock order: entries, then revoked (as in `close_revoked`).
        if let Ok(mut entries) = self.entries.lock() {
            if self.revoked.lock().map(|r| r.contains(&serial)).unwrap_or(false) {
                switch.kill();
            }
            entries.insert(id, Entry { peer, serial, switch: switch.clone() });
        }
        Registration { registry: self.clone(), id, switch }
    }

    /// Kills every connection whose peer certificate serial is in `revoked`, and every
    /// later one that registers with such a serial; returns the peers whose connections
    /// were closed now.
    pub fn close_revoked(&self, revoked: &BTreeSet<Vec<u8>>) -> Vec<NodeId> {
        let Ok(entries) = self.entries.lock() else { return Vec::new() };
        if let Ok(mut current) = self.revoked.lock() {
            current.clone_from(revoked);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_closes_open_connections_and_those_that_register_later() {
        let live = Arc::new(LiveConnections::default());
        let bank_a = NodeId::new("bank-a").expect("id");
        let bank_b = NodeId::new("bank-b").expect("id");
        let open_a = live.register(bank_a.clone(), vec![1]);
        let open_b = live.register(bank_b, vec![2]);
        let revoked: BTreeSet<Vec<u8>> = [vec![1u8]].into_iter().collect();
        assert_eq!(live.close_revoked(&revoked), vec![bank_a.clone()]);
        assert!(open_a.switch.is_killed());
        assert!(!open_b.switch.is_killed(), "only the revoked serial");
        // A connection verified under the previous CRL that registers after the pass.
        let late = live.register(bank_a, vec![1]);
        assert!(late.switch.is_killed(), "a late registration of a revoked serial is killed at once");
        drop(open_a);
        assert_eq!(live.count(), 2);
    }
}
