//! Where a soak client stands on its results across connections: the `seq` chain it
//! follows and the epoch of the server's run, and what a `subscribed` reply does to them.
//! A resume must go on exactly where the chain stands; a fresh subscribe starts a chain.

use serde_json::Value;

use crate::seq::Seq;

/// Where a client stands on its results: the chain it follows and its run's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub seq: Seq,
    pub epoch: String,
}

/// The fields of a `subscribed` reply the driver checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    pub epoch: String,
    pub seq: u64,
    pub recovered: bool,
    pub replayed: u64,
}

impl Subscribed {
    pub(super) fn from_data(data: &Value) -> Option<Subscribed> {
        Some(Subscribed {
            epoch: data.get("epoch")?.as_str()?.to_string(),
            seq: data.get("seq")?.as_u64()?,
            recovered: data.get("recovered")?.as_bool()?,
            replayed: data.get("replayed")?.as_u64()?,
        })
    }
}

/// The chain after a `subscribed` reply, and whether a resume recovered. A fresh
/// subscribe starts a chain at the reply's `seq`: results after the reply are the ones
/// published after it. A resume goes on from the client's last `seq` when the server
/// says it recovered and the epoch is the same; otherwise the next result starts anew.
pub fn after_subscribed(chain: Option<Chain>, resumed: bool, reply: &Subscribed) -> (Chain, bool) {
    match chain {
        Some(c) if resumed => {
            if reply.recovered && reply.epoch == c.epoch {
                (c, true)
            } else {
                let fresh = Chain {
                    seq: Seq::default(),
                    epoch: reply.epoch.clone(),
                };
                (fresh, false)
            }
        }
        _ => (
            Chain {
                seq: Seq::after(reply.seq),
                epoch: reply.epoch.clone(),
            },
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::Outcome;

    fn reply(epoch: &str, seq: u64, recovered: bool) -> Subscribed {
        Subscribed {
            epoch: epoch.into(),
            seq,
            recovered,
            replayed: 0,
        }
    }

    #[test]
    fn a_fresh_subscribe_starts_at_the_replys_seq() {
        let (chain, ok) = after_subscribed(None, false, &reply("e1", 500, true));
        assert!(ok);
        assert_eq!(chain.seq.last(), Some(500));
        // Results at or below the reply's seq would be duplicates; 501 is next.
        let mut seq = chain.seq;
        assert_eq!(seq.observe(500), Outcome::Duplicate);
        assert_eq!(seq.observe(501), Outcome::InOrder);
        // An unsubscribe forgets the chain, so a later fresh subscribe starts again,
        // whatever came before.
        let old = Chain {
            seq: Seq::after(10),
            epoch: "e1".into(),
        };
        let (chain, ok) = after_subscribed(Some(old), false, &reply("e1", 900, true));
        assert!(ok);
        assert_eq!(chain.seq.last(), Some(900));
    }

    #[test]
    fn a_resume_goes_on_from_the_last_seq_seen() {
        let old = Chain {
            seq: Seq::after(1234),
            epoch: "e1".into(),
        };
        // The server's newest seq is far ahead; the replay starts at 1235.
        let (chain, ok) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, true));
        assert!(ok);
        let mut seq = chain.seq;
        assert_eq!(seq.observe(1235), Outcome::InOrder);
        // A replay that starts one late is a loss; one early, a duplicate.
        let (chain, _) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, true));
        let mut seq = chain.seq;
        assert_eq!(seq.observe(1236), Outcome::Gap(1));
        let (chain, _) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, true));
        let mut seq = chain.seq;
        assert_eq!(seq.observe(1234), Outcome::Duplicate);
        // Not recovered, or another run: counted, and the next result starts anew.
        let (chain, ok) = after_subscribed(Some(old.clone()), true, &reply("e1", 2000, false));
        assert!(!ok);
        assert_eq!(chain.seq.last(), None);
        let (chain, ok) = after_subscribed(Some(old), true, &reply("e2", 5, true));
        assert!(!ok);
        assert_eq!(chain.epoch, "e2");
    }
}
