//! The connections an edge owns: a slab of [`Conn`]s, each stamped with a generation,
//! and the lists the loop walks every turn (to write, to fan out to, to replay, to read
//! again).
//!
//! A [`ConnId`] names one occupant of a slot: an event, a list entry or a requester tag
//! for an older occupant carries another generation and finds nothing. Nothing here
//! touches the poll or a socket.

use mio::Token;
use serde::{Deserialize, Serialize};
use slab::Slab;

use super::conn::Conn;

/// One connection: its slab key and the generation of the occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnId {
    /// The slab slot.
    pub key: usize,
    /// Which occupant of the slot.
    pub generation: u32,
}

impl ConnId {
    /// The poll token: the generation above the key, so a stale event is told apart.
    pub fn token(self) -> Token {
        const {
            assert!(
                usize::BITS == 64,
                "tokens pack a generation above the slab key"
            )
        };
        Token(self.key | ((self.generation as usize) << 32))
    }

    /// The id a token names.
    pub fn from_token(token: Token) -> ConnId {
        ConnId {
            key: token.0 & 0xffff_ffff,
            generation: (token.0 >> 32) as u32,
        }
    }
}

/// The slab and the per-turn lists.
#[derive(Default)]
pub struct Conns {
    slab: Slab<Conn>,
    next_generation: u32,
    /// Connections to write this turn (their `dirty` flag is set).
    pub dirty: Vec<usize>,
    /// Connections that may hold subscriptions. Entries of closed or unsubscribed
    /// connections are skipped, and purged when `subscribers_stale`.
    pub subscribers: Vec<ConnId>,
    /// Some entry of `subscribers` no longer subscribes.
    pub subscribers_stale: bool,
    /// Connections with a subscription still replaying history.
    pub replaying: Vec<ConnId>,
    /// Connections that hit the read budget and have more to read.
    pub pending_reads: Vec<ConnId>,
}

impl Conns {
    /// Open connections.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// None open.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The id the next connection will get.
    pub fn next_id(&self) -> ConnId {
        ConnId {
            key: self.slab.vacant_key(),
            generation: self.next_generation,
        }
    }

    /// Adds a connection made with [`next_id`](Conns::next_id)'s generation.
    pub fn insert(&mut self, conn: Conn) -> ConnId {
        let id = ConnId {
            key: self.slab.insert(conn),
            generation: self.next_generation,
        };
        self.next_generation = self.next_generation.wrapping_add(1);
        id
    }

    /// The connection in slot `key`, whoever occupies it.
    pub fn get(&self, key: usize) -> Option<&Conn> {
        self.slab.get(key)
    }

    /// The connection in slot `key`, whoever occupies it.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slab.get_mut(key)
    }

    /// The connection `id` names, if it is still open.
    pub fn get_live(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slab
            .get_mut(id.key)
            .filter(|c| c.generation == id.generation)
    }

    /// The connection `id` names, if it is still open, to read.
    pub fn live(&self, id: ConnId) -> Option<&Conn> {
        self.slab
            .get(id.key)
            .filter(|c| c.generation == id.generation)
    }

    /// Is `id` still open?
    pub fn is_live(&self, id: ConnId) -> bool {
        self.live(id).is_some()
    }

    /// The id of the connection in slot `key`.
    pub fn id(&self, key: usize) -> Option<ConnId> {
        self.slab.get(key).map(|c| ConnId {
            key,
            generation: c.generation,
        })
    }

    /// Takes a connection out.
    pub fn remove(&mut self, key: usize) -> Option<Conn> {
        self.slab.try_remove(key)
    }

    /// Every open connection.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slab.iter()
    }

    /// Every open connection, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Conn)> {
        self.slab.iter_mut()
    }

    /// Lists the connection for this turn's flush.
    pub fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Calls `f` on every live subscriber; one `f` wrote to is listed for the flush.
    pub fn each_subscriber(&mut self, mut f: impl FnMut(&mut Conn) -> bool) {
        for id in &self.subscribers {
            let Some(conn) = self.slab.get_mut(id.key) else {
                continue;
            };
            if conn.generation == id.generation && f(conn) && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id.key);
            }
        }
    }

    /// Walks the replaying connections: `f` says whether it wrote and whether the
    /// connection stays listed; gone ones leave the list.
    pub fn retain_replaying(&mut self, mut f: impl FnMut(ConnId, &mut Conn) -> Replayed) {
        let slab = &mut self.slab;
        let dirty = &mut self.dirty;
        self.replaying.retain(|&id| {
            let Some(conn) = slab
                .get_mut(id.key)
                .filter(|c| c.generation == id.generation)
            else {
                return false;
            };
            let step = f(id, conn);
            if step.wrote && !conn.dirty {
                conn.dirty = true;
                dirty.push(id.key);
            }
            step.keep
        });
    }

    /// Drops the subscriber entries of connections that closed or hold no subscription.
    pub fn purge_subscribers(&mut self) {
        if !self.subscribers_stale {
            return;
        }
        self.subscribers_stale = false;
        let slab = &mut self.slab;
        self.subscribers.retain(|id| match slab.get_mut(id.key) {
            Some(c) if c.generation == id.generation => {
                c.listed = c.has_subscriptions();
                c.listed
            }
            _ => false,
        });
    }
}

/// What one replay step did to a connection.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    /// It appended bytes: list it for the flush.
    pub wrote: bool,
    /// It is still replaying: keep it listed.
    pub keep: bool,
}
