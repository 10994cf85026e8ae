//! Who asked the producer for something (an ad-hoc scan, an acknowledgment), as this
//! edge knows it. It crosses the bus as an opaque [`Tag`] and comes back with the answer;
//! only the edge that made it reads it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::conns::ConnId;
use crate::bus::Tag;

/// The asking edge, connection and request `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requester {
    /// The edge that asked: only it answers.
    pub edge: usize,
    /// The asking connection; `None` when nobody waits (`POST /scan`).
    pub conn: Option<ConnId>,
    /// The request's `id`.
    pub id: Option<Value>,
}

impl Requester {
    /// The tag that carries it.
    pub fn tag(&self) -> Tag {
        // Plain numbers and a JSON id always serialise.
        Tag(serde_json::to_vec(self)
            .unwrap_or_default()
            .into_boxed_slice())
    }

    /// The requester in `tag`, when edge `edge` made it.
    pub fn read(tag: &Tag, edge: usize) -> Option<Requester> {
        let requester: Requester = serde_json::from_slice(&tag.0).ok()?;
        (requester.edge == edge).then_some(requester)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_comes_back_to_the_edge_that_made_it() {
        let r = Requester {
            edge: 2,
            conn: Some(ConnId {
                key: 7,
                generation: 9,
            }),
            id: Some(Value::from("r1")),
        };
        let tag = r.tag();
        assert_eq!(Requester::read(&tag, 2), Some(r));
        assert_eq!(Requester::read(&tag, 1), None);
        assert_eq!(Requester::read(&Tag(Box::new(*b"junk")), 2), None);
    }
}
